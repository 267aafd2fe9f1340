"""Benchmark: our Matching-Pursuit SAE vs the MpSAE of the `overcomplete` library (PyPI).

    .venv/bin/python bench/sae.py [--cache NAME] [--atoms 512] [--k 20] [--steps 300] [--batch-pairs 512]

Same embeddings (the cache's pairs, or synthetic pairs from engine.sae.synthetic when no cache is
given), same initial atoms, same loop (stacked [images; texts] batches, MSE, Adam lr 5e-4 one-cycle,
grad-clip 1.0, β = 0 since overcomplete has no alignment term), same thread count. Reports
training throughput (pairs/s) and final explained variance (vs the mean) of each, and the ratio.
Also times our full ``train_loop`` with the alignment term (β > 0) for reference.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / "cache" / "numba"))

import matplotlib.cm
import matplotlib.pyplot as plt
import numpy as np
import torch

# overcomplete 0.3 imports matplotlib.cm.get_cmap, removed in matplotlib 3.9: restore the alias.
if not hasattr(matplotlib.cm, "get_cmap"):
    matplotlib.cm.get_cmap = plt.get_cmap
from overcomplete.sae import MpSAE  # noqa: E402

from engine.sae.config import SAEConfig  # noqa: E402
from engine.sae.learners import MPSAE  # noqa: E402
from engine.sae.metrics import explained_variance  # noqa: E402
from engine.sae.train import epoch_order, train_loop  # noqa: E402


def load_pairs(cache: str | None, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    if cache:
        from engine.embcache import open_cache

        c = open_cache(cache)
        img, txt, _ = c.pairs()
        return img, txt, c.name
    from engine.sae.synthetic import SyntheticConfig, generate

    data = generate(SyntheticConfig(n_pairs=n))
    return data.img, data.txt, f"synthetic n={n} d=64"


class Runner:
    """The shared loop for one model; ``steps(n)`` runs the next n steps and returns their seconds."""

    def __init__(self, forward, params, img, txt, total, batch_pairs, lr=5e-4):
        self.forward, self.params, self.img, self.txt = forward, params, img, txt
        self.opt = torch.optim.Adam(params, lr=lr)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=lr, total_steps=total)
        self.batch_pairs, self.per_epoch, self.step = batch_pairs, max(1, img.shape[0] // batch_pairs), 0

    def steps(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            epoch, b = divmod(self.step, self.per_epoch)
            idx = epoch_order(self.img.shape[0], 0, epoch)[b * self.batch_pairs:(b + 1) * self.batch_pairs]
            x = torch.cat([self.img[idx], self.txt[idx]])
            loss = (x - self.forward(x)).pow(2).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            self.sched.step()
            self.step += 1
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default=None)
    ap.add_argument("--n", type=int, default=8000, help="synthetic pairs when no --cache")
    ap.add_argument("--atoms", type=int, default=512)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-pairs", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for both (default 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    img_np, txt_np, source = load_pairs(args.cache, args.n)
    img, txt = torch.tensor(img_np), torch.tensor(txt_np)
    d = img.shape[1]
    x_all = np.concatenate([img_np, txt_np])
    print(f"data: {source}, {len(img_np)} pairs, d={d}; atoms={args.atoms}, k={args.k}, steps={args.steps}, "
          f"batch={args.batch_pairs} pairs, threads={torch.get_num_threads()}, device=cpu")

    ours = MPSAE(d, args.atoms, args.k)
    ours.init_from_data(torch.cat([img, txt]), torch.Generator().manual_seed(0))
    init = ours.dictionary().detach().clone()
    theirs = MpSAE(d, args.atoms, k=args.k, dictionary_params={"initializer": init.clone().numpy()})
    theirs.train()

    models = {"geolens": (ours, lambda x: ours(x)[1]), "overcomplete": (theirs, lambda x: theirs(x)[2])}
    runners = {name: Runner(fwd, [p for p in m.parameters() if p.requires_grad], img, txt, args.steps, args.batch_pairs)
               for name, (m, fwd) in models.items()}
    secs = dict.fromkeys(models, 0.0)
    block = 10  # alternate blocks of steps so both see the same machine load (shared CPUs drift)
    for start in range(0, args.steps, block):
        for name, r in runners.items():
            secs[name] += r.steps(min(block, args.steps - start))
    res = {}
    for name, (model, fwd) in models.items():
        model.eval()
        with torch.no_grad():
            x_hat = torch.cat([fwd(torch.tensor(x_all[i:i + 4096])) for i in range(0, len(x_all), 4096)]).numpy()
        pairs = args.steps * min(args.batch_pairs, len(img_np))
        res[name] = {"pairs_per_s": pairs / secs[name], "ev": explained_variance(x_all, x_hat)}
        print(f"{name:>13}: {res[name]['pairs_per_s']:9.0f} pairs/s  EV={res[name]['ev']:.4f}  ({secs[name]:.1f} s)")
    ratio = res["geolens"]["pairs_per_s"] / res["overcomplete"]["pairs_per_s"]
    print(f"speed ratio geolens/overcomplete = {ratio:.2f}x; "
          f"EV difference geolens - overcomplete = {res['geolens']['ev'] - res['overcomplete']['ev']:+.4f}")

    cfg = SAEConfig(atoms=args.atoms, k=args.k, beta=4e-4, min_steps=args.steps, epochs=1, batch_pairs=args.batch_pairs)
    aligned = MPSAE(d, args.atoms, args.k)
    summary = train_loop(aligned, img, txt, cfg, device="cpu", show_bar=False)
    print(f"geolens train_loop with alignment (β=4e-4): {summary['pairs_per_s']:.0f} pairs/s over {summary['steps']} steps")


if __name__ == "__main__":
    main()
