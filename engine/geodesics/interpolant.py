"""The paper's neural interpolant: x_t = (1 − t) x0 + t x1 + 2 t (1 − t) φ(x0, x1, t).

φ is a small MLP trained to minimise the mean discretised path energy over the given endpoint
pairs, so one network amortises all their geodesics. The endpoints are met exactly for any φ.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from engine.geodesics.metrics import Metric
from engine.geodesics.paths import SolveResult, path_energy

if TYPE_CHECKING:
    from engine.geodesics.solver import SolverConfig


class Interpolant(nn.Module):
    def __init__(self, dim: int, width: int = 128):
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(2 * dim + 1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, dim))
        nn.init.zeros_(self.phi[-1].weight)  # start from the straight line
        nn.init.zeros_(self.phi[-1].bias)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor, steps: int) -> torch.Tensor:
        """(B, d), (B, d) -> paths (B, steps, d)."""
        b, d = x0.shape
        t = torch.linspace(0.0, 1.0, steps, dtype=x0.dtype, device=x0.device)[None, :, None].expand(b, steps, 1)
        a, c = x0[:, None].expand(b, steps, d), x1[:, None].expand(b, steps, d)
        phi = self.phi(torch.cat([a, c, t], dim=-1))  # (B, steps, d)
        return (1 - t) * a + t * c + 2 * t * (1 - t) * phi


def solve_neural(metric: Metric, x0: torch.Tensor, x1: torch.Tensor, cfg: SolverConfig,
                 progress: Callable[[int], None] | None = None, seed: int = 0) -> SolveResult:
    """Train one interpolant on all pairs (Adam, ``cfg.lr``, up to ``cfg.max_iters``), mean-energy convergence test."""
    torch.manual_seed(seed)
    net = Interpolant(x0.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=min(cfg.lr, 1e-3))
    hist: list[float] = []
    it = 0
    for it in range(cfg.max_iters):
        e = path_energy(metric, net(x0, x1, cfg.steps)).mean()
        opt.zero_grad(set_to_none=True)
        e.backward()
        opt.step()
        hist.append(float(e.detach()))
        if progress is not None:
            progress(1)
        if it >= cfg.window and (hist[-cfg.window - 1] - hist[-1]) / max(abs(hist[-1]), 1e-12) < cfg.tol:
            break
    with torch.no_grad():
        paths = net(x0, x1, cfg.steps)
        energy = path_energy(metric, paths)
    b = x0.shape[0]
    done = torch.full((b,), it + 1 < cfg.max_iters, dtype=torch.bool)
    return SolveResult(paths, energy, torch.full((b,), it + 1, dtype=torch.long), done)
