"""Geodesics: small end-to-end runs, the CLI report, the page in AppTest and in Chromium."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from engine.geodesics import pipeline
from engine.geodesics.runconfig import RunConfig
from tests.conftest import ROOT, no_exception, wait_for_app

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def geo_runs(cache_root):
    """Small UCG and URC runs in the suite's cache root: {dataset: cache path}."""
    return {ds: pipeline.precompute(RunConfig.preset(ds, small=True)) for ds in ("ucg", "urc")}


def _cli_report(*args: str) -> dict:
    from engine.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["report", "geodesics", *args, "--small", "--json"]) == 0
    return json.loads(buf.getvalue())


def test_small_runs_score_every_metric(geo_runs):
    rep = pipeline.report_from_cache(geo_runs["ucg"])
    assert set(rep["metrics"]) == set(RunConfig.preset("ucg").metrics) and rep["n_pairs"] == 16
    m = rep["metrics"]
    assert m["G_E true"]["RMSE"] is None and m["G_1/p true"]["RMSE"] is None  # references are not scored against themselves
    assert m["G_E"]["RMSE"] > 0 and m["LAND"]["RMSE"] > 0
    assert rep["ebm"]["objective"] == "dsm" and rep["ebm"]["sigma"] == [0.01, 1.0]
    assert all(0.0 < e["p_M"] <= 1.0 for e in m.values())
    assert m["G_E"]["p_M (paper)"] == 0.78 and m["linear"]["p_M (paper)"] is None
    # the true-density geodesics stay in denser regions than the straight line
    assert m["G_E true"]["p_M"] > m["linear"]["p_M"]
    chars = pipeline.report_from_cache(geo_runs["urc"])["metrics"]
    assert chars["linear"]["D-RMSE (paper)"] == 2.96 and chars["G_E"]["γ*-RMSE"] > 0
    truth = pipeline.load_truth(geo_runs["urc"], [0, 1])
    line = pipeline.load_paths(geo_runs["urc"], "linear", [0, 1])
    assert np.allclose(truth[:, 0], line[:, 0], atol=1e-4) and np.allclose(truth[:, -1], line[:, -1], atol=1e-4)


def test_precompute_reuses_the_cache(geo_runs):
    before = geo_runs["ucg"].stat().st_mtime_ns
    assert pipeline.precompute(RunConfig.preset("ucg", small=True)) == geo_runs["ucg"]
    assert geo_runs["ucg"].stat().st_mtime_ns == before


def test_cli_report_matches_the_cache(geo_runs):
    assert _cli_report("--dataset", "ucg") == pipeline.report_from_cache(geo_runs["ucg"])


def test_points_command_solves_between_rows(tmp_path, cache_root):
    from engine.geodesics.points import solve_points

    rng = np.random.default_rng(0)
    t = rng.uniform(0, np.pi, 300)
    pts = np.stack([np.cos(t), np.sin(t), 0.05 * rng.normal(size=300)], 1).astype(np.float32)
    np.save(tmp_path / "p.npy", pts)
    cfg = RunConfig.preset("urc", small=True, land_ref=100, rbf_centers=10)
    paths, energy = solve_points(tmp_path / "p.npy", [(0, 1), (2, 3)], "linear", steps=9, cfg=cfg)
    assert paths.shape == (2, 9, 3) and np.allclose(paths[0, 0], pts[0]) and np.allclose(paths[1, -1], pts[3])
    with pytest.raises(ValueError, match="row pairs"):
        solve_points(tmp_path / "p.npy", [(0, 999)], "linear", cfg=cfg)
    # from the graph start, the RBF geodesic between the arc's two ends stays on the arc (the chord is 1 away)
    ends = [(int(np.argmin(t)), int(np.argmax(t)))]
    cfg = RunConfig.preset("urc", small=True, land_ref=100, rbf_centers=10, solver_init="graph")
    paths, _ = solve_points(tmp_path / "p.npy", ends, "RBF", steps=21, cfg=cfg)
    gap = np.linalg.norm(paths[0][:, None] - pts[None], axis=-1).min(1)
    assert gap.max() < 0.15, gap.max()


def _page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.switch_page("pages/geodesics.py")
    return at


def test_page_shows_the_report_numbers(geo_runs):
    at = _page()
    at.run()
    no_exception(at)
    assert at.selectbox(key="_sel_geo_ds").value == "ucg"
    table = at.dataframe[0].value
    rep = _cli_report("--dataset", "ucg")
    for metric, entry in rep["metrics"].items():
        for col, val in entry.items():
            shown = table.loc[metric, col]
            assert (val is None and np.isnan(shown)) or shown == val, (metric, col)
    assert any(c.value.startswith("EBM: objective dsm") and c.value.endswith("Solver start: the straight line (the paper's).")
               for c in at.caption)
    assert rep["solver_init"] == "line"
    # a λ heatmap background, fewer metrics, and two clicked endpoints solved live
    at.selectbox(key="_sel_geo_bg").set_value("log10 λ: G_E").run()
    at.multiselect(key="geo_metric_pick").set_value(["G_E", "LAND"]).run()
    at.session_state["geo_clicked"] = [[-8.0, 0.5], [8.0, 0.5]]
    at.run()
    no_exception(at)
    assert list(at.dataframe[0].value.index) == list(rep["metrics"])


def test_page_characters_show_strips(geo_runs):
    at = _page()
    at.run()
    at.selectbox(key="_sel_geo_ds").set_value("urc").run()
    no_exception(at)
    assert at.dataframe[0].value.loc["linear", "D-RMSE (paper)"] == 2.96
    assert len(at.get("image")) >= 7  # true rotation + 6 metrics for the first pair


def test_page_without_runs_names_the_command(geo_runs):
    at = _page()
    at.run()
    at.selectbox(key="_sel_geo_ds").set_value("wcg").run()
    no_exception(at)
    assert any("geolens geodesics precompute --dataset wcg" in i.value for i in at.info)


@pytest.mark.browser
def test_page_in_chromium(geo_runs, server, page):
    page.goto(f"{server}/geodesics?geo_ds=ucg")
    wait_for_app(page)
    page.wait_for_selector("text=Geodesics from energy-based models")
    page.wait_for_selector(".js-plotly-plot", timeout=120_000)
    page.wait_for_selector("[data-testid='stDataFrame']", timeout=120_000)
    assert page.locator(".js-plotly-plot .scatterlayer .trace").count() > 3
