"""Batched geodesic solver: minimise the discretised path energy over interior points (docs/METHODS.md §3).

E[γ] = Σ_{t=0}^{T-2} ½ (g(x_t) + g(x_{t+1})) · ‖(x_{t+1} − x_t)/Δt‖² Δt,  Δt = 1/(T − 1),
with g the metric's diagonal (one column for conformal metrics). The trapezoidal weight is the
authors' forward/backward symmetrised energy. Paths start from the straight line and are
optimised by Adam on the T − 2 interior points, many geodesics at once. Every geodesic
has its own step size: a step that raises its energy is rejected (the geodesic returns to its
best path and halves its step), so the recorded energy of every geodesic never increases.
A geodesic stops when its energy fell by less than ``tol`` (relative) over ``window`` iterations.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from engine.config import Config, check_choice, check_positive
from engine.core.registry import Registry
from engine.geodesics.graph import graph_paths
from engine.geodesics.interpolant import solve_neural
from engine.geodesics.metrics import Metric, straight_line
from engine.geodesics.paths import SolveResult, path_energy, path_length  # noqa: F401  (re-exported)

INITS = ("line", "graph")


@dataclasses.dataclass
class SolverConfig(Config):
    steps: int = 50
    """T, points on each path including both endpoints."""
    lr: float = 1e-2
    """Adam step size (per-geodesic maximum; halved on each rejected step)."""
    max_iters: int = 3000
    """Iteration cap."""
    tol: float = 1e-4
    """Converged when the relative energy decrease over ``window`` iterations falls below this."""
    window: int = 50
    """Iterations the convergence test looks back over."""
    batch_size: int = 256
    """Geodesics optimised together (memory bound for data-heavy metrics such as LAND)."""
    method: str = "discrete"
    """'discrete' (free interior points) or 'neural' (the paper's neural interpolant)."""
    init: str = "line"
    """Where the discrete solver starts: 'line' (the paper's straight line) or 'graph' (the metric-weighted
    shortest path through a k-NN graph of data points, ``engine.geodesics.graph``)."""
    graph_k: int = 10
    """Neighbours per data point in the graph start."""

    def validate(self) -> None:
        if self.steps < 3:
            raise ValueError(f"steps must be >= 3 (two endpoints and an interior point), got {self.steps}")
        check_positive("lr", self.lr)
        check_positive("max_iters", self.max_iters)
        check_positive("tol", self.tol, allow_zero=True)
        check_positive("window", self.window)
        check_positive("batch_size", self.batch_size)
        check_choice("method", self.method, SOLVERS.names())
        check_choice("init", self.init, INITS)
        check_positive("graph_k", self.graph_k)
        if self.init == "graph" and self.method != "discrete":
            raise ValueError("the graph start is for the discrete solver; use method='discrete' or the line start")


def _solve_chunk(metric: Metric, x0, x1, cfg: SolverConfig, init, record: bool, tick) -> SolveResult:
    b = x0.shape[0]
    path0 = straight_line(x0, x1, cfg.steps) if init is None else init.clone()
    x = path0[:, 1:-1].detach().clone()  # (B, T-2, d) interior points
    best_x, best_e = x.clone(), torch.full((b,), float("inf"), dtype=x.dtype, device=x.device)
    best_g = torch.zeros_like(x)
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    k = torch.zeros(b, dtype=x.dtype, device=x.device)  # Adam step count per geodesic
    lr = torch.full((b,), cfg.lr, dtype=x.dtype, device=x.device)
    active = torch.ones(b, dtype=torch.bool, device=x.device)
    iters = torch.zeros(b, dtype=torch.long, device=x.device)
    history, trace = [], []
    b1, b2, eps = 0.9, 0.999, 1e-8
    ends0, ends1 = x0[:, None], x1[:, None]
    for it in range(cfg.max_iters):
        # only the geodesics still moving are evaluated (each path's energy is its own: the others'
        # values stay as they were, and the masks below never touch them)
        idx = active.nonzero().squeeze(1)
        xr = x[idx].clone().requires_grad_(True)
        e_a = path_energy(metric, torch.cat([ends0[idx], xr, ends1[idx]], dim=1))  # (A,)
        (grad_a,) = torch.autograd.grad(e_a.sum(), xr)
        e, grad = best_e.clone(), torch.zeros_like(x)
        e[idx], grad[idx] = e_a.detach(), grad_a
        with torch.no_grad():
            better = active & (e < best_e)
            worse = active & ~better
            best_x[better], best_e[better], best_g[better] = x[better], e[better], grad[better]
            lr[worse] *= 0.5
            lr[better] = torch.minimum(lr[better] * 1.05, torch.full_like(lr[better], cfg.lr))
            # accepted: the usual Adam moment update. Rejected: back to the best path, half the step, and
            # restart the moments from the gradient there (a sign-gradient step, always a descent direction)
            sel, rej = better[:, None, None], worse[:, None, None]
            m = torch.where(sel, b1 * m + (1 - b1) * grad, torch.where(rej, (1 - b1) * best_g, m))
            v = torch.where(sel, b2 * v + (1 - b2) * grad**2, torch.where(rej, (1 - b2) * best_g**2, v))
            k = torch.where(better, k + 1, torch.where(worse, torch.ones_like(k), k))
            kk = k.clamp_min(1)[:, None, None]
            step = lr[:, None, None] * (m / (1 - b1**kk)) / ((v / (1 - b2**kk)).sqrt() + eps)
            x = torch.where(active[:, None, None], best_x - step, x)
            iters += active.long()
            history.append(best_e.clone())
            if record:
                trace.append(best_e.clone())
            if it >= cfg.window:
                old = history[-cfg.window - 1]
                rel = (old - best_e) / best_e.abs().clamp_min(1e-12)
                active &= ~((rel < cfg.tol) | (lr < cfg.lr * 1e-6))
                history = history[-cfg.window - 1:]
            if tick is not None:
                tick(1)
            if not active.any():
                break
    with torch.no_grad():
        paths = torch.cat([ends0, best_x, ends1], dim=1)
        energy = path_energy(metric, paths)
    return SolveResult(paths, energy, iters, ~active, torch.stack(trace) if record else None)


def solve(metric: Metric, x0: torch.Tensor, x1: torch.Tensor, cfg: SolverConfig | None = None, *,
          init: torch.Tensor | None = None, nodes: torch.Tensor | None = None, record: bool = False,
          progress: Callable[[int], None] | None = None) -> SolveResult:
    """Geodesics between rows of x0 (B, d) and x1 (B, d) under ``metric``.

    Closed-form baselines (linear, slerp) return their path directly. ``init`` (B, T, d) replaces
    the straight-line start; with ``cfg.init == 'graph'`` the start is the shortest path through ``nodes``
    (N, d), the data points; ``record`` keeps the per-iteration energies; ``progress(n)`` is called
    with the number of iterations done, chunk by chunk.
    """
    cfg = cfg or SolverConfig()
    if x0.shape != x1.shape or x0.ndim != 2:
        raise ValueError(f"endpoints must both be (B, d), got {tuple(x0.shape)} and {tuple(x1.shape)}")
    closed = metric.path(x0, x1, cfg.steps)
    if closed is not None:
        with torch.no_grad():
            e = path_energy(metric, closed)
        b = x0.shape[0]
        return SolveResult(closed, e, torch.zeros(b, dtype=torch.long), torch.ones(b, dtype=torch.bool))
    if cfg.init == "graph" and init is None:
        if nodes is None:
            raise ValueError("the graph start needs the data points: pass nodes=(N, d) or use init='line'")
        init = graph_paths(metric, x0, x1, nodes, cfg.steps, cfg.graph_k)
    if cfg.method != "discrete":
        return SOLVERS.get(cfg.method)(metric, x0, x1, cfg, progress=progress)
    return solve_discrete(metric, x0, x1, cfg, init=init, record=record, progress=progress)


def solve_discrete(metric: Metric, x0: torch.Tensor, x1: torch.Tensor, cfg: SolverConfig, *,
                   init: torch.Tensor | None = None, record: bool = False,
                   progress: Callable[[int], None] | None = None) -> SolveResult:
    """Free interior points, optimised chunk by chunk (``cfg.batch_size`` geodesics at a time)."""
    parts = []
    for s in range(0, x0.shape[0], cfg.batch_size):
        sl = slice(s, s + cfg.batch_size)
        parts.append(_solve_chunk(metric, x0[sl], x1[sl], cfg, None if init is None else init[sl], record, progress))
    trace = None
    if record:
        n = max(p.trace.shape[0] for p in parts)
        trace = torch.cat([torch.cat([p.trace, p.trace[-1:].expand(n - p.trace.shape[0], -1)]) for p in parts], dim=1)
    return SolveResult(torch.cat([p.paths for p in parts]), torch.cat([p.energy for p in parts]),
                       torch.cat([p.iters for p in parts]), torch.cat([p.converged for p in parts]), trace)


SOLVERS: Registry[Callable[..., SolveResult]] = Registry("geodesic solver")
"""Name -> solver ``(metric, x0, x1, cfg, *, progress) -> SolveResult``; names are ``SolverConfig.method`` choices."""
SOLVERS.add("discrete", solve_discrete)
SOLVERS.add("neural", solve_neural)
METHODS = tuple(SOLVERS.names())
