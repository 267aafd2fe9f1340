"""A one-shot neural-statistician VAE (Edwards & Storkey 2017; VAE-NS in Boutin et al. 2022).

Generative model for a class context c and a drawing x, given the exemplar e:
    p(c) = N(0, I),  p(z | c) = N(μ_p(c), σ_p(c)²),  p(x | z, c, e) = Bernoulli(dec(z, c, e)).
Two departures from the original statistician, both forced by the CPU budget (a few hundred
steps): the decoder also sees e itself (concatenated at full resolution before its last two
convolutions), and samples are binarised keeping the exemplar's ink count (``ink_binarise``).
Measured without them: BCE plateau ≈ 600 nats, no pixel above 0.5 after 300 steps, so the
Bernoulli means of every sample binarised at 0.5 to a blank image.
Inference: q(c | exemplar) from the shared image encoder, q(z | x, c).
Training (one-shot): context = one drawing of a class, targets = K other drawings of it;
    loss = BCE(x, dec(z, c, e)) + β · (KL(q(z|x,c) ‖ p(z|c)) + KL(q(c|e) ‖ p(c)) / K).
Sampling from an exemplar: c = mean of q(c | e), z ~ p(z | c), x = dec(z, c, e) probabilities.
β is the swept hyper-parameter.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.config import Config, check_positive


@dataclasses.dataclass
class VAEConfig(Config):
    """Size and training of the neural-statistician VAE."""

    beta: float = 1.0
    """Weight of the KL terms (the swept hyper-parameter)."""
    c_dim: int = 32
    z_dim: int = 16
    hidden: int = 256
    channels: int = 16
    """Conv channels of the first encoder block (then 2×, 2×); the decoder mirrors them."""
    steps: int = 150
    batch_classes: int = 16
    targets_per_class: int = 3
    lr: float = 1e-3
    seed: int = 0

    def validate(self) -> None:
        check_positive("beta", self.beta, allow_zero=True)
        for name in ("c_dim", "z_dim", "hidden", "steps", "batch_classes", "targets_per_class"):
            check_positive(name, getattr(self, name))


def _gauss(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu, logvar = h.chunk(2, dim=-1)
    return mu, logvar.clamp(-8, 8)


def kl_gauss(mu_q, lv_q, mu_p, lv_p) -> torch.Tensor:
    """KL(N(mu_q, e^lv_q) ‖ N(mu_p, e^lv_p)) summed over the last dim: (..., d) -> (...)."""
    return 0.5 * (lv_p - lv_q + (lv_q.exp() + (mu_q - mu_p) ** 2) / lv_p.exp() - 1).sum(-1)


class NeuralStatistician(nn.Module):
    """Encoder (B, 1, 50, 50) -> hidden; heads for q(c|e), p(z|c), q(z|x,c); decoder -> (B, 1, 50, 50) logits."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        h, k = cfg.hidden, cfg.channels
        self.k2 = 2 * k
        self.enc = nn.Sequential(  # (B, 1, 50, 50) -> avg-pool 25 -> 13 -> 7 -> (B, h)
            nn.AvgPool2d(2), nn.Conv2d(1, k, 3, 2, 1), nn.ReLU(), nn.Conv2d(k, 2 * k, 3, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(2 * k * 7 * 7, h), nn.ReLU())
        self.q_c = nn.Linear(h, 2 * cfg.c_dim)
        self.p_z = nn.Sequential(nn.Linear(cfg.c_dim, h), nn.ReLU(), nn.Linear(h, 2 * cfg.z_dim))
        self.q_z = nn.Sequential(nn.Linear(h + cfg.c_dim, h), nn.ReLU(), nn.Linear(h, 2 * cfg.z_dim))
        self.dec_fc = nn.Sequential(nn.Linear(cfg.z_dim + cfg.c_dim, h), nn.ReLU(), nn.Linear(h, 2 * k * 7 * 7), nn.ReLU())
        self.dec = nn.Sequential(  # 7 -> 13 -> 25
            nn.ConvTranspose2d(2 * k, k, 3, 2, 1), nn.ReLU(), nn.ConvTranspose2d(k, k, 3, 2, 1), nn.ReLU())
        self.out = nn.Sequential(  # [features upsampled to 50; exemplar] -> logits
            nn.Conv2d(k + 1, k, 3, 1, 1), nn.ReLU(), nn.Conv2d(k, 1, 3, 1, 1))

    def decode(self, z: torch.Tensor, c: torch.Tensor, exemplar: torch.Tensor) -> torch.Tensor:
        """z (B, z), c (B, c), exemplar (B, 1, 50, 50) -> (B, 1, 50, 50) logits."""
        h = self.dec(self.dec_fc(torch.cat([z, c], -1)).view(-1, self.k2, 7, 7))  # (B, k, 25, 25)
        h = F.interpolate(h, size=exemplar.shape[-2:], mode="bilinear", align_corners=False)
        return self.out(torch.cat([h, exemplar], 1))

    def loss(self, exemplar: torch.Tensor, targets: torch.Tensor, beta: float) -> torch.Tensor:
        """exemplar (B, 1, 50, 50), targets (B, K, 1, 50, 50) -> scalar loss per drawing."""
        b, k = targets.shape[:2]
        mu_c, lv_c = _gauss(self.q_c(self.enc(exemplar)))  # (B, c)
        c = mu_c + (0.5 * lv_c).exp() * torch.randn_like(mu_c)
        ck = c.repeat_interleave(k, 0)  # (B*K, c)
        ek = exemplar.repeat_interleave(k, 0)  # (B*K, 1, 50, 50)
        xt = targets.flatten(0, 1)  # (B*K, 1, 50, 50)
        mu_q, lv_q = _gauss(self.q_z(torch.cat([self.enc(xt), ck], -1)))
        z = mu_q + (0.5 * lv_q).exp() * torch.randn_like(mu_q)
        mu_p, lv_p = _gauss(self.p_z(ck))
        rec = F.binary_cross_entropy_with_logits(self.decode(z, ck, ek), xt, reduction="none").flatten(1).sum(1)
        kl_z = kl_gauss(mu_q, lv_q, mu_p, lv_p)
        kl_c = kl_gauss(mu_c, lv_c, torch.zeros_like(mu_c), torch.zeros_like(lv_c)).repeat_interleave(k, 0) / k
        return (rec + beta * (kl_z + kl_c)).mean()

    @torch.no_grad()
    def sample(self, exemplars: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
        """exemplars (C, 1, 50, 50) -> (C, n, 50, 50) Bernoulli means."""
        mu_c, _ = _gauss(self.q_c(self.enc(exemplars)))
        ck = mu_c.repeat_interleave(n, 0)  # (C*n, c)
        mu_p, lv_p = _gauss(self.p_z(ck))
        z = mu_p + (0.5 * lv_p).exp() * torch.randn(mu_p.shape, generator=gen).to(mu_p)
        return torch.sigmoid(self.decode(z, ck, exemplars.repeat_interleave(n, 0))).view(len(exemplars), n, *exemplars.shape[-2:])


def ink_binarise(p: torch.Tensor, exemplars: torch.Tensor) -> torch.Tensor:
    """Binarise probabilities (C, n, H, W) keeping, per image, as many ink pixels as its exemplar (C, 1, H, W)."""
    c, n = p.shape[:2]
    flat = p.reshape(c, n, -1)  # (C, n, HW)
    k = exemplars.reshape(c, 1, -1).sum(-1, keepdim=True).long().clamp(min=1)  # (C, 1, 1)
    kth = flat.sort(dim=-1, descending=True).values.gather(-1, (k - 1).expand(c, n, 1))  # (C, n, 1)
    return (flat >= kth).float().reshape(p.shape)


def train_vae(x: np.ndarray, y: np.ndarray, cfg: VAEConfig, device: torch.device, progress=None) -> NeuralStatistician:
    """Train on (N, 50, 50) ink images with labels (N,): one-shot context -> K targets of the same class."""
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    net = NeuralStatistician(cfg).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    data = torch.from_numpy(x).unsqueeze(1)
    k = cfg.targets_per_class
    by_class = [torch.from_numpy(np.flatnonzero(y == c)) for c in np.unique(y)]
    by_class = [ix for ix in by_class if len(ix) >= 1 + k]
    if not by_class:
        raise ValueError(f"VAE training needs classes with >= {1 + k} drawings")
    for step in range(cfg.steps):
        cls = torch.randint(len(by_class), (cfg.batch_classes,), generator=gen)
        picks = torch.stack([by_class[c][torch.randperm(len(by_class[c]), generator=gen)[:1 + k]] for c in cls.tolist()])
        ex, tg = data[picks[:, 0]].to(device), data[picks[:, 1:]].to(device)  # (B,1,50,50), (B,K,1,50,50)
        loss = net.loss(ex, tg, cfg.beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress:
            progress(step + 1, cfg.steps, loss.item())
    return net.eval()
