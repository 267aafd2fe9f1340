"""Fashion-MNIST: loading the real data and training the small CNN the concept page defaults to.

Data comes from Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), else
from torchvision's download into the cache (needs internet), else a clear error naming the fix.
The CNN's features end in a ReLU'd hidden layer and one linear layer follows, so f = h ∘ g
with g(x) ≥ 0 (B, 128) and h linear: the split CRAFT's importance needs to be exact.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.config import Config, check_positive, file_hash, stable_hash

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics
WEIGHTS_FILE = "fmnist-cnn-{key}.safetensors"

Progress = Callable[[int, int, str], None]  # (done, total, message)


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or not) as a numpy array (images: (n, 28, 28) uint8; labels: (n,))."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def data_dir() -> Path:
    """The folder holding the four IDX files: Debian's, else torchvision's download in the cache."""
    if all((DEBIAN_DIR / f).exists() for pair in FILES.values() for f in pair):
        return DEBIAN_DIR
    from engine import store

    raw = store.cache_root() / "datasets" / "FashionMNIST" / "raw"
    if not all((raw / f).exists() for pair in FILES.values() for f in pair):
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(raw.parent.parent), train=True, download=True)
            FashionMNIST(str(raw.parent.parent), train=False, download=True)
        except Exception as exc:  # no internet, no package: say how to fix it
            raise RuntimeError(
                f"Fashion-MNIST not found in {DEBIAN_DIR} and could not be downloaded ({exc}); "
                "install it with `apt-get install dataset-fashion-mnist` (or `make system-deps`)"
            ) from exc
    return raw


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28) uint8 and labels (n,) int64 of ``split`` ('train' or 'test')."""
    if split not in FILES:
        raise ValueError(f"split={split!r}; choose 'train' or 'test'")
    d = data_dir()
    images, labels = (_read_idx(d / f) for f in FILES[split])
    return images, labels.astype(np.int64)


def data_identity() -> dict:
    """Hashes of the test files: part of every cache key built on this data."""
    d = data_dir()
    return {"dataset": "fashion-mnist", **{f: file_hash(d / f) for f in FILES["test"]}}


def preprocess(images: np.ndarray) -> torch.Tensor:
    """(n, 28, 28) or (n, 28, 28, 1) uint8 → (n, 1, 28, 28) float, standardised."""
    x = torch.from_numpy(np.array(images, copy=True)).float().div(255.0)
    if x.ndim == 4:
        x = x[..., 0]
    return ((x - MEAN) / STD).unsqueeze(1)


class FmnistCNN(nn.Module):
    """conv-pool-conv-pool (BN, ReLU) → flatten → linear+ReLU = g (B, hidden) ≥ 0; h = ``fc``."""

    def __init__(self, width: int = 16, hidden: int = 128, n_classes: int = 10):
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]

        self.features = nn.Sequential(
            *block(1, w),                              # (B, w, 14, 14)
            *block(w, 2 * w),                          # (B, 2w, 7, 7)
            nn.Flatten(),                              # (B, 2w·49)
            nn.Linear(2 * w * 49, hidden), nn.ReLU(),  # (B, hidden), ≥ 0
        )
        self.fc = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))  # (B, 10)


@dataclasses.dataclass
class FmnistTrainConfig(Config):
    """How the Fashion-MNIST CNN is trained (every field is part of the weights' cache key)."""

    width: int = 16
    """Channels of the first conv block (then 2×)."""
    hidden: int = 128
    """Size of g's output: the activations concepts are extracted from."""
    epochs: int = 2
    """Passes over the training images."""
    n_train: int = 60000
    """Training images used (the first n of the official split); tests use fewer."""
    batch_size: int = 128
    lr: float = 3e-3
    """Peak learning rate of Adam's one-cycle schedule."""
    seed: int = 0

    def validate(self) -> None:
        for name in ("width", "hidden", "epochs", "n_train", "batch_size", "lr"):
            check_positive(name, getattr(self, name))
        if self.n_train > 60000:
            raise ValueError("n_train must be ≤ 60000 (the size of the training split)")


def weights_path(cfg: FmnistTrainConfig) -> Path:
    from engine import store

    key = stable_hash({"cfg": cfg.key(), "data": "fashion-mnist-train"})
    return store.cache_root() / "models" / WEIGHTS_FILE.format(key=key)


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on uint8 images."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            logits = model(preprocess(images[i:i + batch]))
            correct += int((logits.argmax(1).numpy() == labels[i:i + batch]).sum())
    return correct / max(1, len(images))


def train(cfg: FmnistTrainConfig, progress: Progress | None = None) -> tuple[FmnistCNN, dict]:
    """Train the CNN (Adam, one-cycle) on CPU or GPU; returns the model and its metrics."""
    from engine.device import pick_device, seed_everything

    gen = seed_everything(cfg.seed)
    device = pick_device()
    x_tr, y_tr = load_split("train")
    x_tr, y_tr = x_tr[: cfg.n_train], y_tr[: cfg.n_train]
    x_te, y_te = load_split("test")
    xt, yt = preprocess(x_tr), torch.from_numpy(y_tr)
    model = FmnistCNN(cfg.width, cfg.hidden).to(device)
    steps_per_epoch = -(-len(xt) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    t0, step = time.perf_counter(), 0
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            xb, yb = xt[idx].to(device), yt[idx].to(device)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress and (step % 20 == 0 or step == total):
                progress(step, total, f"epoch {epoch + 1}/{cfg.epochs} loss {loss.item():.3f}")
    model = model.cpu().eval()
    metrics = {"test_accuracy": evaluate(model, x_te, y_te), "train_seconds": time.perf_counter() - t0,
               "n_train": len(xt), "epochs": cfg.epochs}
    return model, metrics


ASSET = "fmnist-cnn"
"""name of the shipped CNN in ``assets/manifest.json`` (``geolens assets publish fmnist-cnn``)"""


def asset_files(cfg: FmnistTrainConfig) -> dict[str, Path]:
    """Asset file name -> where the cache keeps it (weights and their JSON meta)."""
    path = weights_path(cfg)
    return {f"{ASSET}.safetensors": path, f"{ASSET}.json": path.with_suffix(".json")}


def load_or_train(cfg: FmnistTrainConfig | None = None, progress: Progress | None = None) -> tuple[FmnistCNN, dict]:
    """The cached CNN for ``cfg`` (safetensors + JSON beside it): else the shipped asset when its
    config key and hashes match (engine.shipped), else trained here on first use."""
    from safetensors.torch import load_file, save_file

    from engine.config import atomic_write_text
    from engine.shipped import needs_training

    cfg = cfg or FmnistTrainConfig()
    path = weights_path(cfg)
    meta_path = path.with_suffix(".json")
    if not needs_training(ASSET, path, path.stem, asset_files(cfg)) and meta_path.exists():
        model = FmnistCNN(cfg.width, cfg.hidden)
        model.load_state_dict(load_file(str(path)))
        return model.eval(), json.loads(meta_path.read_text())["metrics"]
    model, metrics = train(cfg, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)
    atomic_write_text(meta_path, json.dumps({"config": cfg.to_dict(), "metrics": metrics}, indent=2))
    return model, metrics
