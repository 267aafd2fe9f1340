"""A one-shot neural statistician (Edwards & Storkey 2017; VAE-NS in Boutin et al. 2022).

Generative model for a class context c and a drawing x:
    p(c) = N(0, I),  p(z | c) = N(μ_p(c), σ_p(c)²),  p(x | z, c) = Bernoulli(dec(z, c)).
The decoder sees only (z, c): the exemplar reaches a sample only through its context
statistic c. Inference: q(c | D) from the statistic network on the context set D (one
drawing in one-shot), q(z | x, c).

Training (one-shot): D = one drawing of a class, targets = K other drawings of it; per target
    loss = −ELBO_β = BCE(x, dec(z, c)) + β · (KL(q(z|x,c) ‖ p(z|c)) + KL(q(c|D) ‖ p(c)) / K)
(β = 1 is the ELBO; β is the swept hyper-parameter).
Sampling from an exemplar e: c = mean of q(c | e), z ~ p(z | c), **x ~ Bernoulli(dec(z, c))**
(binary pixels at 32×32), upsampled to 50×50 and thresholded at 0.5 (``trainer.to_eval``).
Why Bernoulli pixels and not the means at 0.5: the means thresholded at 0.5 lose ink (measured on
the stroke set after 6000 steps at β = 1: ink 0.059 against the data's 0.091, recognizability 0.16;
the sampled pixels keep the ink, 0.094, and score 0.19), and after 500 steps they were blank for
every test exemplar. ``bernoulli=0`` gives the means.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import check_positive
from engine.dvr.trainer import SIDE, OneShotModel, TrainConfig


@dataclasses.dataclass
class VAEConfig(TrainConfig):
    """Size and training of the neural statistician."""

    beta: float = 1.0
    """Weight of the KL terms (the swept hyper-parameter; 1 = the ELBO)."""
    c_dim: int = 32
    z_dim: int = 16
    hidden: int = 128
    channels: int = 16
    """Conv channels of the first encoder block (then 2×, 2×); the decoder mirrors them."""
    steps: int = 6000
    batch_classes: int = 32
    targets_per_class: int = 2
    lr: float = 1e-3

    def validate(self) -> None:
        super().validate()
        check_positive("beta", self.beta, allow_zero=True)
        for name in ("c_dim", "z_dim", "hidden", "channels"):
            check_positive(name, getattr(self, name))


def _gauss(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu, logvar = h.chunk(2, dim=-1)
    return mu, logvar.clamp(-8, 8)


def kl_gauss(mu_q, lv_q, mu_p, lv_p) -> torch.Tensor:
    """KL(N(mu_q, e^lv_q) ‖ N(mu_p, e^lv_p)) summed over the last dim: (..., d) -> (...)."""
    return 0.5 * (lv_p - lv_q + (lv_q.exp() + (mu_q - mu_p) ** 2) / lv_p.exp() - 1).sum(-1)


def neg_elbo(x: torch.Tensor, logits: torch.Tensor, q_z: tuple, p_z: tuple, q_c: tuple, k: int,
             beta: float = 1.0) -> torch.Tensor:
    """Per-target −ELBO_β.

    x, logits (B·K, 1, H, W); q_z = (μ, log σ²) of q(z|x,c) and p_z of p(z|c), each (B·K, z);
    q_c = (μ, log σ²) of q(c|D), (B, c), shared by the K targets of its class. Returns (B·K,):
    BCE summed over pixels + β · (KL_z + KL_c / K).
    """
    rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl_z = kl_gauss(*q_z, *p_z)
    mu_c, lv_c = q_c
    kl_c = kl_gauss(mu_c, lv_c, torch.zeros_like(mu_c), torch.zeros_like(lv_c)).repeat_interleave(k, 0) / k
    return rec + beta * (kl_z + kl_c)


def conv_encoder(k: int, out: int) -> nn.Sequential:
    """(B, 1, 32, 32) -> (B, out): three stride-2 convs (32 -> 16 -> 8 -> 4), then a linear map."""
    return nn.Sequential(nn.Conv2d(1, k, 3, 2, 1), nn.ReLU(), nn.Conv2d(k, 2 * k, 3, 2, 1), nn.ReLU(),
                         nn.Conv2d(2 * k, 2 * k, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * k * 16, out), nn.ReLU())


class NeuralStatistician(OneShotModel):
    """Statistic net q(c|D), prior p(z|c), posterior q(z|x,c), decoder p(x|z,c) at 32×32."""

    Config = VAEConfig
    VERSION = "ns-2"
    SAMPLE_PARAMS = {"bernoulli": 1.0}

    def __init__(self, cfg: VAEConfig):
        super().__init__(cfg)
        h, k = cfg.hidden, cfg.channels
        self.k2 = 2 * k
        self.enc = conv_encoder(k, h)  # shared by the statistic network and q(z|x,c)
        self.q_c = nn.Linear(h, 2 * cfg.c_dim)
        self.p_z = nn.Sequential(nn.Linear(cfg.c_dim, h), nn.ReLU(), nn.Linear(h, 2 * cfg.z_dim))
        self.q_z = nn.Sequential(nn.Linear(h + cfg.c_dim, h), nn.ReLU(), nn.Linear(h, 2 * cfg.z_dim))
        self.dec_fc = nn.Sequential(nn.Linear(cfg.z_dim + cfg.c_dim, h), nn.ReLU(), nn.Linear(h, 2 * k * 16), nn.ReLU())
        self.dec = nn.Sequential(  # 4 -> 8 -> 16 -> 32
            nn.ConvTranspose2d(2 * k, 2 * k, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(2 * k, k, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(k, k, 4, 2, 1), nn.ReLU(), nn.Conv2d(k, 1, 3, 1, 1))

    def context(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(c | D) for one-drawing context sets (B, 1, 32, 32): (μ, log σ²), each (B, c)."""
        return _gauss(self.q_c(self.enc(d)))

    def decode(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """z (B, z), c (B, c) -> (B, 1, 32, 32) Bernoulli logits. No image input."""
        return self.dec(self.dec_fc(torch.cat([z, c], -1)).view(-1, self.k2, 4, 4))

    def loss(self, ex: torch.Tensor, tg: torch.Tensor) -> torch.Tensor:
        b, k = tg.shape[:2]
        mu_c, lv_c = self.context(ex)
        c = mu_c + (0.5 * lv_c).exp() * torch.randn_like(mu_c)
        ck = c.repeat_interleave(k, 0)
        xt = tg.flatten(0, 1)
        mu_q, lv_q = _gauss(self.q_z(torch.cat([self.enc(xt), ck], -1)))
        z = mu_q + (0.5 * lv_q).exp() * torch.randn_like(mu_q)
        return neg_elbo(xt, self.decode(z, ck), (mu_q, lv_q), _gauss(self.p_z(ck)), (mu_c, lv_c), k, self.cfg.beta).mean()

    def train_step(self, ex, tg, opts, gen):
        loss = self.loss(ex, tg)
        opts["opt"].zero_grad()
        loss.backward()
        opts["opt"].step()
        return {"neg_elbo_beta": loss.item()}

    @torch.no_grad()
    def sample(self, ex, n, gen, **params):
        mu_c, _ = self.context(ex)
        ck = mu_c.repeat_interleave(n, 0)
        mu_p, lv_p = _gauss(self.p_z(ck))
        z = mu_p + (0.5 * lv_p).exp() * torch.randn(mu_p.shape, generator=gen).to(mu_p)
        p = torch.sigmoid(self.decode(z, ck)).view(len(ex), n, SIDE, SIDE)
        if not params.get("bernoulli", 1.0):
            return p
        return torch.bernoulli(p.cpu(), generator=gen).to(p)  # x ~ p(x | z, c): binary pixels
