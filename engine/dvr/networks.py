"""The two critic networks of the evaluation, trained on the training classes and cached.

- SimCLR backbone (Chen et al. 2020): 4 conv blocks -> 256-d features (before the projection
  head); trained with the NT-Xent loss on two random affine views of each training drawing.
  Its features measure diversity and originality.
- Prototypical network (Snell et al. 2017): the same 4-block architecture, 256-d embedding,
  trained with 60-way 1-shot episodes; classifies a query by the nearest prototype
  (squared Euclidean distance). It measures recognizability.

Weights are saved as ``<name>.safetensors`` beside ``<name>.json`` (the config) under
``cache_root()/dvr/critics/<key>/`` where key = hash(data key, config, ENGINE_VERSION).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from engine import store
from engine.config import Config, atomic_write_text, check_positive, stable_hash
from engine.device import pick_device, seed_everything

ENGINE_VERSION = "dvr-critics-1"
FEATURE_DIM = 256


@dataclasses.dataclass
class CriticConfig(Config):
    """Architecture and training of both critics."""

    widths: tuple[int, ...] = (16, 32, 64, 64)
    """Channels of the 4 conv blocks (conv3×3-BN-ReLU-maxpool2); 50×50 -> 3×3."""
    feature_dim: int = FEATURE_DIM
    """Feature / embedding size (a linear map after the 4 blocks)."""
    simclr_epochs: int = 6
    simclr_batch: int = 256
    simclr_temperature: float = 0.5
    proto_episodes: int = 250
    proto_way: int = 60
    """Classes per training episode (60-way 1-shot in the paper)."""
    proto_query: int = 1
    """Query drawings per class per episode."""
    lr: float = 1e-3
    seed: int = 0

    def validate(self) -> None:
        if len(self.widths) != 4:
            raise ValueError(f"widths must list 4 conv blocks, got {self.widths}")
        for name in ("feature_dim", "simclr_epochs", "simclr_batch", "proto_episodes", "proto_way", "proto_query"):
            check_positive(name, getattr(self, name))
        check_positive("simclr_temperature", self.simclr_temperature)
        check_positive("lr", self.lr)

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        if "widths" in d:
            d["widths"] = tuple(d["widths"])
        return super().from_dict(d)


class ConvNet4(nn.Module):
    """4 × (conv3×3, BatchNorm, ReLU, maxpool 2) then a linear map: (B, 1, 50, 50) -> (B, feature_dim)."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 64), feature_dim: int = FEATURE_DIM, side: int = 50):
        super().__init__()
        layers, c = [], 1
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
            c = w
            side //= 2
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(c * side * side, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(x).flatten(1))


def random_affine(x: torch.Tensor, gen: torch.Generator, rot: float = 0.3, scale: float = 0.15,
                  shear: float = 0.2, shift: float = 0.12) -> torch.Tensor:
    """A random affine view of each image: (B, 1, H, W) -> (B, 1, H, W), bilinear, zero (no ink) fill."""
    b = x.shape[0]
    u = lambda: torch.rand(b, generator=gen) * 2 - 1  # noqa: E731  uniform in [-1, 1]
    th, s, sh = u() * rot, torch.exp(u() * scale), u() * shear
    tx, ty = u() * shift, u() * shift
    cos, sin = torch.cos(th), torch.sin(th)
    theta = torch.stack([torch.stack([cos * s, (-sin + sh) * s, tx], 1),
                         torch.stack([sin * s, cos * s, ty], 1)], 1).to(x)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss for positive pairs (z1[i], z2[i]); z: (B, d)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, d)
    sim = z @ z.T / temperature  # (2B, 2B)
    sim.fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, target)


def proto_logits(support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Prototypical-network logits: minus squared Euclidean distance; (W, d), (Q, d) -> (Q, W)."""
    return -torch.cdist(query, support).pow(2)


def train_simclr(x: np.ndarray, cfg: CriticConfig, device: torch.device, progress=None) -> ConvNet4:
    """Train the SimCLR backbone on (N, 50, 50) ink images."""
    gen = seed_everything(cfg.seed)
    net = ConvNet4(cfg.widths, cfg.feature_dim).to(device)
    head = nn.Sequential(nn.Linear(cfg.feature_dim, cfg.feature_dim), nn.ReLU(), nn.Linear(cfg.feature_dim, 128)).to(device)
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=cfg.lr)
    data = torch.from_numpy(x).unsqueeze(1)  # (N, 1, 50, 50)
    n = len(data)
    batch = min(cfg.simclr_batch, n)
    steps = max(1, n // batch)
    for ep in range(cfg.simclr_epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(steps):
            xb = data[perm[s * batch:(s + 1) * batch]]
            v1, v2 = random_affine(xb, gen).to(device), random_affine(xb, gen).to(device)
            loss = nt_xent(head(net(v1)), head(net(v2)), cfg.simclr_temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if progress:
                progress(ep * steps + s + 1, cfg.simclr_epochs * steps, loss.item())
    return net.eval()


def train_protonet(x: np.ndarray, y: np.ndarray, cfg: CriticConfig, device: torch.device, progress=None) -> ConvNet4:
    """Train the prototypical network with W-way 1-shot episodes on (N, 50, 50) images, labels (N,)."""
    gen = seed_everything(cfg.seed + 1)
    net = ConvNet4(cfg.widths, cfg.feature_dim).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    data = torch.from_numpy(x).unsqueeze(1)
    by_class = [torch.from_numpy(np.flatnonzero(y == c)) for c in np.unique(y)]
    by_class = [ix for ix in by_class if len(ix) >= 1 + cfg.proto_query]
    way = min(cfg.proto_way, len(by_class))
    if way < 2:
        raise ValueError(f"need >= 2 training classes with >= {1 + cfg.proto_query} drawings each")
    for ep in range(cfg.proto_episodes):
        classes = torch.randperm(len(by_class), generator=gen)[:way]
        sup, qry = [], []
        for c in classes.tolist():
            ix = by_class[c][torch.randperm(len(by_class[c]), generator=gen)[:1 + cfg.proto_query]]
            sup.append(ix[:1])
            qry.append(ix[1:])
        xb = data[torch.cat(sup + qry)].to(device)  # (W + W*Q, 1, 50, 50)
        emb = net(xb)
        logits = proto_logits(emb[:way], emb[way:])  # (W*Q, W)
        target = torch.arange(way).repeat_interleave(cfg.proto_query).to(device)
        loss = F.cross_entropy(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress:
            progress(ep + 1, cfg.proto_episodes, loss.item())
    return net.eval()


@torch.no_grad()
def embed(net: ConvNet4, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """(..., 50, 50) ink images -> (..., feature_dim) float32 features (eval mode)."""
    lead = x.shape[:-2]
    flat = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(-1, 1, *x.shape[-2:])
    dev = next(net.parameters()).device
    out = [net(flat[i:i + batch].to(dev)).float().cpu() for i in range(0, len(flat), batch)]
    feats = torch.cat(out) if out else torch.zeros(0, net.fc.out_features)
    return feats.numpy().reshape(*lead, -1)


@dataclasses.dataclass
class Critics:
    """The two trained critics, their cache folder, and training times in seconds."""

    simclr: ConvNet4
    protonet: ConvNet4
    folder: Path
    key: str
    seconds: dict


def critics_folder(data_key: str, cfg: CriticConfig) -> Path:
    key = stable_hash({"data": data_key, "cfg": cfg.to_dict(), "v": ENGINE_VERSION})
    return store.cache_root() / "dvr" / "critics" / key


def _save(net: ConvNet4, cfg: CriticConfig, folder: Path, name: str, extra: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.safetensors.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(tmp))
    tmp.replace(folder / f"{name}.safetensors")
    atomic_write_text(folder / f"{name}.json", json.dumps({"config": cfg.to_dict(), **extra}, indent=2))


def _load(folder: Path, name: str, device: torch.device) -> tuple[ConvNet4, dict]:
    meta = json.loads((folder / f"{name}.json").read_text())
    cfg = CriticConfig.from_dict(meta["config"])
    net = ConvNet4(cfg.widths, cfg.feature_dim)
    net.load_state_dict(load_file(str(folder / f"{name}.safetensors")))
    return net.to(device).eval(), meta


def critic_asset(name: str) -> str:
    """The asset a critic ships as (``assets/manifest.json``), keyed by ``<critics key>/<name>``."""
    return f"dvr-critic-{name}"


def install_shipped_critic(folder: Path, name: str) -> bool:
    """Copy the shipped critic ``name`` into ``folder`` if its asset was made with these data and
    settings (same critics key) and is intact; False (so the caller trains) otherwise or on --retrain."""
    from engine.core import assets
    from engine.shipped import use_shipped

    entry = assets.entry(critic_asset(name))
    if entry is None or "meta" not in entry or len(entry["files"]) != 1:
        return False
    (fname,) = entry["files"]
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / f"{name}.json", json.dumps({**entry["meta"], "from_asset": fname}, indent=2))
    if use_shipped(critic_asset(name), f"{folder.name}/{name}", {fname: folder / f"{name}.safetensors"}):
        return True
    (folder / f"{name}.json").unlink()
    return False


def get_critics(train_x: np.ndarray, train_y: np.ndarray, data_key: str, cfg: CriticConfig,
                device: str | None = None, progress=None, train: bool = True) -> Critics:
    """Load the cached critics for (data, cfg), training them first when missing and ``train``.

    ``progress(stage, done, total, loss)`` reports training steps.
    """
    dev = pick_device(device)
    folder = critics_folder(data_key, cfg)
    key = folder.name
    for name in ("simclr", "protonet"):
        if (folder / f"{name}.safetensors").exists() or install_shipped_critic(folder, name):
            continue
        if not train:
            raise FileNotFoundError(f"critics {key} not trained yet: run `geolens dvr build` first")
        cb = (lambda d, t, l, n=name: progress(n, d, t, l)) if progress else None
        t0 = time.perf_counter()
        net = train_simclr(train_x, cfg, dev, cb) if name == "simclr" else train_protonet(train_x, train_y, cfg, dev, cb)
        secs = time.perf_counter() - t0
        _save(net, cfg, folder, name, {"data_key": data_key, "train_seconds": secs, "device": str(dev),
                                      "n_train": int(len(train_x))})
    return load_critics(folder, device)


def load_critics(folder: str | Path, device: str | None = None) -> Critics:
    """Load both trained critics from their cache folder (as stored: relative to the cache root or absolute)."""
    folder = store.resolve_stored(folder)
    if not (folder / "protonet.safetensors").exists():
        raise FileNotFoundError(f"no trained critics in {folder}: run `geolens dvr build` first")
    dev = pick_device(device)
    nets, seconds = {}, {}
    for name in ("simclr", "protonet"):
        nets[name], meta = _load(folder, name, dev)
        seconds[name] = float(meta.get("train_seconds", 0.0))
    return Critics(nets["simclr"], nets["protonet"], folder, folder.name, seconds)
