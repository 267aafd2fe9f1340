"""Relaxed Archetypal SAE (Fel et al. 2025; docs/METHODS.md §5).

Dictionary D = exp(m) (W C + Λ):
- C (c, d): fixed candidate points, k-means centroids of the training data;
- W (m, c): row-stochastic, initialised to the identity; after every optimiser step
  W ← relu(W) / row-sum;
- Λ (m, d): relaxation, each row rescaled after every step so that ‖Λ_i‖ ≤ δ (δ = 0: atoms
  strictly in the convex hull of C);
- m: a learnable scalar.
Encoding is TopK (as the paper pairs it). Each centroid keeps the index of its nearest data row
(``anchor_rows``), so a browser can show the real data points an atom is built from.
"""
from __future__ import annotations

import torch
from torch import nn

from engine.sae.learners import TopKSAE, _unit_rows


def kmeans(x: torch.Tensor, c: int, generator: torch.Generator, iters: int = 25) -> torch.Tensor:
    """Lloyd's k-means of x (N, d) with c centroids, k-means++-free random init; returns (c, d)."""
    xc = x.detach()
    cent = xc[torch.randperm(xc.shape[0], generator=generator)[:c].to(xc.device)].clone()  # (c, d)
    for _ in range(iters):
        assign = torch.cdist(xc, cent).argmin(1)  # (N,)
        sums = torch.zeros_like(cent).index_add_(0, assign, xc)
        counts = torch.bincount(assign, minlength=c).to(xc.dtype)[:, None]
        cent = torch.where(counts > 0, sums / counts.clamp_min(1), cent)
    return cent


def identity_weights(m: int, c: int) -> torch.Tensor:
    """The identity generalised to m ≥ c rows: row i is the one-hot of i mod c, (m, c)."""
    w = torch.zeros(m, c)
    w[torch.arange(m), torch.arange(m) % c] = 1.0
    return w


class ArchetypalSAE(TopKSAE):
    """TopK SAE whose dictionary is exp(m)(W C + Λ) with the constraints above."""

    arch = "archetypal"

    def __init__(self, d: int, atoms: int, k: int, delta: float = 0.1, n_centroids: int | None = None):
        super().__init__(d, atoms, k)
        del self.weight  # the dictionary is built from C, W, Λ
        c = n_centroids or atoms
        self.delta = delta
        self.register_buffer("C", _unit_rows(torch.randn(c, d)))  # (c, d) centroids
        self.register_buffer("anchor_rows", torch.zeros(c, dtype=torch.long))  # nearest data row per centroid
        self.W = nn.Parameter(identity_weights(atoms, c))  # (m, c)
        self.Lambda = nn.Parameter(torch.zeros(atoms, d))  # (m, d)
        self.log_scale = nn.Parameter(torch.zeros(()))  # m

    def dictionary(self) -> torch.Tensor:
        return torch.exp(self.log_scale) * (self.W @ self.C + self.Lambda)  # (m, d)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, generator: torch.Generator) -> None:
        c = min(self.C.shape[0], x.shape[0])
        cent = kmeans(x, c, generator).to(self.C.device)
        self.C = cent
        self.anchor_rows = torch.cdist(cent, x).argmin(1).to(self.C.device)
        self.W.data = identity_weights(self.atoms, c).to(self.C.device)
        self.enc.copy_(_unit_rows(self.dictionary()))
        self.bias.zero_()

    @torch.no_grad()
    def after_step(self) -> None:
        w = torch.relu(self.W)
        self.W.copy_(w / w.sum(1, keepdim=True).clamp_min(1e-8))
        norms = self.Lambda.norm(dim=1, keepdim=True)
        self.Lambda.mul_(torch.clamp(self.delta / norms.clamp_min(1e-12), max=1.0))

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        # C and anchor_rows may have fewer rows than at construction (small data): resize first.
        self.C = torch.empty_like(state["C"])
        self.anchor_rows = torch.empty_like(state["anchor_rows"])
        self.W = nn.Parameter(torch.empty_like(state["W"]))
        return super().load_state_dict(state, strict=strict, assign=assign)

    def anchors(self, top: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """Per atom, the ``top`` largest weights of W and the data rows of those centroids: (m, top) each."""
        val, idx = self.W.detach().topk(min(top, self.W.shape[1]), dim=1)
        return self.anchor_rows[idx], val
