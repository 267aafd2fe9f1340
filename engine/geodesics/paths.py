"""What every geodesic solver shares: the discretised path energy and length, and the result type.

E[γ] = Σ_{t=0}^{T-2} ½ (g(x_t) + g(x_{t+1})) · ‖(x_{t+1} − x_t)/Δt‖² Δt,  Δt = 1/(T − 1)
(docs/METHODS.md §3). Solvers (``engine.geodesics.solver``, ``engine.geodesics.interpolant``)
import from here, never from each other.
"""
from __future__ import annotations

import dataclasses

import torch

from engine.geodesics.metrics import Metric


@dataclasses.dataclass
class SolveResult:
    paths: torch.Tensor  # (B, T, d)
    energy: torch.Tensor  # (B,) final path energy
    iters: torch.Tensor  # (B,) iterations used
    converged: torch.Tensor  # (B,) bool
    trace: torch.Tensor | None = None  # (n_iter, B) best energy after each iteration, when recorded


def path_energy(metric: Metric, path: torch.Tensor) -> torch.Tensor:
    """Discretised energy of paths (B, T, d) -> (B,)."""
    dt = 1.0 / (path.shape[1] - 1)
    g = metric.diag(path)  # (B, T, 1 or d)
    v2 = ((path[:, 1:] - path[:, :-1]) / dt) ** 2  # (B, T-1, d)
    return (0.5 * (g[:, 1:] + g[:, :-1]) * v2).sum((1, 2)) * dt


def path_length(metric: Metric, path: torch.Tensor) -> torch.Tensor:
    """Riemannian length Σ sqrt(½ (g_t + g_{t+1}) · Δx²): (B, T, d) -> (B,)."""
    g = metric.diag(path)
    dx2 = (path[:, 1:] - path[:, :-1]) ** 2
    return (0.5 * (g[:, 1:] + g[:, :-1]) * dx2).sum(-1).clamp_min(0).sqrt().sum(-1)
