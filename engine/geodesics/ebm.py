"""Energy-based models: contrastive divergence (CD) with Langevin sampling and a replay buffer, or
denoising score matching (DSM).

CD loss (docs/METHODS.md §3): L = mean E(x⁺) − mean E(x⁻) + r (mean E(x⁺)² + mean E(x⁻)²), with negatives
x⁻ from ``langevin_steps`` steps of x ← x − s ∇E(x) + ε ξ started from the replay buffer 95%
of the time and from uniform noise over the data's bounding box otherwise; Adam.
DSM loss (the objective of the authors' released toy checkpoints): L = mean ‖∇E(x̃) − (x̃ − x)/σ²‖²
with x̃ = x + σ ξ and σ ~ U[σ_min, σ_max] per sample, in data units; Adam with cosine decay. The network
is the authors' toy design: an MLP trunk with a quadratic head E = f1(h) f2(h) + f3(h²), on
standardised inputs. Weights are cached as safetensors beside a JSON config, keyed by the data
identity and every setting.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import nn

from engine import ENGINE_VERSION
from engine.config import Config, check_choice, check_positive
from engine.core import artifacts
from engine.device import pick_device, seed_everything


OBJECTIVES = ("cd", "dsm")


@dataclasses.dataclass
class EBMConfig(Config):
    objective: str = "cd"
    """'cd' (contrastive divergence, the paper's latent-space setting) or 'dsm' (denoising score matching)."""
    width: int = 32
    """Hidden width of the energy MLP."""
    depth: int = 5
    """Hidden layers in the trunk."""
    iters: int = 2000
    """Training iterations (batches)."""
    batch_size: int = 128
    """Positive and negative samples per iteration."""
    lr: float = 1e-4
    """Adam learning rate."""
    langevin_steps: int = 100
    """Langevin steps per negative batch."""
    step_size: float = 1.0
    """Langevin gradient step s (in standardised coordinates)."""
    noise: float = 1e-2
    """Langevin noise ε."""
    buffer_size: int = 10000
    """Replay buffer size."""
    buffer_frac: float = 0.95
    """Share of negatives started from the replay buffer."""
    reg: float = 0.1
    """Energy-magnitude regulariser r."""
    margin: float = 0.25
    """Fresh noise covers the data's bounding box widened by this fraction of its size."""
    sigma_min: float = 0.01
    """DSM: smallest noise level (data units)."""
    sigma_max: float = 2.0
    """DSM: largest noise level (data units)."""
    seed: int = 0

    def validate(self) -> None:
        for name in ("width", "depth", "iters", "batch_size", "langevin_steps", "buffer_size"):
            check_positive(name, getattr(self, name))
        for name in ("lr", "step_size"):
            check_positive(name, getattr(self, name))
        check_positive("noise", self.noise, allow_zero=True)
        check_positive("reg", self.reg, allow_zero=True)
        check_choice("objective", self.objective, OBJECTIVES)
        check_positive("sigma_min", self.sigma_min)
        if self.sigma_max < self.sigma_min:
            raise ValueError(f"sigma_max ({self.sigma_max}) must be >= sigma_min ({self.sigma_min})")
        if not 0.0 <= self.buffer_frac <= 1.0:
            raise ValueError(f"buffer_frac must be in [0, 1], got {self.buffer_frac}")


class EnergyMLP(nn.Module):
    """E(x): (..., d) -> (...). Inputs standardised by the data's mean and overall std (buffers)."""

    def __init__(self, dim: int, width: int = 32, depth: int = 5):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(dim, width), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.SiLU()]
        self.trunk = nn.Sequential(*layers, nn.Linear(width, width))
        self.f1, self.f2, self.f3 = nn.Linear(width, 1), nn.Linear(width, 1), nn.Linear(width, 1)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_std((x - self.mean) / self.scale)

    def forward_std(self, z: torch.Tensor) -> torch.Tensor:
        """Energy of standardised inputs z (..., d) -> (...), what the sampler works with."""
        h = self.trunk(z)  # (..., width)
        return (self.f1(h) * self.f2(h) + self.f3(h * h)).squeeze(-1)


def langevin(model: nn.Module, x: torch.Tensor, steps: int, step_size: float, noise: float,
             lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """x ← clamp(x − s ∇E(x) + ε ξ) for ``steps`` steps; x (B, d) in standardised coordinates."""
    x = x.detach().clone()
    for _ in range(steps):
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(model.forward_std(x).sum(), x)
        x = (x.detach() - step_size * g + noise * torch.randn_like(x)).clamp(lo, hi)
    return x.detach()


def dsm_loss(model: nn.Module, x: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Denoising score matching: mean ‖∇E(x̃) − (x̃ − x)/σ²‖², x̃ = x + σ ξ; x, noise (B, d), sigma (B, 1)."""
    xt = (x + sigma * noise).requires_grad_(True)
    (g,) = torch.autograd.grad(model(xt).sum(), xt, create_graph=True)
    return ((g - (xt - x) / sigma**2) ** 2).sum(-1).mean()


def train_ebm(x: torch.Tensor, cfg: EBMConfig, device: torch.device | None = None,
              progress: Callable[[int, float], None] | None = None) -> EnergyMLP:
    """Fit an EBM to data x (n, d) with ``cfg.objective``; returns the model on CPU, eval mode."""
    device = device or pick_device()
    gen = seed_everything(cfg.seed)
    x = x.float()
    model = EnergyMLP(x.shape[1], cfg.width, cfg.depth)
    model.mean.copy_(x.mean(0))
    model.scale.fill_(float(x.std(0).mean()))
    model.to(device)
    if cfg.objective == "dsm":
        return _train_dsm(model, x.to(device), cfg, gen, progress)
    z = ((x - model.mean.cpu()) / model.scale.cpu()).to(device)  # (n, d) standardised data
    span = z.max(0).values - z.min(0).values
    lo, hi = z.min(0).values - cfg.margin * span, z.max(0).values + cfg.margin * span

    def noise(n: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, z.shape[1], generator=gen).to(device)

    buffer = noise(cfg.buffer_size)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    for it in range(cfg.iters):
        pos = z[torch.randint(len(z), (cfg.batch_size,), generator=gen).to(device)]
        idx = torch.randint(cfg.buffer_size, (cfg.batch_size,), generator=gen).to(device)
        fresh = torch.rand(cfg.batch_size, generator=gen).to(device) > cfg.buffer_frac
        start = torch.where(fresh[:, None], noise(cfg.batch_size), buffer[idx])
        neg = langevin(model, start, cfg.langevin_steps, cfg.step_size, cfg.noise, lo, hi)
        buffer[idx] = neg
        e_pos, e_neg = model.forward_std(pos), model.forward_std(neg)
        loss = e_pos.mean() - e_neg.mean() + cfg.reg * ((e_pos**2).mean() + (e_neg**2).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None:
            progress(it + 1, float(loss.detach()))
    return model.cpu().eval()


def _train_dsm(model: EnergyMLP, x: torch.Tensor, cfg: EBMConfig, gen: torch.Generator,
               progress: Callable[[int, float], None] | None) -> EnergyMLP:
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.iters, eta_min=cfg.lr * 1e-3)
    for it in range(cfg.iters):
        batch = x[torch.randint(len(x), (cfg.batch_size,), generator=gen).to(x.device)]
        sigma = cfg.sigma_min + (cfg.sigma_max - cfg.sigma_min) * torch.rand(cfg.batch_size, 1, generator=gen)
        noise = torch.randn(batch.shape, generator=gen)
        loss = dsm_loss(model, batch, sigma.to(x.device), noise.to(x.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress(it + 1, float(loss.detach()))
    return model.cpu().eval()


# ---------------------------------------------------------------- stored as artifacts (engine.core.artifacts)
def ebm_key(data_key: str, cfg: EBMConfig) -> str:
    return artifacts.artifact_key("ebm", cfg.to_dict(), [data_key], ENGINE_VERSION)


def get_ebm(data_key: str, x: torch.Tensor, cfg: EBMConfig, device: torch.device | None = None,
            progress: Callable[[int, float], None] | None = None, train: bool = True) -> EnergyMLP | None:
    """The stored EBM for (data, cfg); trained and saved when missing (unless ``train`` is False)."""
    return artifacts.model_artifact(
        "ebm", cfg.to_dict(), [data_key], ENGINE_VERSION,
        make=lambda meta: EnergyMLP(meta["dim"], cfg.width, cfg.depth),
        train=lambda: (train_ebm(x, cfg, device, progress), {"dim": int(x.shape[1])}),
        allow_train=train, name=f"EBM ({cfg.objective})")
