"""Riemannian metrics for geodesics: one interface, a name-keyed registry (docs/METHODS.md §3).

Every metric is diagonal, G(x) = diag(g(x)); conformal metrics return one column,
g(x) = λ(x) (…, 1), diagonal ones (LAND) one value per dimension (…, d). Path energy is
then Σ_t Σ_d g_d(x) v_d² Δt (see ``solver.path_energy``).

Calibration (authors' tutorial): a linear map sends the range of a score over a calibration
set (a grid over the toy window; data plus off-data points for latents) to a target range,
so that λ ≈ 1 on the data and ≈ 10³ off it:
- G_E:   λ = 1 + 1000 (E − E_min) / (E_max − E_min)
- G_1/p: λ = 1 / (α exp(−E) + β), with α exp(−E) + β spanning [1e-3, 1]
- LAND:  g_d = 1 / (α_d M_dd(x) + β_d), M_dd(x) = Σ_n w_n(x) (x_n,d − x_d)², w_n = exp(−‖x − x_n‖² / 2σ²)
- RBF:   λ = 1 / (α h(x) + β), h(x) = Σ_k w_k exp(−λ_k/2 ‖x − c_k‖²), w ≥ 0 fitted so h ≈ 1 on data
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch

EnergyFn = Callable[[torch.Tensor], torch.Tensor]  # (..., d) -> (...)
LAMBDA_MAX = 1000.0
P_FLOOR = 1e-3


class Metric:
    """g(x): (..., d) -> (..., 1) conformal or (..., d) diagonal. ``path`` set for closed-form baselines."""

    name: str = ""
    conformal: bool = True

    def diag(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def path(self, x0: torch.Tensor, x1: torch.Tensor, steps: int) -> torch.Tensor | None:
        """Closed-form path (B, steps, d), or None when the path must be solved for."""
        return None

    def lam(self, x: torch.Tensor) -> torch.Tensor:
        """A scalar per point for heatmaps: λ(x), or the mean of the diagonal (...,)."""
        return self.diag(x).mean(-1)


def linear_map(lo: float, hi: float, target_lo: float, target_hi: float) -> tuple[float, float]:
    """(α, β) with α lo + β = target_lo and α hi + β = target_hi."""
    if hi <= lo:
        raise ValueError(f"calibration range is empty (min {lo} >= max {hi}); the calibration set needs spread")
    a = (target_hi - target_lo) / (hi - lo)
    return a, target_lo - a * lo


def straight_line(x0: torch.Tensor, x1: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, d), (B, d) -> (B, steps, d)."""
    t = torch.linspace(0.0, 1.0, steps, dtype=x0.dtype, device=x0.device)[None, :, None]
    return (1 - t) * x0[:, None] + t * x1[:, None]


def slerp(x0: torch.Tensor, x1: torch.Tensor, steps: int) -> torch.Tensor:
    """Spherical interpolation about the origin, norms interpolated linearly: (B, steps, d)."""
    t = torch.linspace(0.0, 1.0, steps, dtype=x0.dtype, device=x0.device)[None, :, None]
    n0, n1 = x0.norm(dim=-1, keepdim=True), x1.norm(dim=-1, keepdim=True)  # (B, 1)
    u0, u1 = x0 / n0.clamp_min(1e-12), x1 / n1.clamp_min(1e-12)
    omega = torch.arccos((u0 * u1).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))[:, None]  # (B, 1, 1)
    so = torch.sin(omega)
    dirs = (torch.sin((1 - t) * omega) * u0[:, None] + torch.sin(t * omega) * u1[:, None]) / so
    return dirs * ((1 - t) * n0[:, None] + t * n1[:, None])


class Euclidean(Metric):
    name, conformal = "linear", True

    def diag(self, x):
        return torch.ones(*x.shape[:-1], 1, dtype=x.dtype, device=x.device)

    def path(self, x0, x1, steps):
        return straight_line(x0, x1, steps)


class Slerp(Euclidean):
    name = "slerp"

    def path(self, x0, x1, steps):
        return slerp(x0, x1, steps)


class EnergyMetric(Metric):
    """G_E: λ = 1 + 1000 (E − E_min)/(E_max − E_min), clamped at λ >= 1."""

    def __init__(self, energy: EnergyFn, calib: torch.Tensor, name: str = "G_E"):
        self.energy, self.name = energy, name
        with torch.no_grad():
            e = energy(calib)
        self.alpha, self.beta = linear_map(float(e.min()), float(e.max()), 0.0, LAMBDA_MAX)

    def diag(self, x):
        return (1.0 + (self.alpha * self.energy(x) + self.beta).clamp_min(0.0))[..., None]


class InverseDensityMetric(Metric):
    """G_1/p: λ = 1 / (α exp(−E) + β), α exp(−E) + β spanning [1e-3, 1] on the calibration set (floored at 1e-3)."""

    def __init__(self, energy: EnergyFn, calib: torch.Tensor, name: str = "G_1/p"):
        self.energy, self.name = energy, name
        with torch.no_grad():
            e = energy(calib)
        self.e_ref = float(e.min())  # exp(-(E - e_ref)) <= 1 on the calibration set: no overflow
        p = torch.exp(-(e - self.e_ref))
        self.alpha, self.beta = linear_map(float(p.min()), float(p.max()), P_FLOOR, 1.0)

    def diag(self, x):
        p = torch.exp(-(self.energy(x) - self.e_ref))
        return (1.0 / (self.alpha * p + self.beta).clamp_min(P_FLOOR))[..., None]


class LandMetric(Metric):
    """LAND (Arvanitidis et al. 2016): inverse local Gaussian-weighted variance, per dimension."""

    conformal = False

    def __init__(self, reference: torch.Tensor, calib: torch.Tensor, sigma: float, name: str = "LAND"):
        self.ref, self.sigma, self.name = reference, float(sigma), name  # (N, d)
        with torch.no_grad():
            m = torch.cat([self.local_var(c) for c in calib.split(2048)])  # (m, d)
        lo, hi = m.min(0).values, m.max(0).values
        self.alpha = (1.0 - P_FLOOR) / (hi - lo).clamp_min(1e-12)  # (d,)
        self.beta = P_FLOOR - self.alpha * lo

    def local_var(self, x: torch.Tensor) -> torch.Tensor:
        """M_dd(x) = Σ_n w_n(x) (x_n,d − x_d)²: (..., d) -> (..., d), expanded into matrix products."""
        ref = self.ref.to(x)  # (N, d)
        d2 = ((x * x).sum(-1, keepdim=True) - 2 * x @ ref.T + (ref * ref).sum(-1)).clamp_min(0)  # (..., N)
        w = torch.exp(-d2 / (2 * self.sigma**2))
        return w @ (ref * ref) - 2 * x * (w @ ref) + x * x * w.sum(-1, keepdim=True)

    def diag(self, x):
        return 1.0 / (self.alpha.to(x) * self.local_var(x) + self.beta.to(x)).clamp_min(P_FLOOR)


class RBFMetric(Metric):
    """RBF metric (Arvanitidis et al. 2018): K-means centres on all the data, bandwidth from each cluster's spread."""

    def __init__(self, data: torch.Tensor, calib: torch.Tensor, n_centers: int, kappa: float = 1.0,
                 seed: int = 0, name: str = "RBF"):
        from scipy.optimize import nnls
        from sklearn.cluster import KMeans

        self.name = name
        x = data.detach().cpu().double().numpy()
        km = KMeans(n_clusters=n_centers, n_init=4, random_state=seed).fit(x)
        self.centers = torch.as_tensor(km.cluster_centers_, dtype=torch.float32)  # (K, d)
        # λ_k = ½ (κ · mean distance of cluster k's members to c_k)⁻² (Arvanitidis et al. 2018, eq. 16): a member
        # at the mean distance sits at exp(−1/4) in any dimension (a per-dimension variance would give exp(−d/2))
        spread = np.array([np.linalg.norm(x[km.labels_ == k] - km.cluster_centers_[k], axis=1).mean()
                           for k in range(n_centers)])
        self.prec = torch.as_tensor(0.5 / (kappa * np.maximum(spread, 1e-6)) ** 2, dtype=torch.float32)  # λ_k (K,)
        phi = self.features(data.float()).double().cpu().numpy()  # (n, K)
        w, _ = nnls(phi, np.ones(len(x)))
        self.w = torch.as_tensor(w, dtype=torch.float32)
        with torch.no_grad():
            h = self.h(calib)
        self.alpha, self.beta = linear_map(float(h.min()), float(h.max()), P_FLOOR, 1.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """exp(−λ_k/2 ‖x − c_k‖²): (..., d) -> (..., K)."""
        c = self.centers.to(x)  # (K, d)
        d2 = ((x * x).sum(-1, keepdim=True) - 2 * x @ c.T + (c * c).sum(-1)).clamp_min(0)  # (..., K)
        return torch.exp(-0.5 * self.prec.to(x) * d2)

    def h(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x) @ self.w.to(x)

    def diag(self, x):
        return (1.0 / (self.alpha * self.h(x) + self.beta).clamp_min(P_FLOOR))[..., None]


class GridMetric(Metric):
    """A 2-D metric tabulated once on a regular grid, then read by bilinear interpolation of log g.

    For the toy benchmark: every metric (EBM, LAND, RBF, true density) costs one table look-up per
    point during optimisation. Outside ``bounds`` the border value is used.
    """

    def __init__(self, base: Metric, bounds: tuple[float, float, float, float], res: float = 0.05):
        self.base, self.name, self.conformal = base, base.name, base.conformal
        self.lo = torch.tensor([bounds[0], bounds[2]])
        self.hi = torch.tensor([bounds[1], bounds[3]])
        nx, ny = int(round((bounds[1] - bounds[0]) / res)) + 1, int(round((bounds[3] - bounds[2]) / res)) + 1
        gx, gy = torch.meshgrid(torch.linspace(bounds[0], bounds[1], nx), torch.linspace(bounds[2], bounds[3], ny),
                                indexing="xy")  # (ny, nx)
        pts = torch.stack([gx, gy], -1).reshape(-1, 2)
        with torch.no_grad():
            g = torch.cat([base.diag(c) for c in pts.split(8192)])  # (ny * nx, c)
        self.table = g.clamp_min(1e-12).log().T.reshape(1, -1, ny, nx)  # (1, c, ny, nx)

    def diag(self, x):
        lead = x.shape[:-1]
        u = 2 * (x.reshape(1, -1, 1, 2) - self.lo.to(x)) / (self.hi - self.lo).to(x) - 1  # (1, N, 1, 2) in [-1, 1]
        out = torch.nn.functional.grid_sample(self.table.to(x), u, mode="bilinear", padding_mode="border",
                                              align_corners=True)  # (1, c, N, 1)
        return out[0, :, :, 0].T.reshape(*lead, -1).exp()

    def path(self, x0, x1, steps):
        return self.base.path(x0, x1, steps)


@dataclasses.dataclass
class MetricContext:
    """What the metric builders need. ``energy``: learned EBM energy; ``true_energy``: −log p when known."""

    data: torch.Tensor  # (n, d) all the data (RBF fit)
    calib: torch.Tensor  # (m, d) calibration points (grid, or data + off-data points)
    energy: EnergyFn | None = None
    true_energy: EnergyFn | None = None
    land_sigma: float = 1.0
    rbf_centers: int = 30
    seed: int = 0
    reference: torch.Tensor | None = None  # LAND's reference subset (default: all the data)


def _need(fn, what: str, name: str):
    if fn is None:
        raise ValueError(f"metric {name!r} needs {what}; train an EBM first (`geolens geodesics train`) or pick another metric")
    return fn


METRICS: dict[str, Callable[[MetricContext], Metric]] = {
    "linear": lambda c: Euclidean(),
    "slerp": lambda c: Slerp(),
    "G_E": lambda c: EnergyMetric(_need(c.energy, "a trained EBM", "G_E"), c.calib, "G_E"),
    "G_1/p": lambda c: InverseDensityMetric(_need(c.energy, "a trained EBM", "G_1/p"), c.calib, "G_1/p"),
    "LAND": lambda c: LandMetric(c.data if c.reference is None else c.reference, c.calib, c.land_sigma),
    "RBF": lambda c: RBFMetric(c.data, c.calib, c.rbf_centers, seed=c.seed),
    "G_E true": lambda c: EnergyMetric(_need(c.true_energy, "a known density", "G_E true"), c.calib, "G_E true"),
    "G_1/p true": lambda c: InverseDensityMetric(_need(c.true_energy, "a known density", "G_1/p true"), c.calib, "G_1/p true"),
}
TRUE_METRICS = ("G_E true", "G_1/p true")
EBM_METRICS = ("G_E", "G_1/p")


def build_metric(name: str, ctx: MetricContext) -> Metric:
    if name not in METRICS:
        raise ValueError(f"metric {name!r} unknown; choose one of {list(METRICS)}")
    return METRICS[name](ctx)
