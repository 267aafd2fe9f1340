"""The built-in default CLIP: ``geolens-tiny`` trained contrastively on the Shapes world.

Uses open_clip's own model class (from engine/model_configs/geolens-tiny.json) and open_clip's
``ClipLoss``. Weights are saved as safetensors with their config beside them and load back
through ``engine.encoders`` exactly like any user's local weights.

Architecture (engine/model_configs/geolens-tiny.json): open_clip's ``ModifiedResNet`` image tower
(one bottleneck per stage, width 16, attention pooling) and a 2-layer text transformer, d = 64. The
earlier ViT tower (patch 16) could not tell small shapes apart (zero-shot shape 0.71; 0.48 on small
shapes); the ResNet reaches 0.98 in 600 steps. ``TrainConfig.key`` covers this file's content.

Recipes (``RECIPES``, the choices of ``geolens train-default --recipe``):

- ``gap`` (the default): softmax temperature fixed at τ = 1/200 (logit scale 200), 600 steps. Liang
  et al. (2022) show the modality gap of the initialisation persists under a fixed low temperature;
  at τ = 1/100 this model's gap fell to DiM 0.48 by the time shape was learned, at 1/200 it keeps
  0.65. The model keeps CLIP's geometry: a modality gap and narrow modality cones.
- ``learnable-temp``: the earlier recipe, τ learned from 0.07 (scale clamped at 100), 1500 steps.
  On the Shapes world it closes the gap (issue 18 measured DiM 0.107, cones 0.005 / 0.015, pair
  cosine 0.94, with the ViT tower), which the Modality gap page can compare.

Training checkpoints (weights + optimiser + scheduler + sampler state, safetensors / weights-only
torch files) every ``checkpoint_every`` steps beside the final weights and resumes from there.
After training, ``geometry`` measures the gap on held-out pairs with ``engine.gap.metrics``; the
numbers go into the weights' JSON meta (and into the asset manifest when published).
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors.torch import load_file, save_file

from engine import ENGINE_VERSION, store
from engine.config import Config, atomic_write_text, check_positive, stable_hash
from engine.core.progress import ProgressFn, Tracker
from engine.core.registry import Registry
from engine.datasets.shapes import SHARED, ShapesConfig, ShapesWorld, prompts_for
from engine.device import pick_device, seed_everything
from engine.encoders import DEFAULT_ARCH, Encoder, ModelSpec

MEAN = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
CHECKPOINT_EVERY = 100
"""steps between checkpoints (not part of the key: it changes nothing the model learns)"""
ASSET = "geolens-tiny"
"""name of the shipped default model in ``assets/manifest.json``"""


@dataclasses.dataclass
class TrainConfig(Config):
    arch: str = DEFAULT_ARCH
    """open_clip architecture (a small custom config; see engine/model_configs)"""
    n_train: int = 16000
    """training pairs rendered from the Shapes world (seed = ``seed``)"""
    steps: int = 600
    """optimiser steps (cosine schedule over them)"""
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 100
    seed: int = 0
    n_eval: int = 1000
    """held-out pairs (world seed ``seed + 1000``) for zero-shot accuracy and the gap measures"""
    temperature: float | None = 0.005
    """softmax temperature τ of the contrastive loss, fixed (logit scale 1/τ); None = learned from
    0.07 with the scale clamped at 100 (open_clip's default)"""

    def key(self) -> str:
        """Covers the architecture's open_clip config by content, not only its name."""
        return stable_hash({"type": type(self).__name__, **self.to_dict(),
                            "arch_config": open_clip.get_model_config(self.arch)})

    def validate(self) -> None:
        for name in ("n_train", "steps", "batch_size", "n_eval"):
            check_positive(name, getattr(self, name))
        check_positive("lr", self.lr)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_positive("warmup", self.warmup, allow_zero=True)
        if self.temperature is not None and not 0.0 < self.temperature <= 1.0:
            raise ValueError(f"temperature must be in (0, 1] (e.g. 0.01 = logit scale 100) or None for a "
                             f"learned one, got {self.temperature}")


RECIPES: Registry[TrainConfig] = Registry("default-model recipe")
RECIPES.add("gap", TrainConfig())
RECIPES.add("learnable-temp", TrainConfig(temperature=None, steps=1500))  # the recipe before issue 18, unchanged
DEFAULT_RECIPE = "gap"


def recipe(name: str = DEFAULT_RECIPE, **overrides) -> TrainConfig:
    """The named recipe's config, with ``overrides`` (e.g. ``steps=600``) applied."""
    return dataclasses.replace(RECIPES.get(name), **overrides)


def weights_path(cfg: TrainConfig) -> Path:
    return store.cache_root() / "models" / f"{cfg.arch}-{cfg.key()}.safetensors"


def checkpoint_dir(cfg: TrainConfig) -> Path:
    return weights_path(cfg).with_suffix(".ckpt")


def pixels(images: list) -> torch.Tensor:
    """PIL images (already at the model's size) -> (B, 3, H, W) normalised like open_clip's preprocess."""
    x = torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in images])).permute(0, 3, 1, 2)
    return (x.float() / 255.0 - MEAN) / STD


def render_world(cfg: ShapesConfig) -> tuple[torch.Tensor, list[str], list[dict]]:
    world = ShapesWorld(cfg)
    items = [world[i] for i in range(len(world))]
    return pixels([it[0] for it in items]), [it[1] for it in items], [it[2] for it in items]


def _encode(encoder: Encoder, x: torch.Tensor, captions: list[str] | None, batch: int = 500):
    img = np.concatenate([encoder.encode_images(x[i:i + batch]) for i in range(0, len(x), batch)])
    if captions is None:
        return img, None
    txt = np.concatenate([encoder.encode_texts(captions[i:i + batch]) for i in range(0, len(captions), batch)])
    return img, txt


def _zero_shot(encoder: Encoder, img: np.ndarray, factors: list[dict]) -> dict[str, float]:
    acc = {}
    for factor, values in SHARED.items():
        heads = np.stack([encoder.encode_texts(prompts_for(factor, v)).mean(0) for v in values])
        pred = np.argmax(img @ heads.T, axis=1)
        truth = np.array([values.index(f[factor]) for f in factors])
        acc[factor] = float((pred == truth).mean())
    return acc


def zero_shot(encoder: Encoder, n: int = 1000, seed: int = 1000, batch: int = 500) -> dict[str, float]:
    """Zero-shot accuracy per shared factor on ``n`` held-out pairs.

    Class direction of a value = mean embedding of prompts that state it (``prompts_for``).
    """
    x, _, factors = render_world(ShapesConfig(n=n, seed=seed, image_size=64))
    img, _ = _encode(encoder, x, None, batch)
    return _zero_shot(encoder, img, factors)


def gap_measures(img: np.ndarray, txt: np.ndarray) -> dict[str, float]:
    """DiM, the two cones, the pair cosine and whole-gallery recall@1 (engine.gap.metrics)."""
    from engine.gap.metrics import centroid_distance, mean_intra_cosine, mean_pair_cosine, recall_full

    rec = recall_full(img, txt, ks=(1,))
    return {"dim": centroid_distance(img, txt), "cone_image": mean_intra_cosine(img),
            "cone_text": mean_intra_cosine(txt), "pair_cosine": mean_pair_cosine(img, txt),
            "r1_image_to_text": rec["image_to_text"]["R@1"], "r1_text_to_image": rec["text_to_image"]["R@1"]}


def geometry(encoder: Encoder, n: int = 1000, seed: int = 1000) -> dict:
    """Gap measures and zero-shot accuracy of ``encoder`` on ``n`` held-out Shapes pairs (world ``seed``)."""
    x, captions, factors = render_world(ShapesConfig(n=n, seed=seed, image_size=64))
    img, txt = _encode(encoder, x, captions)
    return {**gap_measures(img, txt), "zero_shot_accuracy": _zero_shot(encoder, img, factors), "n_pairs": n}


def _as_progress_fn(progress) -> ProgressFn | None:
    """Accept a ``ProgressFn`` (one ``Progress`` argument) or an older ``progress(step, total)``."""
    if progress is None:
        return None
    try:
        n_args = len([p for p in inspect.signature(progress).parameters.values()
                      if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
    except (TypeError, ValueError):
        n_args = 1
    if n_args == 2:
        return lambda p: progress(int(p.done), int(p.total))
    return progress


class _Model:
    """A model, its optimiser and its schedule, as ``train`` builds them for ``cfg``."""

    def __init__(self, cfg: TrainConfig, dev: torch.device):
        self.model = open_clip.create_model(cfg.arch).to(dev).train()
        scale = self.model.logit_scale
        if cfg.temperature is not None:
            with torch.no_grad():
                scale.fill_(math.log(1.0 / cfg.temperature))
            scale.requires_grad_(False)
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        decay = [p for n, p in params if p.ndim >= 2 and "embedding" not in n]
        rest = [p for n, p in params if not (p.ndim >= 2 and "embedding" not in n)]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)
        warm = max(cfg.warmup, 1)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))


def _save_checkpoint(folder: Path, step: int, m: _Model, gen: torch.Generator, history: list) -> None:
    """Write ``folder`` atomically: a temp folder renamed over the previous checkpoint."""
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in m.model.state_dict().items()}, str(tmp / "model.safetensors"))
    torch.save({"optimizer": m.opt.state_dict(), "scheduler": m.sched.state_dict(), "generator": gen.get_state()},
               tmp / "state.pt")
    atomic_write_text(tmp / "step.json", json.dumps({"step": step, "history": history}))
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(folder: Path, m: _Model, gen: torch.Generator, dev) -> tuple[int, list]:
    if not (folder / "step.json").exists():
        return 0, []
    info = json.loads((folder / "step.json").read_text())
    m.model.load_state_dict({k: v.to(dev) for k, v in load_file(str(folder / "model.safetensors")).items()})
    state = torch.load(folder / "state.pt", weights_only=True, map_location="cpu")
    m.opt.load_state_dict(state["optimizer"])
    m.sched.load_state_dict(state["scheduler"])
    gen.set_state(state["generator"])
    return int(info["step"]), list(info.get("history", []))


def _snapshot_geometry(model, cfg: TrainConfig, held_out, tokenizer, dev) -> dict:
    """Gap measures of the model being trained, on the held-out pairs (for the training history)."""
    x, captions = held_out
    model.eval()
    with torch.no_grad():
        img = torch.cat([model.encode_image(x[i:i + 500].to(dev)) for i in range(0, len(x), 500)])
        txt = torch.cat([model.encode_text(tokenizer(captions[i:i + 500]).to(dev)) for i in range(0, len(x), 500)])
    model.train()
    img = torch.nn.functional.normalize(img.float(), dim=-1).cpu().numpy()
    txt = torch.nn.functional.normalize(txt.float(), dim=-1).cpu().numpy()
    return {k: round(v, 4) for k, v in gap_measures(img, txt).items()}


def train(cfg: TrainConfig, device: str | None = None, progress=None,
          checkpoint_every: int = CHECKPOINT_EVERY, log=print) -> Path:
    """Train the default model; returns the safetensors path (its JSON meta lies beside it).

    Resumes from the checkpoint of an interrupted run of the same config. ``progress`` is a
    ``ProgressFn`` (or an older ``progress(step, total)``); without one a tqdm bar shows progress.
    """
    check_positive("checkpoint_every", checkpoint_every)
    dev = pick_device(device)
    seed_everything(cfg.seed)
    t0 = time.time()
    x, captions, _ = render_world(ShapesConfig(n=cfg.n_train, seed=cfg.seed, image_size=64))
    x = x.to(dev)
    tokenizer = open_clip.get_tokenizer(cfg.arch)
    tokens = tokenizer(captions).to(dev)
    hx, hcap, _ = render_world(ShapesConfig(n=min(cfg.n_eval, 500), seed=cfg.seed + 1000, image_size=64))
    m = _Model(cfg, dev)
    loss_fn = open_clip.ClipLoss()
    gen = torch.Generator().manual_seed(cfg.seed)
    ckpt = checkpoint_dir(cfg)
    start, history = _load_checkpoint(ckpt, m, gen, dev)
    prior_s = history[-1]["seconds"] if history else 0.0
    if start:
        log(f"resuming at step {start} of {cfg.steps} ({ckpt})")
    tracker = Tracker(cfg.steps, unit="step", stage="train-default", sink=_as_progress_fn(progress), start=start)
    with tracker:
        for step in range(start, cfg.steps):
            idx = torch.randint(0, cfg.n_train, (cfg.batch_size,), generator=gen).to(dev)
            img_f, txt_f, scale = m.model(x[idx], tokens[idx])
            loss = loss_fn(img_f, txt_f, scale)
            m.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.model.parameters(), 1.0)
            m.opt.step()
            m.sched.step()
            if cfg.temperature is None:
                with torch.no_grad():
                    m.model.logit_scale.clamp_(0, math.log(100))
            done = step + 1
            tracker.update(done)
            if done % checkpoint_every == 0 or done == cfg.steps:
                snap = _snapshot_geometry(m.model, cfg, (hx, hcap), tokenizer, dev)
                history.append({"step": done, "loss": round(float(loss.item()), 4),
                                "logit_scale": round(float(m.model.logit_scale.exp().item()), 3),
                                "seconds": round(prior_s + time.time() - t0, 1), **snap})
                _save_checkpoint(ckpt, done, m, gen, history)
    train_s = prior_s + time.time() - t0
    path = weights_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    save_file({k: v.detach().cpu().contiguous() for k, v in m.model.state_dict().items()}, str(tmp))
    tmp.replace(path)
    geo = geometry(Encoder(ModelSpec(cfg.arch, str(path)), device=device), n=cfg.n_eval, seed=cfg.seed + 1000)
    meta = {"config": cfg.to_dict(), "arch": cfg.arch, "train_seconds": round(train_s, 1), "device": str(dev),
            "zero_shot_accuracy": geo.pop("zero_shot_accuracy"), "geometry": geo,
            "logit_scale": float(m.model.logit_scale.exp().item()), "history": history,
            "engine_version": ENGINE_VERSION}
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2))
    shutil.rmtree(ckpt, ignore_errors=True)
    return path


def asset_name(cfg: TrainConfig) -> str:
    """The asset a recipe ships as: ``geolens-tiny`` for the default recipe, else ``geolens-tiny-<recipe>``."""
    for name, rc in RECIPES.items():
        if rc == cfg:
            return ASSET if name == DEFAULT_RECIPE else f"{ASSET}-{name}"
    return f"{ASSET}-{cfg.key()}"


def asset_files(cfg: TrainConfig) -> dict[str, Path]:
    """Asset file name -> where the cache keeps it: the weights and their JSON meta."""
    path, name = weights_path(cfg), asset_name(cfg)
    return {f"{name}.safetensors": path, f"{name}.json": path.with_suffix(".json")}


def default_spec(cfg: TrainConfig | None = None, device: str | None = None, progress=None) -> ModelSpec:
    """The default model's spec: weights already in the cache, else the shipped asset (when its
    config key and hashes match; copied into the cache's models folder), else trained here.
    Under ``geolens build-defaults --retrain`` (``GEOLENS_RETRAIN=1``) it trains instead of using
    the shipped weights."""
    from engine.shipped import needs_training

    cfg = cfg or RECIPES.get(DEFAULT_RECIPE)
    path = weights_path(cfg)
    if needs_training(asset_name(cfg), path, cfg.key(), asset_files(cfg)):
        train(cfg, device=device, progress=progress)
    return ModelSpec(cfg.arch, str(path))
