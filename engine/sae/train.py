"""Aligned SAE training (Iso-Energy paper, METHODS.md §1), resumable from its last checkpoint.

Each batch stacks ``batch_pairs`` image–text pairs as X = [X_img; X_txt]; the loss is
MSE + β · L_align (``engine.sae.losses``); Adam with a one-cycle schedule, gradient clipping.
Batch order is a function of (seed, epoch) only, so a run resumed from a checkpoint takes
exactly the steps the uninterrupted run would have taken.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
from tqdm import tqdm

from engine.device import pick_device, seed_everything
from engine.sae.config import SAEConfig
from engine.sae.learners import DictionaryLearner
from engine.sae.losses import sae_loss

Progress = Callable[[int, int, dict], None]


@contextlib.contextmanager
def cpu_threads(device: torch.device, model: DictionaryLearner) -> Iterator[None]:
    """On CPU, small dictionaries train fastest on one thread (threads only add sync cost, and
    many times more on a shared machine); $GEOLENS_SAE_THREADS overrides. Restored afterwards."""
    before = torch.get_num_threads()
    small = model.atoms * model.d <= 1 << 20
    want = int(os.environ.get("GEOLENS_SAE_THREADS", "1" if small else before))
    if device.type == "cpu":
        torch.set_num_threads(max(1, want))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of the n pairs used in ``epoch``, (n,)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def _save_checkpoint(path: Path, model, opt, sched, step: int, history: list) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "step": torch.tensor(step), "history": torch.tensor(history, dtype=torch.float64)}, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, model, device) -> dict:
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    return state


def make_optim(model: DictionaryLearner, cfg: SAEConfig, total: int):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    return opt, sched


def train_loop(model: DictionaryLearner, img, txt, cfg: SAEConfig, checkpoint: Path | None = None,
               progress: Progress | None = None, device: str | torch.device | None = None,
               show_bar: bool = True) -> dict:
    """Train ``model`` on aligned pairs img (n, d), txt (n, d); returns a summary with the loss history.

    If ``checkpoint`` exists the run resumes from it; it is rewritten every
    ``cfg.checkpoint_every`` steps and left in place at the end (the caller removes it).
    """
    device = pick_device(device) if not isinstance(device, torch.device) else device
    with cpu_threads(device, model):
        return _train_loop(model, img, txt, cfg, checkpoint, progress, device, show_bar)


def _train_loop(model: DictionaryLearner, img, txt, cfg: SAEConfig, checkpoint: Path | None,
                progress: Progress | None, device: torch.device, show_bar: bool) -> dict:
    gen = seed_everything(cfg.seed)
    img = torch.as_tensor(img, dtype=torch.float32, device=device)
    txt = torch.as_tensor(txt, dtype=torch.float32, device=device)
    if img.shape != txt.shape:
        raise ValueError(f"images {tuple(img.shape)} and texts {tuple(txt.shape)} must be aligned pairs")
    n = img.shape[0]
    per_epoch, total = cfg.schedule(n)
    model.to(device).train()
    start, history = 0, []  # history rows: (step, loss, mse, align)
    if checkpoint is not None and Path(checkpoint).exists():
        state = _load_checkpoint(Path(checkpoint), model, device)
        model.to(device)
        opt, sched = make_optim(model, cfg, total)
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, history = int(state["step"]), state["history"].tolist()
    else:
        model.init_from_data(torch.cat([img, txt]), gen)
        opt, sched = make_optim(model, cfg, total)
    t0 = time.perf_counter()
    bar = tqdm(total=total, initial=start, desc=f"train-sae {cfg.arch}", unit="step", disable=not show_bar)
    parts: dict = {}
    for step in range(start, total):
        epoch, b = divmod(step, per_epoch)
        idx = epoch_order(n, cfg.seed, epoch)[b * cfg.batch_pairs:(b + 1) * cfg.batch_pairs].to(device)
        x = torch.cat([img[idx], txt[idx]])  # (2B, d): images then their captions
        z, x_hat = model(x)
        loss, parts = sae_loss(x, x_hat, z, cfg.beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(opt.param_groups[0]["params"], cfg.grad_clip)
        opt.step()
        sched.step()
        model.after_step()
        if step % 10 == 0 or step == total - 1:
            history.append((step, float(loss.detach()), parts["mse"], parts.get("align", 0.0)))
            bar.set_postfix(mse=f"{parts['mse']:.2e}", **({"align": f"{parts['align']:.3f}"} if "align" in parts else {}))
        bar.update(1)
        if progress is not None:
            progress(step + 1, total, parts)
        if checkpoint is not None and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total:
            _save_checkpoint(Path(checkpoint), model, opt, sched, step + 1, history)
    bar.close()
    seconds = time.perf_counter() - t0
    done = total - start
    model.eval()
    return {"steps": total, "steps_run": done, "steps_per_epoch": per_epoch, "seconds": round(seconds, 3),
            "pairs_per_s": round(done * min(cfg.batch_pairs, n) / seconds, 1) if seconds > 0 else None,
            "final": parts, "history": history, "device": str(device)}
