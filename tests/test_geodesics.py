"""Geodesics engine: solver on closed-form geodesics, metric formulas, data, scores, models."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.geodesics import data as D
from engine.geodesics.ebm import EBMConfig, EnergyMLP, dsm_loss, langevin, train_ebm
from engine.geodesics.graph import graph_paths
from engine.geodesics.metrics import (METRICS, EnergyMetric, Euclidean, InverseDensityMetric, LandMetric, Metric,
                                      MetricContext, RBFMetric, build_metric, linear_map, slerp, straight_line)
from engine.geodesics.scores import data_rmse, mean_density, path_rmse
from engine.geodesics.runconfig import RunConfig
from engine.geodesics.solver import SolverConfig, path_energy, solve

torch.set_num_threads(1)


class Hyperbolic(Metric):
    """Upper half-plane: λ(x) = 1 / x₂²; geodesics are arcs of circles centred on the x-axis."""

    def diag(self, x):
        return 1.0 / x[..., 1:2] ** 2


class Quadratic(torch.nn.Module):
    """E(z) = ½‖z‖² in standardised coordinates, for the sampler test."""

    def forward_std(self, z):
        return 0.5 * (z**2).sum(-1)


# ------------------------------------------------------------------ solver
def test_path_energy_hand_computed():
    class Lam(Metric):
        def diag(self, x):
            return 1.0 + x[..., :1]  # λ = 1 + x₁

    path = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 2.0]]])  # T = 3, Δt = ½
    # segment 1: ½(1 + 2) · (1/½)² · ½ = 3;  segment 2: ½(2 + 2) · (2/½)² · ½ = 16
    assert path_energy(Lam(), path).item() == pytest.approx(19.0)


def test_flat_metric_gives_straight_line_from_a_bent_start():
    class Flat(Metric):  # λ ≡ 1 without the closed-form shortcut of the "linear" baseline
        def diag(self, x):
            return torch.ones_like(x[..., :1])

    x0 = torch.tensor([[0.0, 0.0], [1.0, -2.0]], dtype=torch.float64)
    x1 = torch.tensor([[3.0, 1.0], [-1.0, 4.0]], dtype=torch.float64)
    line = straight_line(x0, x1, 20)
    bump = torch.sin(torch.linspace(0, math.pi, 20, dtype=torch.float64))[None, :, None]
    bent = line + bump * torch.tensor([0.7, -0.5], dtype=torch.float64)
    res = solve(Flat(), x0, x1, SolverConfig(steps=20, lr=5e-2, max_iters=4000, tol=1e-12), init=bent)
    assert (res.paths - line).abs().max() < 1e-3
    assert res.energy == pytest.approx(((x1 - x0) ** 2).sum(-1), rel=1e-6)  # E = ‖x1 − x0‖² for unit time
    straight = solve(Euclidean(), x0, x1, SolverConfig(steps=20))  # the baseline's closed form
    assert torch.allclose(straight.paths, line)


def test_hyperbolic_geodesics_are_circular_arcs():
    x0 = torch.tensor([[-1.0, 1.0], [-2.0, 0.5]])
    x1 = torch.tensor([[1.0, 1.0], [1.0, 2.0]])
    res = solve(Hyperbolic(), x0, x1, SolverConfig(steps=50, lr=1e-2, max_iters=6000, tol=1e-8), record=True)
    assert res.converged.all()
    for b in range(2):
        a, c = x0[b], x1[b]
        centre = ((c**2).sum() - (a**2).sum()) / (2 * (c[0] - a[0]))  # on the x-axis, equidistant from both ends
        radius = torch.sqrt((a[0] - centre) ** 2 + a[1] ** 2)
        p = res.paths[b]
        dist = torch.sqrt((p[:, 0] - centre) ** 2 + p[:, 1] ** 2)
        assert (dist - radius).abs().max() < 1e-2 * radius
        # the minimal energy of a unit-time path is the squared hyperbolic distance
        d_h = math.acosh(1 + float(((a - c) ** 2).sum()) / (2 * float(a[1]) * float(c[1])))
        assert res.energy[b].item() == pytest.approx(d_h**2, rel=5e-3)
    # energy decreases monotonically to convergence and the reported value is the path's energy
    tr = res.trace
    assert (tr[1:] <= tr[:-1]).all()
    assert (tr[0] - tr[-1] > 0.1 * tr[0]).all()
    assert torch.allclose(res.energy, path_energy(Hyperbolic(), res.paths))
    assert torch.allclose(tr[-1], res.energy, rtol=1e-5)


def test_batched_equals_one_at_a_time():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 2, generator=gen) * 2 - 1 + torch.tensor([0.0, 2.0])
    x1 = torch.rand(6, 2, generator=gen) * 2 - 1 + torch.tensor([0.0, 2.0])
    cfg = SolverConfig(steps=12, lr=1e-2, max_iters=300)
    batched = solve(Hyperbolic(), x0, x1, cfg)
    single = [solve(Hyperbolic(), x0[i:i + 1], x1[i:i + 1], cfg) for i in range(6)]
    assert torch.allclose(batched.paths, torch.cat([s.paths for s in single]), atol=1e-5)
    assert torch.equal(batched.iters, torch.cat([s.iters for s in single]))


def test_neural_interpolant_finds_the_hyperbolic_arc():
    x0, x1 = torch.tensor([[-1.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    res = solve(Hyperbolic(), x0, x1, SolverConfig(steps=30, lr=1e-3, max_iters=1500, tol=1e-7, method="neural"))
    assert (res.paths[0, 0] - x0[0]).abs().max() < 1e-6 and (res.paths[0, -1] - x1[0]).abs().max() < 1e-6
    assert (res.paths[0].norm(dim=-1) - math.sqrt(2)).abs().max() < 2e-2
    assert res.energy.item() < path_energy(Hyperbolic(), straight_line(x0, x1, 30)).item()


def test_solver_config_rejects_bad_values():
    with pytest.raises(ValueError, match="steps"):
        SolverConfig(steps=2)
    with pytest.raises(ValueError, match="method"):
        SolverConfig(method="shooting")


# ------------------------------------------------------------------ metrics
def test_linear_map_and_calibrated_ranges():
    assert linear_map(2.0, 4.0, 0.0, 1000.0) == pytest.approx((500.0, -1000.0))
    calib = torch.linspace(-2, 2, 41)[:, None]
    energy = lambda x: (x**2).sum(-1)  # E ∈ [0, 4] on the calibration set
    g_e = EnergyMetric(energy, calib)
    lam = g_e.diag(calib)[:, 0]
    assert lam.min().item() == pytest.approx(1.0) and lam.max().item() == pytest.approx(1001.0)
    assert g_e.diag(torch.tensor([[1.0]])).item() == pytest.approx(1 + 1000 * 1 / 4)
    g_p = InverseDensityMetric(energy, calib)
    lam = g_p.diag(calib)[:, 0]
    assert lam.min().item() == pytest.approx(1.0, rel=1e-5) and lam.max().item() == pytest.approx(1000.0, rel=1e-4)
    p = math.exp(-1.0)  # at x = 1: p_n = α e^{-1} + β with α, β mapping [e^{-4}, 1] -> [1e-3, 1]
    a = (1 - 1e-3) / (1 - math.exp(-4))
    assert g_p.diag(torch.tensor([[1.0]])).item() == pytest.approx(1 / (a * p + 1e-3 - a * math.exp(-4)), rel=1e-4)


def test_land_local_variance_matches_direct_sum():
    gen = torch.Generator().manual_seed(1)
    ref, x = torch.randn(30, 3, generator=gen), torch.randn(5, 4, 3, generator=gen)
    calib = torch.randn(50, 3, generator=gen)
    land = LandMetric(ref, calib, sigma=0.7)
    direct = np.zeros((5, 4, 3))
    for idx in np.ndindex(5, 4):
        diff = ref.numpy() - x[idx].numpy()
        w = np.exp(-(diff**2).sum(1) / (2 * 0.49))
        direct[idx] = (w[:, None] * diff**2).sum(0)
    assert np.allclose(land.local_var(x).numpy(), direct, atol=1e-4)
    assert land.diag(x).shape == (5, 4, 3)
    g = land.diag(calib)  # calibrated: each dimension spans [1, 1000] over the calibration set
    assert torch.allclose(g.min(0).values, torch.ones(3), rtol=1e-4)
    assert torch.allclose(g.max(0).values, torch.full((3,), 1000.0), rtol=1e-3)


def test_rbf_is_one_on_data_and_large_off_it():
    mix = D.toy_mixture("ucg")
    data = mix.sample(600, torch.Generator().manual_seed(0))
    _, _, grid = D.grid(nx=40, ny=25)
    rbf = RBFMetric(data, grid, n_centers=20)
    assert rbf.h(data).mean().item() == pytest.approx(1.0, abs=0.25)
    on, off = rbf.diag(torch.tensor([[0.0, 8.0]])).item(), rbf.diag(torch.tensor([[0.0, 0.0]])).item()
    assert on < 5 and off > 500


def test_rbf_bandwidth_is_arvanitidis_and_dimension_free():
    # one cluster: the four points (±2, 0, …), (0, ±2, …) around the origin, mean distance 2
    # -> λ = ½ (κ·2)⁻² = 1/8, and a point at distance 2 from the centre has feature exp(−λ/2 · 4) = exp(−1/4)
    for d in (2, 64):
        pts = torch.zeros(4, d)
        pts[0, 0], pts[1, 0], pts[2, 1], pts[3, 1] = 2.0, -2.0, 2.0, -2.0
        rbf = RBFMetric(pts, torch.cat([pts, torch.full((1, d), 9.0)]), n_centers=1)
        assert rbf.prec.item() == pytest.approx(1 / 8)
        assert rbf.features(pts).squeeze(-1) == pytest.approx(torch.full((4,), math.exp(-0.25)), rel=1e-5)


class _HalfPlane(Metric):
    """λ = 1000 where y > 0, 1 elsewhere (conformal)."""

    def diag(self, x):
        return torch.where(x[..., 1:2] > 0, 1000.0, 1.0)


def _circle(n: int) -> torch.Tensor:
    a = torch.linspace(0, 2 * math.pi, n + 1)[:-1]
    return torch.stack([a.cos(), a.sin()], -1)


def test_graph_init_follows_the_data_arc_evenly():
    # nodes on the unit circle, endpoints (1, 0) and (-1, 0); under λ ≡ 1 both half circles tie, and the path
    # must stay on the circle (2 neighbours: only arc edges), evenly spaced: point t at angle ±π t
    nodes = _circle(200)
    x0, x1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 0.0]])
    p = graph_paths(Euclidean(), x0, x1, nodes, 11, k=2)[0]
    assert torch.allclose(p.norm(dim=-1), torch.ones(11), atol=2e-4)
    ang = torch.atan2(p[:, 1], p[:, 0]).abs()
    assert torch.allclose(ang, torch.linspace(0, math.pi, 11), atol=0.02)


def test_graph_init_takes_the_cheap_half_and_keeps_the_line_when_disconnected():
    far = torch.tensor([100.0, 0.0])
    nodes = torch.cat([_circle(200), _circle(200) + far])  # two circles no 2-NN edge joins
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    x0, x1 = torch.tensor([[c, s], [1.0, 0.0]]), torch.tensor([[-c, s], [99.0, 0.0]])
    p = graph_paths(_HalfPlane(), x0, x1, nodes, 21, k=2)
    # 30° -> 150°: the short upper arc costs √1000 · 2π/3 ≈ 66, the long way under y = 0 costs 2 · √1000 · π/6 + π ≈ 36.
    # Evenly spaced in metric length, the midpoint (length 18) lies 90° down the lower half: (0, -1)
    assert p[0, 10].tolist() == pytest.approx([0.0, -1.0], abs=0.05)
    assert torch.allclose(p[1], straight_line(x0[1:], x1[1:], 21)[0])  # no path through the graph


def test_graph_init_is_refused_for_the_neural_solver():
    with pytest.raises(ValueError, match="method='discrete'"):
        RunConfig.preset("ucg", small=True, solver_init="graph", method="neural")
    with pytest.raises(ValueError, match="solver_init"):
        RunConfig.preset("ucg", small=True, solver_init="spline")


def test_slerp_keeps_the_circle():
    a = math.radians(160.0)
    x0, x1 = torch.tensor([[8.0, 0.0]]), torch.tensor([[8 * math.cos(a), 8 * math.sin(a)]])
    p = slerp(x0, x1, 11)
    assert torch.allclose(p.norm(dim=-1), torch.full((1, 11), 8.0), atol=1e-4)
    mid = math.radians(80.0)
    assert torch.allclose(p[0, 5], torch.tensor([8 * math.cos(mid), 8 * math.sin(mid)]), atol=1e-4)


def test_every_registered_metric_honours_the_interface():
    mix = D.toy_mixture("ucg")
    data = mix.sample(300, torch.Generator().manual_seed(0))
    _, _, grid = D.grid(nx=30, ny=20)
    ctx = MetricContext(data, grid, energy=mix.energy, true_energy=mix.energy, rbf_centers=8)
    x = torch.randn(3, 7, 2) * 4
    for name in METRICS:
        m = build_metric(name, ctx)
        g = m.diag(x)
        assert g.shape[:-1] == (3, 7) and g.shape[-1] in (1, 2), name
        assert torch.isfinite(g).all() and (g > 0).all(), name
    with pytest.raises(ValueError, match="choose one of"):
        build_metric("nope", ctx)
    with pytest.raises(ValueError, match="train an EBM"):
        build_metric("G_E", MetricContext(data, grid))


# ------------------------------------------------------------------ data
def test_toy_mixture_density_matches_scipy():
    from scipy.stats import multivariate_normal

    mix = D.toy_mixture("wcg")
    pts = torch.tensor([[0.0, 8.0], [3.0, 2.0], [-8.0, 0.5]])
    w = D.toy_weights("wcg")
    ref = sum(w[k] * multivariate_normal(mix.means[k].numpy(), np.eye(2)).pdf(pts.numpy()) for k in range(200))
    assert np.allclose(mix.prob(pts).numpy(), ref, rtol=1e-4)
    assert w.max() / w.min() == pytest.approx(30.0) and np.allclose(D.toy_weights("ucg"), 1 / 200)


def test_characters_render_and_rotate():
    img = D.render_character("G")
    assert img.shape == (32, 32) and img.max() > 0.9 and img[0].max() == 0
    rot = D.rotate_images(img, np.array([0.0, 90.0]))
    assert np.allclose(rot[0], img, atol=1e-2)
    assert np.allclose(rot[1], np.rot90(img), atol=0.6) and np.abs(rot[1] - np.rot90(img)).mean() < 0.05
    assert np.allclose(D.rotation_path_angles(170.0, -170.0, 3), [170.0, 180.0, 190.0])
    imgs, labels, angles = D.rotated_characters("brc", 20, seed=0)
    assert imgs.shape == (140, 32, 32) and set(labels) == set(range(7)) and np.abs(angles).mean() < 40


def test_load_points(tmp_path):
    import pandas as pd

    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "p.npy", x)
    pd.DataFrame(x, columns=list("abc")).to_parquet(tmp_path / "p.parquet")
    assert np.array_equal(D.load_points(tmp_path / "p.npy"), x)
    assert np.array_equal(D.load_points(tmp_path / "p.parquet"), x)
    np.save(tmp_path / "bad.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(n >= 2, d\)"):
        D.load_points(tmp_path / "bad.npy")
    with pytest.raises(FileNotFoundError):
        D.load_points(tmp_path / "missing.npy")


# ------------------------------------------------------------------ scores
def test_scores_hand_computed():
    paths = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]])
    ref = torch.tensor([[[0.0, 0.0], [1.0, 2.0]]])
    assert path_rmse(paths, ref).item() == pytest.approx(math.sqrt(2.0))  # sqrt((0 + 4) / 2)
    data = torch.tensor([[0.0, 1.0], [1.0, 3.0]])
    assert data_rmse(paths, data).item() == pytest.approx(math.sqrt((1.0 + 2.0) / 2))  # nearest: 1, then min(2, 9)
    prob = lambda x: x[..., 0] + 1.0
    assert mean_density(paths, prob, 4.0).item() == pytest.approx(1.5 / 4)


# ------------------------------------------------------------------ models
def test_langevin_on_a_quadratic_contracts_geometrically():
    z0 = torch.tensor([[2.0, -1.0]])
    big = torch.full((2,), 100.0)
    z = langevin(Quadratic(), z0, steps=5, step_size=0.1, noise=0.0, lo=-big, hi=big)
    assert torch.allclose(z, z0 * 0.9**5)  # z ← z − 0.1 z


def test_ebm_learns_lower_energy_on_data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=gen) * 0.3 + torch.tensor([2.0, 0.0])
    cfg = EBMConfig(width=16, depth=2, iters=150, lr=1e-3, langevin_steps=20, step_size=0.1, buffer_size=500)
    model = train_ebm(x, cfg, device=torch.device("cpu"))
    with torch.no_grad():
        on, off = model(torch.tensor([[2.0, 0.0]])).item(), model(torch.tensor([[-2.0, 2.0]])).item()
    assert on < off
    assert isinstance(model, EnergyMLP)


def test_dsm_loss_matches_a_hand_computation():
    # E(x) = ½‖x‖² (forward_std on x): ∇E(x̃) = x̃, target (x̃ − x)/σ²
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    noise = torch.tensor([[0.5, -1.0], [1.0, 0.0]])
    sigma = torch.tensor([[0.5], [2.0]])
    model = Quadratic()
    model.forward = model.forward_std
    # x̃ = (1.25, −0.5), (2, 2); residuals x̃ − ξ/σ = (0.25, 1.5), (1.5, 2)
    expected = ((0.25**2 + 1.5**2) + (1.5**2 + 2.0**2)) / 2
    assert dsm_loss(model, x, sigma, noise).item() == pytest.approx(expected)


def test_dsm_recovers_a_gaussian_energy():
    # data N(μ, I) and noise σ = 0.5: DSM learns the energy of N(μ, (1 + σ²) I), E − E(μ) = ‖x − μ‖² / 2.5
    gen = torch.Generator().manual_seed(0)
    mu = torch.tensor([3.0, -1.0])
    x = torch.randn(4000, 2, generator=gen) + mu
    cfg = EBMConfig(objective="dsm", width=32, depth=2, iters=600, batch_size=256, lr=3e-3, sigma_min=0.5,
                    sigma_max=0.5)
    model = train_ebm(x, cfg, device=torch.device("cpu"))
    r = torch.tensor([0.0, 0.5, 1.0, 1.5])
    with torch.no_grad():
        e = model(mu + r[:, None] * torch.tensor([[0.6, 0.8]]))
    assert torch.allclose(e - e[0], r**2 / 2.5, atol=0.08), (e - e[0]).tolist()


def test_ebm_config_rejects_unknown_objective():
    with pytest.raises(ValueError, match="objective"):
        EBMConfig(objective="nce")


def test_energy_profile_auc_by_hand_and_on_a_circle():
    from engine.geodesics.energy_profile import auc_below, profile

    assert auc_below(np.array([1.0, 2.0]), np.array([2.0, 3.0])) == pytest.approx(3.5 / 4)  # one tie counts ½
    # true paths: quarter arcs of the unit circle; their chords cut inside it
    ang = torch.linspace(0, math.pi / 2, 9)
    truth = torch.stack([torch.stack([torch.cos(ang + s), torch.sin(ang + s)], 1) for s in (0.0, 1.0, 2.0)])
    data, off = truth.reshape(-1, 2), 3 * torch.ones(4, 2)
    out = profile(lambda x: x.pow(2).sum(-1), data, off, truth)  # low inside the circle: chords win
    assert out["auc_loop_below_chord"] == 0.0 and out["auc_data_below_off"] == 1.0
    assert out["loops"]["median"] == pytest.approx(1.0) and out["loops"]["n"] == 3 * 7
    out = profile(lambda x: (x.norm(dim=-1) - 1).pow(2), data, off, truth)  # low on the circle: loops win
    assert out["auc_loop_below_chord"] == 1.0
    assert out["loops"]["q90"] == pytest.approx(0.0, abs=1e-6)
    # a chord's energy peaks at its midpoint, of norm cos(π/4), among the 7 interior points
    assert 0 < out["chords"]["q90"] <= (1 - math.cos(math.pi / 4)) ** 2 + 1e-6  # float32 energies
