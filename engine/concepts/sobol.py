"""Sobol total indices: a quasi-Monte-Carlo design and the Jansen estimator, for any batched function.

Design (Saltelli's A/B/C_i scheme): draw N points of a 2d-dimensional low-discrepancy sequence
on [0, 1]^{2d}; A = first d columns, B = last d; C_i = A with column i taken from B.
The function is evaluated on the N(d+2) rows [A; B; C_1; …; C_d]. Jansen's total index

    S_Ti = Σ_j (f(A_j) − f(C_i,j))² / (2 N Var(f(A)))

(docs/METHODS.md §2; Jansen 1999). ``fn`` may return one output per mask or a batch of outputs
(M, *out), e.g. one per image; indices are then computed for every output at once.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.stats import qmc

from engine.config import check_choice

SAMPLERS = ("sobol", "halton", "random")


def design(d: int, n: int, sampler: str = "sobol", seed: int = 0, scramble: bool = True
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (n, d), B (n, d) and C (d, n, d) with C[i] = A except column i = B[:, i]."""
    check_choice("sampler", sampler, SAMPLERS)
    if d < 1 or n < 2:
        raise ValueError(f"need d ≥ 1 and n ≥ 2, got d={d}, n={n}")
    if sampler == "sobol":
        pts = qmc.Sobol(2 * d, scramble=scramble, seed=seed).random(n)  # n a power of 2 keeps balance
    elif sampler == "halton":
        pts = qmc.Halton(2 * d, scramble=scramble, seed=seed).random(n)
    else:
        pts = np.random.default_rng(seed).random((n, 2 * d))
    a, b = pts[:, :d], pts[:, d:]
    c = np.repeat(a[None], d, axis=0)  # (d, n, d)
    idx = np.arange(d)
    c[idx, :, idx] = b[:, idx].T
    return a, b, c


def stacked(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The N(d+2) evaluation points [A; B; C_1; …; C_d], (N(d+2), d)."""
    return np.concatenate([a, b, c.reshape(-1, a.shape[1])], axis=0)


def jansen_total(f_a: np.ndarray, f_c: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Jansen total indices from f(A) (N, *out) and f(C_i) (d, N, *out) → (d, *out).

    An output with zero variance over A gets index 0 for every input.
    """
    n = f_a.shape[0]
    var = f_a.var(axis=0)  # (*out)
    num = ((f_a[None] - f_c) ** 2).sum(axis=1)  # (d, *out)
    return np.where(var > eps, num / (2.0 * n * np.maximum(var, eps)), 0.0)


def total_indices(fn: Callable[[np.ndarray], np.ndarray], d: int, n: int = 32, sampler: str = "sobol",
                  seed: int = 0, batch: int = 4096) -> np.ndarray:
    """Total Sobol index of each of ``d`` inputs of ``fn`` over the unit cube → (d, *out).

    ``fn`` maps points (M, d) in [0, 1]^d to outputs (M,) or (M, *out); it is called on
    chunks of at most ``batch`` points (N(d+2) points in all).
    """
    a, b, c = design(d, n, sampler, seed)
    pts = stacked(a, b, c)
    out = np.concatenate([np.asarray(fn(pts[i:i + batch]), dtype=np.float64)
                          for i in range(0, len(pts), batch)], axis=0)
    f_a = out[:n]
    f_c = out[2 * n:].reshape(d, n, *out.shape[1:])
    return jansen_total(f_a, f_c)
