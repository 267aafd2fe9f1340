"""A DA-GAN-style exemplar-conditioned GAN (Antoniou et al. 2017; the GAN-like family of Boutin et al. 2022).

Generator G(e, u): a small U-Net on the exemplar e (32×32) whose bottleneck code is
concatenated with noise u ~ N(0, ψ² I); skip connections carry the exemplar's strokes to the
output (sigmoid intensities in [0, 1]).
Discriminator D(e, x): judges (exemplar, drawing) pairs, the two images stacked as channels;
real pairs are two different drawings of one training class, fake pairs (e, G(e, u)).
Spectral normalisation on D.

Losses (non-saturating GAN, logits s):
    L_D = mean softplus(−s_real) + mean softplus(s_fake)
    L_G = mean softplus(−s_fake) + λ_ms / (ms + 1e-5),
    ms = mean|G(e, u1) − G(e, u2)| / mean|u1 − u2|        (mode seeking, Mao et al. 2019)
so the generator cannot ignore its noise. Sampling: ψ (noise scale, a truncation-style knob)
is the swept hyper-parameter; samples are thresholded at 0.5 after upsampling.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from engine.config import check_positive
from engine.dvr.trainer import SIDE, OneShotModel, TrainConfig


@dataclasses.dataclass
class GANConfig(TrainConfig):
    noise_dim: int = 32
    channels: int = 16
    ms_weight: float = 0.1
    """λ of the mode-seeking term (measured on the stroke set after 1000 steps at ψ = 0.5: λ = 1 gives
    diversity 0.43 / recognizability 0.19, λ = 0.1 gives 0.40 / 0.43: a strong term buys noise, not variety)."""
    steps: int = 4000
    batch_classes: int = 32
    targets_per_class: int = 1
    lr: float = 5e-4

    def validate(self) -> None:
        super().validate()
        for name in ("noise_dim", "channels"):
            check_positive(name, getattr(self, name))
        check_positive("ms_weight", self.ms_weight, allow_zero=True)


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss: mean softplus(−real) + mean softplus(fake) (= BCE with labels 1 / 0)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: mean softplus(−fake) = −mean log σ(fake)."""
    return F.softplus(-fake_logits).mean()


def mode_seeking(x1: torch.Tensor, x2: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """MSGAN ratio mean|x1 − x2| / mean|u1 − u2| (the generator maximises it)."""
    return (x1 - x2).abs().mean() / (u1 - u2).abs().mean()


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.ReLU())


class GeneratorNet(nn.Module):
    def __init__(self, k: int, noise_dim: int):
        super().__init__()
        self.k = k
        self.e1, self.e2, self.e3 = _down(1, k), _down(k, 2 * k), _down(2 * k, 2 * k)  # 32 -> 16 -> 8 -> 4
        self.code = nn.Sequential(nn.Linear(2 * k * 16 + noise_dim, 2 * k * 16), nn.ReLU())
        self.d3, self.d2, self.d1 = _up(4 * k, 2 * k), _up(4 * k, k), _up(2 * k, k)  # 4 -> 8 -> 16 -> 32
        self.out = nn.Conv2d(k, 1, 3, 1, 1)

    def forward(self, e: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Exemplars (B, 1, 32, 32), noise (B, noise_dim) -> (B, 1, 32, 32) intensities in [0, 1]."""
        h1 = self.e1(e)
        h2 = self.e2(h1)
        h3 = self.e3(h2)
        b = self.code(torch.cat([h3.flatten(1), u], 1)).view_as(h3)
        y = self.d3(torch.cat([b, h3], 1))
        y = self.d2(torch.cat([y, h2], 1))
        y = self.d1(torch.cat([y, h1], 1))
        return torch.sigmoid(self.out(y))


class Discriminator(nn.Module):
    def __init__(self, k: int):
        super().__init__()
        sn = spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(2, k, 4, 2, 1)), nn.LeakyReLU(0.2), sn(nn.Conv2d(k, 2 * k, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(2 * k, 4 * k, 4, 2, 1)), nn.LeakyReLU(0.2), nn.Flatten(), sn(nn.Linear(4 * k * 16, 1)))

    def forward(self, e: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(exemplar, drawing) pairs, each (B, 1, 32, 32) -> (B,) logits ("a real pair")."""
        return self.net(torch.cat([e, x], 1)).squeeze(1)


class DAGAN(OneShotModel):
    Config = GANConfig
    VERSION = "dagan-1"
    SAMPLE_PARAMS = {"psi": 1.0}

    def __init__(self, cfg: GANConfig):
        super().__init__(cfg)
        self.g = GeneratorNet(cfg.channels, cfg.noise_dim)
        self.d = Discriminator(cfg.channels)

    def optimizers(self):
        return {"g": torch.optim.Adam(self.g.parameters(), lr=self.cfg.lr, betas=(0.5, 0.999)),
                "d": torch.optim.Adam(self.d.parameters(), lr=self.cfg.lr, betas=(0.5, 0.999))}

    def _noise(self, b: int, gen: torch.Generator, ref: torch.Tensor, psi: float = 1.0) -> torch.Tensor:
        return psi * torch.randn(b, self.cfg.noise_dim, generator=gen).to(ref)

    def train_step(self, ex, tg, opts, gen):
        real = tg[:, 0]
        b = len(ex)
        u1, u2 = self._noise(b, gen, ex), self._noise(b, gen, ex)
        fake = self.g(torch.cat([ex, ex]), torch.cat([u1, u2]))
        ld = d_loss(self.d(ex, real), self.d(ex, fake[:b].detach()))
        opts["d"].zero_grad()
        ld.backward()
        opts["d"].step()
        ms = mode_seeking(fake[:b], fake[b:], u1, u2)
        lg = g_loss(self.d(torch.cat([ex, ex]), fake)) + self.cfg.ms_weight / (ms + 1e-5)
        opts["g"].zero_grad()
        lg.backward()
        opts["g"].step()
        return {"d": ld.item(), "g": lg.item(), "ms": ms.item()}

    @torch.no_grad()
    def sample(self, ex, n, gen, psi: float = 1.0, **_):
        self.g.eval()
        exn = ex.repeat_interleave(n, 0)
        return self.g(exn, self._noise(len(exn), gen, ex, psi)).view(len(ex), n, SIDE, SIDE)
