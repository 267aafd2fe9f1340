"""Training losses of the aligned SAE (Iso-Energy paper, docs/METHODS.md §1).

L = MSE(X, X̂) + β · L_align, no L1 term, with X = [X_img; X_txt].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all entries of (n, d)."""
    return (x - x_hat).pow(2).mean()


def mask_top1(z_img: torch.Tensor, z_txt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero, in both codes of each pair, the top-1 atom of z_img and the top-1 atom of z_txt.

    z_img, z_txt: (n, m) codes of the n pairs. Top-1 = largest |z| (codes are non-negative for
    every learner here except rare negative MP picks).
    """
    n = z_img.shape[0]
    keep = torch.ones_like(z_img, dtype=torch.bool)
    rows = torch.arange(n, device=z_img.device)
    keep[rows, z_img.detach().abs().argmax(1)] = False
    keep[rows, z_txt.detach().abs().argmax(1)] = False
    return z_img * keep, z_txt * keep


def alignment_loss(z_img: torch.Tensor, z_txt: torch.Tensor) -> torch.Tensor:
    """L_align = − mean_i cos(z̃_i^I, z̃_i^T) with the top-1 atoms masked (``mask_top1``).

    A pair whose masked codes are all zero contributes cosine 0.
    """
    a, b = mask_top1(z_img, z_txt)
    return -F.cosine_similarity(a, b, dim=1, eps=1e-8).mean()


def sae_loss(x: torch.Tensor, x_hat: torch.Tensor, z: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict]:
    """Loss on a stacked batch: rows [0, n) images, [n, 2n) their captions. Returns (loss, parts)."""
    rec = mse(x, x_hat)
    if beta == 0:
        return rec, {"mse": float(rec.detach())}
    n = x.shape[0] // 2
    align = alignment_loss(z[:n], z[n:])
    return rec + beta * align, {"mse": float(rec.detach()), "align": float(align.detach())}
