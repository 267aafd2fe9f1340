"""Path scores of docs/METHODS.md §3 and the paper's reference numbers.

Toy data (true density p known):
- p_M: mean over path points of p(x) / max p (max over the toy window), higher is better;
- RMSE: sqrt(mean_t ‖γ_t − γ*_t‖²) to the geodesic γ* of the true-density metric, lower is better.
Characters (latent space):
- D-RMSE: sqrt(mean_t min_n ‖γ_t − z_n‖²), distance of path points to the nearest data latent;
- γ*-RMSE: sqrt(mean_t ‖γ_t − γ*_t‖²) to the encoded true rotation path.
"""
from __future__ import annotations

import torch

# Which true-density geodesic each metric's toy RMSE is measured against: the EBM energy metric
# against the true energy metric, every inverse-density-type metric against the true 1/p metric
# (the authors name LAND and RBF "…_invp").
RMSE_REFERENCE = {"G_E": "G_E true", "G_E true": "G_E true"}
DEFAULT_RMSE_REFERENCE = "G_1/p true"

SCORES = {"toy": ("p_M", "RMSE"), "chars": ("D-RMSE", "γ*-RMSE")}
HIGHER_IS_BETTER = {"p_M": True, "RMSE": False, "D-RMSE": False, "γ*-RMSE": False}

# The paper's reported values (docs/METHODS.md §3); None where the paper reports none.
REFERENCE: dict[str, dict[str, dict[str, float | None]]] = {
    "ucg": {
        "G_E": {"p_M": 0.78, "RMSE": 0.12},
        "G_1/p": {"p_M": 0.73, "RMSE": 0.10},
        "LAND": {"p_M": 0.60, "RMSE": 0.38},
        "RBF": {"p_M": 0.61, "RMSE": 0.39},
        "G_E true": {"p_M": 0.79, "RMSE": None},
        "G_1/p true": {"p_M": 0.77, "RMSE": None},
    },
    "urc": {
        "linear": {"D-RMSE": 2.96, "γ*-RMSE": 3.52},
        "G_E": {"D-RMSE": 0.11, "γ*-RMSE": 0.40},
        "G_1/p": {"D-RMSE": 0.14, "γ*-RMSE": 0.44},
        "LAND": {"D-RMSE": 0.66, "γ*-RMSE": 2.39},
        "RBF": {"D-RMSE": 0.36, "γ*-RMSE": 0.86},
    },
}


def reference_value(dataset: str, metric: str, score: str) -> float | None:
    return REFERENCE.get(dataset, {}).get(metric, {}).get(score)


def path_rmse(paths: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """sqrt(mean_t ‖γ_t − γ*_t‖²): (B, T, d), (B, T, d) -> (B,)."""
    return ((paths - ref) ** 2).sum(-1).mean(-1).sqrt()


def mean_density(paths: torch.Tensor, prob, p_max: float) -> torch.Tensor:
    """mean_t p(γ_t) / p_max: (B, T, d) -> (B,)."""
    return prob(paths).mean(-1) / p_max


def nearest_sq_dist(points: torch.Tensor, data: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """min_n ‖x − z_n‖² for points (..., d) against data (n, d) -> (...)."""
    flat = points.reshape(-1, points.shape[-1])
    out = torch.cat([torch.cdist(flat[i:i + chunk].double(), data.double()).min(-1).values ** 2
                     for i in range(0, len(flat), chunk)])
    return out.to(points.dtype).reshape(points.shape[:-1])


def data_rmse(paths: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """D-RMSE per path: sqrt(mean_t min_n ‖γ_t − z_n‖²): (B, T, d) -> (B,)."""
    return nearest_sq_dist(paths, data).mean(-1).sqrt()
