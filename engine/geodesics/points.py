"""Geodesics between chosen rows of user-supplied latent vectors (.npy / .parquet)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engine.geodesics.data import load_points
from engine.geodesics.metrics import TRUE_METRICS, build_metric
from engine.geodesics.runconfig import RunConfig
from engine.geodesics.solver import SolverConfig, solve
from engine.geodesics.spaces import build_points
from engine.geodesics.threads import cpu_threads


def points_config(**overrides) -> RunConfig:
    """Settings for user points: the characters' latent preset (LAND σ 0.4)."""
    return RunConfig.preset("urc", land_sigma=0.4, **overrides)


def solve_points(file: str | Path, pairs: list[tuple[int, int]], metric: str, steps: int = 50,
                 cfg: RunConfig | None = None,
                 progress: Callable[[str, int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Paths (n_pairs, steps, d) and energies (n_pairs,) between rows i -> j of the file's points."""
    if metric in TRUE_METRICS:
        raise ValueError(f"{metric!r} needs a known density; user points have none")
    x = load_points(file)
    bad = [p for p in pairs if len(p) != 2 or not all(0 <= v < len(x) for v in p)]
    if bad:
        raise ValueError(f"pairs {bad} are not row pairs within 0..{len(x) - 1}")
    cfg = cfg or points_config()
    with cpu_threads():
        space = build_points(x, cfg, progress)
        m = build_metric(metric, space.context(cfg))
        idx = torch.as_tensor(pairs)
        z = space.data
        scfg = SolverConfig(steps=steps, lr=cfg.solver_lr, max_iters=cfg.solver_iters, init=cfg.solver_init,
                            graph_k=cfg.graph_k)
        res = solve(m, z[idx[:, 0]], z[idx[:, 1]], scfg, nodes=z)
    return res.paths.numpy(), res.energy.numpy()
