"""Where a trained EBM puts its energy on the characters: on the data, on the true rotation loops,
on the straight chords between the same endpoints, and off the data.

The EBM metric G_E can only pull a geodesic onto a rotation loop if the energy is lower on the loop
than on the chord the solver starts from. ``profile`` measures that: quantiles of E over each set
of points and two rank statistics (Mann–Whitney AUCs, 0.5 = no preference):

- ``auc_loop_below_chord``: P(E(loop point) < E(chord point)), interior points of the same pairs;
- ``auc_data_below_off``: P(E(data) < E(off-data point)) (midpoints of different characters, noise).

`geolens geodesics energy --dataset urc [--json]` prints it for the run's own EBM.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import mannwhitneyu


def auc_below(a: np.ndarray, b: np.ndarray) -> float:
    """P(a < b) + ½ P(a = b) for a random a from ``a`` and b from ``b`` (the Mann–Whitney AUC)."""
    u = mannwhitneyu(b, a, alternative="two-sided").statistic  # U of b: pairs with b > a, ties ½
    return float(u / (len(a) * len(b)))


def _summary(e: np.ndarray) -> dict:
    q = np.quantile(e, [0.1, 0.5, 0.9])
    return {"n": int(len(e)), "q10": float(q[0]), "median": float(q[1]), "q90": float(q[2])}


@torch.no_grad()
def profile(energy, data: torch.Tensor, off: torch.Tensor, truth: torch.Tensor) -> dict:
    """``energy``: (..., d) -> (...); data (n, d); off (m, d) off-data points; truth (N, T, d) the true
    paths between pairs of data points (their interiors are the loop points; the chords join the
    same endpoints with T evenly spaced points)."""
    t = torch.linspace(0, 1, truth.shape[1])[1:-1, None]
    chords = (truth[:, :1] * (1 - t) + truth[:, -1:] * t).reshape(-1, truth.shape[-1])
    loops = truth[:, 1:-1].reshape(-1, truth.shape[-1])
    e = {name: energy(x.float()).double().numpy() for name, x in
         (("data", data), ("loops", loops), ("chords", chords), ("off_data", off))}
    out = {name: _summary(v) for name, v in e.items()}
    out["auc_loop_below_chord"] = auc_below(e["loops"], e["chords"])
    out["auc_data_below_off"] = auc_below(e["data"], e["off_data"])
    return out


def for_run(cfg, progress=None) -> dict:
    """The profile of a character run's EBM (``RunConfig`` of urc/brc), on its scored pairs."""
    from engine.geodesics.spaces import off_data, build_space, make_pairs

    space = build_space(cfg, progress)
    if space.kind != "chars":
        raise ValueError(f"the energy profile needs a character set (urc, brc), not {cfg.dataset!r}")
    pairs = make_pairs(space, cfg.n_pairs, cfg.steps, cfg.seed)
    off = off_data(space.data, space.labels, 1000, torch.Generator().manual_seed(cfg.seed + 3))
    out = profile(space.ebm, space.data, off, pairs.truth)
    out.update({"dataset": cfg.dataset, "pairs": int(cfg.n_pairs), "ebm": cfg.ebm_config().to_dict()})
    return out
