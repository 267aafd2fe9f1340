"""Device choice, seeding and mixed precision: the only place that decides where tensors live."""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

ENV_DEVICE = "GEOLENS_DEVICE"


def pick_device(requested: str | None = None) -> torch.device:
    """cuda, then mps, then cpu; ``requested`` (or $GEOLENS_DEVICE) overrides.

    An explicit request for an unavailable device fails with a message that names the fix.
    """
    requested = requested or os.environ.get(ENV_DEVICE) or "auto"
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} asked for but CUDA is not available; use --device cpu or auto")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"device {requested!r} asked for but MPS is not available; use --device cpu or auto")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; returns a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def autocast(device: torch.device):
    """bf16 autocast on CUDA, a no-op elsewhere (CPU results stay bit-reproducible)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def loader_kwargs(device: torch.device, num_workers: int | None = None) -> dict:
    """DataLoader settings: pinned memory and workers on CUDA, in-process on CPU by default."""
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1) if device.type == "cuda" else 0
    kw: dict = {"num_workers": num_workers, "pin_memory": device.type == "cuda"}
    if num_workers > 0:
        kw["persistent_workers"] = False
    return kw
