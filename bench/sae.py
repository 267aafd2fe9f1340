"""Benchmark: our Matching-Pursuit SAE vs the MpSAE of the `overcomplete` library (PyPI).

    .venv/bin/python bench/sae.py [--cache NAME] [--atoms 512] [--k 20] [--steps 300] [--batch-pairs 512]
    .venv/bin/python bench/sae.py --d 512 --atoms 4096 --k 32 --n 4096 --steps 8 --ev-rows 2048   # real scale
    .venv/bin/python bench/sae.py --tables-items 1000000   # an atom's top items at 1M items (p50 over 100 atoms)

Same embeddings (the cache's pairs, or synthetic pairs from engine.sae.synthetic when no cache is
given), same initial atoms, same loop (stacked [images; texts] batches, MSE, Adam lr 5e-4 one-cycle,
grad-clip 1.0, β = 0 since overcomplete has no alignment term), same thread count. Reports
training throughput (pairs/s) and final explained variance (vs the mean) of each, and the ratio.
Also times our full ``train_loop`` with the alignment term (β > 0) for reference.

Peak memory: the process's resident set is sampled every 5 ms while each model's steps run
(``peak_rss_gb``: the largest resident set seen, data and the other model included) and, per model,
the growth over the resident set at the start of its blocks (``peak_extra_gb``); on CUDA the
allocator's peak per model. ``--ev-rows`` measures explained variance on a fixed seeded sample of
rows (overcomplete's encoder is O(k·n·m·d), so encoding every row at d = 512 takes minutes).
"""
from __future__ import annotations

import argparse
import os
import resource
import threading
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

from engine.device import pick_device  # noqa: E402
from engine.sae.config import SAEConfig  # noqa: E402
from engine.sae.learners import MPSAE  # noqa: E402
from engine.sae.metrics import explained_variance  # noqa: E402
from engine.sae.train import epoch_order, train_loop  # noqa: E402


def load_pairs(cache: str | None, n: int, d: int = 64) -> tuple[np.ndarray, np.ndarray, str]:
    if cache:
        from engine.embcache import open_cache

        c = open_cache(cache)
        img, txt, _ = c.pairs()
        return img, txt, c.name
    from engine.sae.synthetic import SyntheticConfig, generate

    shared = 32 if d <= 64 else d // 2  # more concepts than the d = 64 toy at CLIP widths
    data = generate(SyntheticConfig(n_pairs=n, d=d, n_shared=shared))
    return data.img, data.txt, f"synthetic n={n} d={d} shared concepts={shared}"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class MemorySampler:
    """Samples the resident set every 5 ms; ``peak[name]`` is the largest seen while ``active == name``."""

    def __init__(self):
        self.active, self.peak, self.base = None, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.005):
            name = self.active
            if name is not None:
                self.peak[name] = max(self.peak.get(name, 0), _rss_bytes())

    def enter(self, name: str) -> None:
        self.base.setdefault(name, _rss_bytes())
        self.active = name

    def leave(self) -> None:
        self.active = None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Runner:
    """The shared loop for one model; ``steps(n)`` runs the next n steps and returns their seconds."""

    def __init__(self, forward, params, img, txt, total, batch_pairs, lr=5e-4):
        self.forward, self.params, self.img, self.txt = forward, params, img, txt
        self.device = img.device
        self.opt = torch.optim.Adam(params, lr=lr)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=lr, total_steps=total)
        self.batch_pairs, self.per_epoch, self.step = batch_pairs, max(1, img.shape[0] // batch_pairs), 0

    def steps(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            epoch, b = divmod(self.step, self.per_epoch)
            idx = epoch_order(self.img.shape[0], 0, epoch)[b * self.batch_pairs:(b + 1) * self.batch_pairs].to(self.device)
            x = torch.cat([self.img[idx], self.txt[idx]])
            loss = (x - self.forward(x)).pow(2).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            self.sched.step()
            self.step += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def compare(img: torch.Tensor, txt: torch.Tensor, x_ev: np.ndarray, atoms: int, k: int, steps: int,
            batch_pairs: int, log=None) -> dict:
    """Train our MP-SAE and overcomplete's MpSAE from the same atoms on the same batches (blocks of
    steps alternated); -> {"geolens": {...}, "overcomplete": {...}, "ratio": pairs/s ours / theirs},
    each with pairs_per_s, ev (explained variance on ``x_ev``), peak_rss_gb, peak_extra_gb, cuda_peak_gb."""
    log = log or (lambda msg: print(msg, flush=True))
    dev, d = img.device, img.shape[1]
    ours = MPSAE(d, atoms, k)
    ours.init_from_data(torch.cat([img, txt]).cpu(), torch.Generator().manual_seed(0))
    init = ours.dictionary().detach().clone()
    theirs = MpSAE(d, atoms, k=k, dictionary_params={"initializer": init.clone().numpy()}, device=str(dev))
    ours.to(dev)
    theirs.to(dev)
    theirs.train()

    models = {"geolens": (ours, lambda x: ours(x)[1]), "overcomplete": (theirs, lambda x: theirs(x)[2])}
    runners = {name: Runner(fwd, [p for p in m.parameters() if p.requires_grad], img, txt, steps, batch_pairs)
               for name, (m, fwd) in models.items()}
    secs = dict.fromkeys(models, 0.0)
    mem, gpu_peak = MemorySampler(), dict.fromkeys(models, 0)
    block = 10 if steps >= 20 else 1  # alternate blocks of steps so both see the same machine load (shared CPUs drift)
    for start in range(0, steps, block):
        for name, r in runners.items():
            mem.enter(name)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            secs[name] += r.steps(min(block, steps - start))
            if dev.type == "cuda":
                gpu_peak[name] = max(gpu_peak[name], torch.cuda.max_memory_allocated())
            mem.leave()
        log(f"  step {min(start + block, steps)}/{steps}: " + ", ".join(f"{n} {s:.1f} s" for n, s in secs.items()))
    mem.stop()
    res: dict = {}
    for name, (model, fwd) in models.items():
        model.eval()
        with torch.no_grad():
            x_hat = torch.cat([fwd(torch.tensor(x_ev[i:i + 1024], device=dev)).cpu()
                               for i in range(0, len(x_ev), 1024)]).numpy()
        pairs = steps * min(batch_pairs, img.shape[0])
        res[name] = {"pairs_per_s": pairs / secs[name], "ev": explained_variance(x_ev, x_hat),
                     "peak_rss_gb": mem.peak.get(name, 0) / 2**30,
                     "peak_extra_gb": (mem.peak.get(name, 0) - mem.base.get(name, 0)) / 2**30,
                     "cuda_peak_gb": gpu_peak[name] / 2**30}
        r = res[name]
        log(f"{name:>13}: {r['pairs_per_s']:9.1f} pairs/s  EV={r['ev']:.4f}  ({secs[name]:.1f} s)  "
            f"peak RSS {r['peak_rss_gb']:.2f} GB (+{r['peak_extra_gb']:.2f} GB over its start)"
            + (f", CUDA peak {r['cuda_peak_gb']:.2f} GB" if dev.type == "cuda" else ""))
    res["ratio"] = res["geolens"]["pairs_per_s"] / res["overcomplete"]["pairs_per_s"]
    return res


def tables_bench(items: int, d: int, atoms: int, k: int, repeats: int = 100) -> None:
    """Build the per-atom tables of an SAE over a synthetic cache of ``items`` items and time one
    atom's top 64 items: the memory-mapped arrays (``atom_top_items``) vs the DuckDB ``top_items``
    table queried as before (``WHERE atom = ? AND modality = ?``), p50 over ``repeats`` atoms."""
    import contextlib
    import tempfile

    from engine import store
    from engine.gap.synthetic import write_random_cache
    from engine.sae.pipeline import item_chunks
    from engine.sae.tables import atom_top_items, encode_tables, write_tables

    folder = Path(tempfile.mkdtemp(prefix="sae-tables-"))  # everything in a temp folder, removed at the end
    t0 = time.perf_counter()
    cache = write_random_cache(n=items // 2, d=d, folder=folder)
    print(f"cache: {cache.name} ({items // 2} pairs, d={d}) in {time.perf_counter() - t0:.1f} s", flush=True)
    model = MPSAE(d, atoms, k)
    with contextlib.closing(store.connect_ro(cache.path)) as con:  # init atoms from the first 64k rows
        x0 = store.fetch_array(con, "SELECT emb FROM embeddings WHERE id < 65536 ORDER BY id")
    model.init_from_data(torch.tensor(x0), torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    t = encode_tables(model, item_chunks(cache), device="cpu")
    t_enc = time.perf_counter() - t0
    write_tables(folder, t)
    t_write = time.perf_counter() - t0 - t_enc
    print(f"tables: encoded {len(t.item_ids)} items ({atoms} atoms, k={k}) in {t_enc:.1f} s, wrote in {t_write:.1f} s",
          flush=True)
    db = folder / "top_items.duckdb"
    with store.writing(db) as con:
        con.register("_df", t.top_items_frame())
        con.execute("CREATE TABLE top_items AS SELECT * FROM _df")
    rng = np.random.default_rng(0)
    picks = rng.choice(atoms, size=min(repeats, atoms), replace=False)
    ms = {"arrays (atom_top_items)": [], "duckdb top_items table": []}
    for a in picks:
        t0 = time.perf_counter()
        got = atom_top_items(folder, int(a), 64, "image")
        ms["arrays (atom_top_items)"].append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        ref = store.query_df(db, "SELECT rank, id, value FROM top_items WHERE atom = ? AND modality = ? AND rank < ? "
                             "ORDER BY rank", [int(a), "image", 64])
        ms["duckdb top_items table"].append((time.perf_counter() - t0) * 1e3)
        assert got["id"].tolist() == ref["id"].tolist()
    for name, v in ms.items():
        print(f"{name:>24}: p50 {np.median(v):.3f} ms, p95 {np.percentile(v, 95):.3f} ms over {len(v)} atoms", flush=True)
    print(f"p50 ratio duckdb/arrays = {np.median(ms['duckdb top_items table']) / np.median(ms['arrays (atom_top_items)']):.1f}x")
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default=None)
    ap.add_argument("--n", type=int, default=8000, help="synthetic pairs when no --cache")
    ap.add_argument("--d", type=int, default=64, help="synthetic embedding width when no --cache")
    ap.add_argument("--atoms", type=int, default=512)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-pairs", type=int, default=512)
    ap.add_argument("--ev-rows", type=int, default=0, help="explained variance on this many sampled rows (0: all)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for both (default 1)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--aligned-steps", type=int, default=None, help="steps of the β > 0 train_loop run (default --steps)")
    ap.add_argument("--tables-items", type=int, default=0, help="instead: time an atom's top items at this many items")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.tables_items:
        tables_bench(args.tables_items, args.d, args.atoms, min(args.k, 8))
        return
    dev = pick_device(args.device)
    img_np, txt_np, source = load_pairs(args.cache, args.n, args.d)
    img, txt = torch.tensor(img_np, device=dev), torch.tensor(txt_np, device=dev)
    d = img.shape[1]
    x_all = np.concatenate([img_np, txt_np])
    if args.ev_rows and args.ev_rows < len(x_all):
        x_all = x_all[np.sort(np.random.default_rng(0).choice(len(x_all), args.ev_rows, replace=False))]
    print(f"data: {source}, {len(img_np)} pairs, d={d}; atoms={args.atoms}, k={args.k}, steps={args.steps}, "
          f"batch={args.batch_pairs} pairs, threads={torch.get_num_threads()}, device={dev}; EV on {len(x_all)} rows",
          flush=True)

    res = compare(img, txt, x_all, args.atoms, args.k, args.steps, args.batch_pairs)
    ratio = res["ratio"]
    print(f"speed ratio geolens/overcomplete = {ratio:.2f}x; "
          f"EV difference geolens - overcomplete = {res['geolens']['ev'] - res['overcomplete']['ev']:+.4f}; "
          f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB", flush=True)

    steps = args.aligned_steps if args.aligned_steps is not None else args.steps
    if steps:
        cfg = SAEConfig(atoms=args.atoms, k=args.k, beta=4e-4, min_steps=steps, epochs=1, batch_pairs=args.batch_pairs)
        aligned = MPSAE(d, args.atoms, args.k)
        summary = train_loop(aligned, img, txt, cfg, device=dev, show_bar=False)
        print(f"geolens train_loop with alignment (β=4e-4): {summary['pairs_per_s']:.1f} pairs/s over {summary['steps']} steps")


if __name__ == "__main__":
    main()
