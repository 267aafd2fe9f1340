"""Aligned SAE training (Iso-Energy paper, docs/METHODS.md §1), resumable from its last checkpoint.

Each batch stacks ``batch_pairs`` image–text pairs as X = [X_img; X_txt]; the loss is
MSE + β · L_align (``engine.sae.losses``); Adam with a one-cycle schedule, gradient clipping.
Batches come from a ``PairSource`` (``engine.sae.stream``): arrays in memory, or a cache streamed
block by block with memory O(block). Batch order is a function of (seed, epoch, block, window)
only, the same for every source, so a run resumed from a checkpoint takes exactly the steps the
uninterrupted run would have taken, and streamed training equals in-memory training.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Iterator

import torch

from engine.core.progress import ProgressFn, Tracker
from engine.device import pick_device, seed_everything
from engine.sae.config import SAEConfig
from engine.sae.learners import DictionaryLearner
from engine.sae.losses import sae_loss
from engine.sae.stream import ArraySource, PairSource, epoch_batches, epoch_order, init_sample

__all__ = ["train_loop", "train_source", "epoch_order", "cpu_threads", "make_optim"]


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
               progress: ProgressFn | None = None, device: str | torch.device | None = None,
               show_bar: bool = True) -> dict:
    """Train ``model`` on aligned pairs img (n, d), txt (n, d) held in memory; see ``train_source``."""
    device = pick_device(device) if not isinstance(device, torch.device) else device
    return train_source(model, ArraySource(img, txt).to(device), cfg, checkpoint, progress, device, show_bar)


def train_source(model: DictionaryLearner, source: PairSource, cfg: SAEConfig, checkpoint: Path | None = None,
                 progress: ProgressFn | None = None, device: str | torch.device | None = None,
                 show_bar: bool = True, max_steps: int | None = None) -> dict:
    """Train ``model`` on the pairs of ``source``; returns a summary with the loss history.

    If ``checkpoint`` exists the run resumes from it; it is rewritten every
    ``cfg.checkpoint_every`` steps and left in place at the end (the caller removes it).
    ``progress`` receives ``engine.core.progress.Progress`` snapshots (else a tqdm bar unless
    ``show_bar`` is False). ``max_steps`` stops early (benchmarks time one epoch with it).
    """
    device = pick_device(device) if not isinstance(device, torch.device) else device
    with cpu_threads(device, model):
        return _train(model, source, cfg, checkpoint, progress, device, show_bar, max_steps)


def _train(model: DictionaryLearner, source: PairSource, cfg: SAEConfig, checkpoint: Path | None,
           progress: ProgressFn | None, device: torch.device, show_bar: bool, max_steps: int | None) -> dict:
    gen = seed_everything(cfg.seed)
    n = source.n
    per_epoch, total = cfg.schedule(n)
    stop = total if max_steps is None else min(total, max_steps)
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
        x0, rows = init_sample(source, gen)
        model.init_from_data(x0.to(device), gen)
        if hasattr(model, "anchor_rows"):  # archetypal: centroid anchors are rows of the sample -> rows of X
            model.anchor_rows = rows.to(model.anchor_rows.device)[model.anchor_rows]
        del x0
        opt, sched = make_optim(model, cfg, total)
    t0 = time.perf_counter()
    sink = progress if progress is not None else (None if show_bar else (lambda p: None))
    track = Tracker(total=stop, unit="step", stage=f"train-sae {cfg.arch}", sink=sink, start=start, min_interval=0)
    parts: dict = {}
    step = start
    try:
        for epoch in range(start // per_epoch, math.ceil(stop / per_epoch)):
            for b, rows in enumerate(epoch_batches(n, cfg.batch_pairs, cfg.seed, epoch, cfg.stream_block, cfg.stream_window)):
                if epoch * per_epoch + b < start:
                    continue  # resumed: already taken before the checkpoint (no data read)
                if step >= stop:
                    break
                img, txt = source.fetch(rows)
                x = torch.cat([img, txt]).to(device, non_blocking=True)  # (2B, d): images then their captions
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
                step += 1
                track.update(step)
                if checkpoint is not None and step % cfg.checkpoint_every == 0 and step < total:
                    _save_checkpoint(Path(checkpoint), model, opt, sched, step, history)
    finally:
        track.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    done = step - start
    model.eval()
    return {"steps": total, "steps_run": done, "steps_per_epoch": per_epoch, "seconds": round(seconds, 3),
            "pairs_per_s": round(done * min(cfg.batch_pairs, n) / seconds, 1) if seconds > 0 else None,
            "final": parts, "history": history, "device": str(device)}


def sae_epoch(data, cfg: SAEConfig, device: str | torch.device | None = None, show_bar: bool = False) -> float:
    """Seconds one training epoch takes (``cfg.schedule``'s steps per epoch, initialisation excluded).

    ``data``: an ``EmbCache`` (streamed block by block, as ``geolens train-sae`` trains), a
    ``PairSource``, or an (img (n, d), txt (n, d)) pair of arrays. A fresh ``cfg.arch`` learner of
    ``cfg.atoms`` atoms is trained from ``cfg.seed``; nothing is written. For benchmarks (bench/scale.py).
    """
    from engine.embcache import EmbCache
    from engine.sae.registry import make_learner
    from engine.sae.stream import CacheSource

    if isinstance(data, EmbCache):
        source = CacheSource(data, cfg.stream_block, cfg.stream_window)
    elif isinstance(data, (tuple, list)):
        source = ArraySource(*data)
    else:
        source = data
    per_epoch, _ = cfg.schedule(source.n)
    model = make_learner(cfg.arch, source.d, cfg.atoms, cfg.k, **cfg.learner_kwargs())
    return float(train_source(model, source, cfg, None, None, device, show_bar, max_steps=per_epoch)["seconds"])
