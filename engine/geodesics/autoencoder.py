"""A small convolutional autoencoder for 32×32 character images with a 64-d latent space.

Encoder: 1×32×32 → conv 32 (s2) → 64 (s2) → 128 (s2) → linear 64. Decoder mirrors it with a
sigmoid output. Trained with pixel-wise binary cross-entropy and Adam (one-cycle); cached like the EBMs (safetensors +
JSON keyed by data identity and settings).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch
from torch import nn

from engine import ENGINE_VERSION
from engine.config import Config, check_positive
from engine.device import pick_device, seed_everything
from engine.core import artifacts


@dataclasses.dataclass
class AEConfig(Config):
    latent_dim: int = 64
    """Size of the latent space."""
    channels: int = 32
    """Channels of the first conv layer (doubled at each of the three stages)."""
    epochs: int = 15
    """Passes over the images."""
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0

    def validate(self) -> None:
        for name in ("latent_dim", "channels", "epochs", "batch_size"):
            check_positive(name, getattr(self, name))
        check_positive("lr", self.lr)


class ConvAE(nn.Module):
    def __init__(self, latent_dim: int = 64, channels: int = 32):
        super().__init__()
        c = channels
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1), nn.SiLU(),  # (B, c, 16, 16)
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.SiLU(),  # (B, 2c, 8, 8)
            nn.Conv2d(2 * c, 4 * c, 4, 2, 1), nn.SiLU(),  # (B, 4c, 4, 4)
            nn.Flatten(), nn.Linear(4 * c * 16, latent_dim),  # (B, latent)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 4 * c * 16), nn.SiLU(), nn.Unflatten(1, (4 * c, 4, 4)),
            nn.ConvTranspose2d(4 * c, 2 * c, 4, 2, 1), nn.SiLU(),  # (B, 2c, 8, 8)
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.SiLU(),  # (B, c, 16, 16)
            nn.ConvTranspose2d(c, 1, 4, 2, 1),  # (B, 1, 32, 32) logits
        )

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 32, 32) -> (B, latent)."""
        return self.encoder(img[:, None])

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent) -> (B, 32, 32) pixel logits."""
        return self.decoder(z)[:, 0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent) -> (B, 32, 32) in [0, 1]."""
        return torch.sigmoid(self.logits(z))


def train_ae(images: np.ndarray, cfg: AEConfig, device: torch.device | None = None,
             progress: Callable[[int, int, float], None] | None = None) -> ConvAE:
    """Fit the AE on images (n, 32, 32) in [0, 1]; returns it on CPU in eval mode."""
    device = device or pick_device()
    gen = seed_everything(cfg.seed)
    model = ConvAE(cfg.latent_dim, cfg.channels).to(device)
    x = torch.as_tensor(images, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps = max(1, len(x) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps)
    for ep in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for s in range(steps):
            batch = x[perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]].to(device)
            # pixel-wise cross-entropy: unlike MSE through a sigmoid it does not stall on all-black outputs
            loss = nn.functional.binary_cross_entropy_with_logits(model.logits(model.encode(batch)), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if progress is not None:
                progress(ep * steps + s + 1, cfg.epochs * steps, float(loss.detach()))
    return model.cpu().eval()


AE_REVISION = 2  # 2: cross-entropy training (revision 1, MSE through a sigmoid, collapsed to black images)


def ae_key(data_key: str, cfg: AEConfig) -> str:
    return artifacts.artifact_key("ae", cfg.to_dict(), [data_key], f"{ENGINE_VERSION}+ae{AE_REVISION}")


def get_ae(data_key: str, images: np.ndarray, cfg: AEConfig, device: torch.device | None = None,
           progress: Callable[[int, int, float], None] | None = None, train: bool = True) -> ConvAE | None:
    """The stored AE for (data, cfg); trained and saved when missing (unless ``train`` is False)."""
    return artifacts.model_artifact(
        "ae", cfg.to_dict(), [data_key], f"{ENGINE_VERSION}+ae{AE_REVISION}",
        make=lambda meta: ConvAE(cfg.latent_dim, cfg.channels),
        train=lambda: (train_ae(images, cfg, device, progress), {}), allow_train=train, name="character autoencoder")


@torch.no_grad()
def encode_all(model: ConvAE, images: np.ndarray, batch: int = 512) -> torch.Tensor:
    """(n, 32, 32) -> (n, latent) on CPU."""
    x = torch.as_tensor(images, dtype=torch.float32)
    return torch.cat([model.encode(x[i:i + batch]) for i in range(0, len(x), batch)]) if len(x) else torch.zeros(0, model.encoder[-1].out_features)


@torch.no_grad()
def decode_all(model: ConvAE, z: torch.Tensor, batch: int = 512) -> np.ndarray:
    """(n, latent) -> (n, 32, 32) numpy in [0, 1]."""
    return torch.cat([model.decode(z[i:i + batch].float()) for i in range(0, len(z), batch)]).numpy()
