"""Training the one-shot generative models (VAE-NS, DA-GAN, CFG-DDPM): one loop, one store.

Every trained family works at ``SIDE``×``SIDE`` (32): drawings are area-downsampled from
50×50, and a model's Bernoulli means / pixel intensities in [0, 1] are upsampled back to
50×50 (bilinear) and **thresholded at 0.5** (``to_eval``) — the evaluation's own
binarisation; no ink-count or exemplar-based trick.

Training data (one-shot): a batch holds ``batch_classes`` training classes, each with one
context drawing (the exemplar) and ``targets_per_class`` other drawings of the same class.

A trained model is an artifact ``dvr-model/<key>`` (``engine.core.artifacts``), key =
hash(family name, its config, the data key, the family's VERSION). While training, the
artifact's partial folder holds ``checkpoint.pt`` (model + optimisers + RNG states, saved
every ``checkpoint_every`` steps and on interruption, read back with
``torch.load(weights_only=True)``), so a killed run resumes where it stopped and ends with
the same weights as an uninterrupted one. The finished artifact holds ``weights.safetensors``
and its manifest (config, loss curve, train seconds, ink mass of samples vs data).
Shipped weights (``engine.core.assets``, name ``dvr-<model name>``) are used instead of
training when their config key matches.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from engine.config import Config, check_positive
from engine.core import artifacts, assets
from engine.core.progress import ProgressFn, Tracker

SIDE = 32
EVAL_SIDE = 50
KIND = "dvr-model"
WEIGHTS = "weights.safetensors"
CHECKPOINT = "checkpoint.pt"


def to_model_res(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, 50, 50) ink in [0, 1] -> (B, 1, 32, 32) by area averaging."""
    return F.interpolate(x.float(), size=(SIDE, SIDE), mode="area")


def to_eval(p: torch.Tensor) -> torch.Tensor:
    """(..., 32, 32) intensities in [0, 1] -> (..., 50, 50) binary ink: bilinear upsampling, threshold 0.5."""
    lead = p.shape[:-2]
    up = F.interpolate(p.reshape(-1, 1, *p.shape[-2:]).float(), size=(EVAL_SIDE, EVAL_SIDE), mode="bilinear",
                       align_corners=False)
    return (up >= 0.5).float().reshape(*lead, EVAL_SIDE, EVAL_SIDE)


@dataclasses.dataclass
class TrainConfig(Config):
    """Fields every trained family shares (each family's config adds its own)."""

    steps: int = 4000
    batch_classes: int = 32
    targets_per_class: int = 2
    lr: float = 1e-3
    seed: int = 0
    checkpoint_every: int = 250

    def validate(self) -> None:
        for name in ("steps", "batch_classes", "targets_per_class", "checkpoint_every"):
            check_positive(name, getattr(self, name))
        check_positive("lr", self.lr)


class ClassSampler:
    """Draws (exemplar, targets) batches from (N, 50, 50) images with labels (N,)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, targets: int):
        self.data = to_model_res(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).unsqueeze(1))
        by_class = [torch.from_numpy(np.flatnonzero(y == c)) for c in np.unique(y)]
        self.by_class = [ix for ix in by_class if len(ix) >= 1 + targets]
        self.k = targets
        if not self.by_class:
            raise ValueError(f"training needs classes with >= {1 + targets} drawings (targets_per_class={targets})")

    def batch(self, n_classes: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """-> exemplars (B, 1, 32, 32), targets (B, K, 1, 32, 32), all of the exemplar's class."""
        cls = torch.randint(len(self.by_class), (n_classes,), generator=gen)
        picks = torch.stack([self.by_class[c][torch.randperm(len(self.by_class[c]), generator=gen)[:1 + self.k]]
                             for c in cls.tolist()])
        return self.data[picks[:, 0]], self.data[picks[:, 1:]]


class OneShotModel(nn.Module):
    """A trainable one-shot generator. Subclasses set ``Config``, ``VERSION``, ``SAMPLE_PARAMS``."""

    Config: ClassVar[type[TrainConfig]] = TrainConfig
    VERSION: ClassVar[str] = "1"
    SAMPLE_PARAMS: ClassVar[dict[str, float]] = {}
    """Sampling-time parameters (not part of training) and their defaults."""

    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt": torch.optim.Adam(self.parameters(), lr=self.cfg.lr)}

    def train_step(self, ex: torch.Tensor, tg: torch.Tensor, opts: dict, gen: torch.Generator) -> dict[str, float]:
        """One optimisation step on exemplars (B, 1, 32, 32) and targets (B, K, 1, 32, 32); returns losses."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, ex: torch.Tensor, n: int, gen: torch.Generator, **params: float) -> torch.Tensor:
        """Exemplars (C, 1, 32, 32) -> (C, n, 32, 32) intensities in [0, 1]."""
        raise NotImplementedError


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _save_weights(model: nn.Module, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)


def train(model: OneShotModel, x: np.ndarray, y: np.ndarray, folder: Path, progress: ProgressFn | None = None,
          stop_after: int | None = None) -> dict:
    """Train ``model`` on (N, 50, 50) images, checkpointing into ``folder``; resumes from its checkpoint.

    ``stop_after``: return after this many steps of this call (for tests of resuming).
    Returns the log: ``{"loss": [[step, {name: value}], ...], "train_seconds": s, "resumed_at": step}``.
    """
    cfg = model.cfg
    folder.mkdir(parents=True, exist_ok=True)
    sampler = ClassSampler(x, y, cfg.targets_per_class)
    opts = model.optimizers()
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    log: dict = {"loss": [], "train_seconds": 0.0, "resumed_at": 0}
    start = 0
    ckpt = folder / CHECKPOINT
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"])
        for name, opt in opts.items():
            opt.load_state_dict(state["opts"][name])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["rng"])
        log = json.loads(state["log"])
        start = log["resumed_at"] = int(state["step"])
    dev = next(model.parameters()).device

    def save(step: int) -> None:
        _atomic_torch_save({"model": model.state_dict(), "opts": {k: o.state_dict() for k, o in opts.items()},
                            "gen": gen.get_state(), "rng": torch.get_rng_state(), "step": step,
                            "log": json.dumps(log)}, ckpt)

    model.train()
    t0 = time.perf_counter()
    base_seconds = log["train_seconds"]
    step = start
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    track = Tracker(cfg.steps, "step", f"train {type(model).__name__}", sink=progress, start=start)
    try:
        while step < end:
            ex, tg = sampler.batch(cfg.batch_classes, gen)
            losses = model.train_step(ex.to(dev), tg.to(dev), opts, gen)
            step += 1
            if step % 50 == 0 or step == cfg.steps:
                log["loss"].append([step, {k: round(float(v), 5) for k, v in losses.items()}])
            log["train_seconds"] = base_seconds + time.perf_counter() - t0
            track.update(step)
            if step % cfg.checkpoint_every == 0 and step < end:
                save(step)
    except KeyboardInterrupt:
        save(step)
        raise
    finally:
        track.close()
    log["train_seconds"] = base_seconds + time.perf_counter() - t0
    save(step)
    model.eval()
    log["done"] = step >= cfg.steps
    return log


@torch.no_grad()
def ink_check(model: OneShotModel, x: np.ndarray, y: np.ndarray, n_classes: int = 16, n: int = 4, seed: int = 0,
              **params: float) -> dict:
    """Mean ink fraction of samples (at 50×50, after ``to_eval``) vs of the training drawings.

    A blank-drawing model has ``sample_ink`` near 0; a healthy one is near ``data_ink``.
    """
    gen = torch.Generator().manual_seed(seed)
    sampler = ClassSampler(x, y, 1)
    ex, _ = sampler.batch(n_classes, gen)
    dev = next(model.parameters()).device
    s = to_eval(model.sample(ex.to(dev), n, gen, **params).cpu())
    return {"sample_ink": float(s.mean()), "data_ink": float((x >= 0.5).mean()),
            "blank_fraction": float((s.flatten(2).sum(-1) < 5).float().mean())}


def model_key(name: str, cfg: TrainConfig, data_key: str, version: str) -> str:
    return artifacts.artifact_key(KIND, {"model": name, **cfg.to_dict()}, [data_key], version)


def asset_name(name: str) -> str:
    return f"dvr-{name}"


def load(model_cls: type[OneShotModel], folder: Path, cfg: TrainConfig, device: torch.device) -> OneShotModel:
    net = model_cls(cfg)
    net.load_state_dict(load_file(str(folder / WEIGHTS)))
    return net.to(device).eval()


def get_model(name: str, model_cls: type[OneShotModel], cfg: TrainConfig, x: np.ndarray, y: np.ndarray,
              data_key: str, device: torch.device, progress: ProgressFn | None = None, train_missing: bool = True,
              use_assets: bool = True, label: str | None = None) -> tuple[OneShotModel, artifacts.Artifact]:
    """The trained model ``name`` (a registry name) with ``cfg`` on this data: from the store, else
    the shipped asset ``dvr-<label>``, else trained (``label`` names this configuration, e.g. ``vae_ns-beta2``).

    Training resumes from the partial artifact's checkpoint of an interrupted run.
    """
    label = label or name
    config = {"model": name, **cfg.to_dict()}
    key = model_key(name, cfg, data_key, model_cls.VERSION)
    art = artifacts.find(KIND, key)
    if art is None and use_assets:
        art = artifacts.from_asset(KIND, config, [data_key], model_cls.VERSION, name=label)
    if art is None:
        if not train_missing:
            raise FileNotFoundError(f"model {name} ({key}) is not trained: run `geolens dvr-train {name}`")
        with artifacts.writing(KIND, config, [data_key], model_cls.VERSION, name=label, resume=True) as w:
            torch.manual_seed(cfg.seed)
            net = model_cls(cfg).to(device)
            log = train(net, x, y, w.path, progress)
            _save_weights(net, w.file(WEIGHTS))
            (w.path / CHECKPOINT).unlink()
            w.meta = {"train_seconds": round(log["train_seconds"], 4), "resumed_at": log["resumed_at"],
                      "loss": log["loss"], "ink": ink_check(net, x, y, **model_cls.SAMPLE_PARAMS),
                      "device": str(device), "threads": torch.get_num_threads()}
        art = artifacts.find(KIND, key)
    assert art is not None
    return load(model_cls, art.path, cfg, device), art


def publish(art: artifacts.Artifact, command: str, extra: dict | None = None) -> dict:
    """Ship a trained model's weights under ``assets/`` as ``dvr-<label>`` (``dvr-<label>-<key>.safetensors``)."""
    name = art.name
    meta = art.meta
    metrics = {k: meta[k] for k in ("train_seconds", "ink") if k in meta}
    if "loss" in meta and meta["loss"]:
        metrics["final_loss"] = meta["loss"][-1][1]
    metrics.update(extra or {})
    return assets.publish(asset_name(name), {f"dvr-{name}-{art.key[:8]}.safetensors": art.file(WEIGHTS)},
                          config=art.config, config_key=art.key, command=command, seed=int(art.config.get("seed", 0)),
                          train_seconds=float(meta.get("train_seconds", 0.0)), metrics=metrics)
