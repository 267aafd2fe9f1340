"""The built-in default CLIP: ``geolens-tiny`` trained contrastively on the Shapes world.

Uses open_clip's own model class (from engine/model_configs/geolens-tiny.json) and open_clip's
``ClipLoss``. Weights are saved as safetensors with their config beside them and load back
through ``engine.encoders`` exactly like any user's local weights.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from engine import ENGINE_VERSION, store
from engine.config import Config, atomic_write_text, check_positive
from engine.datasets.shapes import SHARED, ShapesConfig, ShapesWorld, prompts_for
from engine.device import pick_device, seed_everything
from engine.encoders import DEFAULT_ARCH, Encoder, ModelSpec

MEAN = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)


@dataclasses.dataclass
class TrainConfig(Config):
    arch: str = DEFAULT_ARCH
    """open_clip architecture (a small custom config; see engine/model_configs)"""
    n_train: int = 16000
    """training pairs rendered from the Shapes world (seed = ``seed``)"""
    steps: int = 1500
    """optimiser steps"""
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 100
    seed: int = 0
    n_eval: int = 1000
    """held-out pairs (world seed ``seed + 1000``) for zero-shot accuracy"""

    def validate(self) -> None:
        for name in ("n_train", "steps", "batch_size", "n_eval"):
            check_positive(name, getattr(self, name))
        check_positive("lr", self.lr)


def weights_path(cfg: TrainConfig) -> Path:
    return store.cache_root() / "models" / f"{cfg.arch}-{cfg.key()}.safetensors"


def pixels(images: list) -> torch.Tensor:
    """PIL images (already at the model's size) -> (B, 3, H, W) normalised like open_clip's preprocess."""
    x = torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in images])).permute(0, 3, 1, 2)
    return (x.float() / 255.0 - MEAN) / STD


def render_world(cfg: ShapesConfig) -> tuple[torch.Tensor, list[str], list[dict]]:
    world = ShapesWorld(cfg)
    items = [world[i] for i in range(len(world))]
    return pixels([it[0] for it in items]), [it[1] for it in items], [it[2] for it in items]


def zero_shot(encoder: Encoder, n: int = 1000, seed: int = 1000, batch: int = 500) -> dict[str, float]:
    """Zero-shot accuracy per shared factor on ``n`` held-out pairs.

    Class direction of a value = mean embedding of prompts that state it (``prompts_for``).
    """
    x, _, factors = render_world(ShapesConfig(n=n, seed=seed, image_size=64))
    img = np.concatenate([encoder.encode_images(x[i:i + batch]) for i in range(0, n, batch)])
    acc = {}
    for factor, values in SHARED.items():
        heads = np.stack([encoder.encode_texts(prompts_for(factor, v)).mean(0) for v in values])
        pred = np.argmax(img @ heads.T, axis=1)
        truth = np.array([values.index(f[factor]) for f in factors])
        acc[factor] = float((pred == truth).mean())
    return acc


def train(cfg: TrainConfig, device: str | None = None, progress=None) -> Path:
    """Train the default model; returns the safetensors path. ``progress(step, total)`` is optional."""
    dev = pick_device(device)
    seed_everything(cfg.seed)
    t0 = time.time()
    x, captions, _ = render_world(ShapesConfig(n=cfg.n_train, seed=cfg.seed, image_size=64))
    x = x.to(dev)
    tokenizer = open_clip.get_tokenizer(cfg.arch)
    tokens = tokenizer(captions).to(dev)
    model = open_clip.create_model(cfg.arch).to(dev).train()
    loss_fn = open_clip.ClipLoss()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    gen = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(range(cfg.steps), desc="train-default", unit="step", disable=progress is not None)
    for step in bar:
        idx = torch.randint(0, cfg.n_train, (cfg.batch_size,), generator=gen).to(dev)
        img_f, txt_f, scale = model(x[idx], tokens[idx])
        loss = loss_fn(img_f, txt_f, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if progress is not None:
            progress(step + 1, cfg.steps)
    train_s = time.time() - t0
    path = weights_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)
    acc = zero_shot(Encoder(ModelSpec(cfg.arch, str(path)), device=device), n=cfg.n_eval, seed=cfg.seed + 1000)
    meta = {"config": cfg.to_dict(), "arch": cfg.arch, "train_seconds": round(train_s, 1), "device": str(dev),
            "zero_shot_accuracy": acc, "engine_version": ENGINE_VERSION}
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2))
    return path


def default_spec(cfg: TrainConfig | None = None, device: str | None = None, progress=None) -> ModelSpec:
    """The default model's spec, training it first if its weights are not on disk yet."""
    cfg = cfg or TrainConfig()
    path = weights_path(cfg)
    if not path.exists():
        train(cfg, device=device, progress=progress)
    return ModelSpec(cfg.arch, str(path))
