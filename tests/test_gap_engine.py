"""Gap projections, the UMAP disk cache, the report and the figures, on a small synthetic cache
(written to its own folder, so the suite's shared cache root is untouched)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.gap import figures, metrics, projection, report, synthetic


@pytest.fixture(scope="module")
def rand_cache(tmp_path_factory):
    return synthetic.write_random_cache(300, d=16, shift=0.4, noise=0.5, seed=1,
                                        folder=tmp_path_factory.mktemp("gap-rand"))


def test_synthetic_cache_reads_back(rand_cache):
    img, txt, _ = synthetic.random_pairs(300, 16, 0.4, 0.5, 1)
    pts = report.load_points(rand_cache)
    np.testing.assert_array_equal(pts.img, img)
    np.testing.assert_array_equal(pts.txt, txt)
    assert list(pts.table["id"][:2]) == [0, 2] and list(pts.table["id"][300:302]) == [1, 3]
    assert report.factor_columns(pts) == ["group"]
    assert pts.table["text"].iloc[301] == "random caption 1" and pts.table["text"].isna().iloc[0]


def test_pca_matches_svd_by_hand():
    x = np.array([[2.0, 0.0, 0.0], [-2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0]])
    xy = projection.pca_2d(x)
    # centred already; principal axes e1 (variance 2) then e2 (variance .5), up to sign
    np.testing.assert_allclose(np.abs(xy), [[2, 0], [2, 0], [0, 1], [0, 1]], atol=1e-6)


def test_umap_is_cached_on_disk_keyed_by_parameters(rand_cache, monkeypatch):
    pts = report.load_points(rand_cache)
    ids, x = pts.table["id"].to_numpy(), projection.stack(pts.img, pts.txt)
    cfg = projection.UMAPConfig(n_neighbors=10, seed=0)
    started = []
    first = projection.project(rand_cache, "umap", ids, x, cfg, on_start=lambda m, n: started.append((m, n)))
    assert not first.cached and started == [("umap", 600)] and first.xy.shape == (600, 2)
    assert first.path.exists() and first.path.parent == rand_cache.artifact_dir
    assert first.path.stem in set(rand_cache.artifacts("projection")["name"])
    calls = []
    monkeypatch.setattr(projection, "umap_2d", lambda *a: calls.append(a) or np.zeros((600, 2), np.float32))
    again = projection.project(rand_cache, "umap", ids, x, cfg, on_start=lambda m, n: started.append((m, n)))
    assert again.cached and not calls and len(started) == 1
    np.testing.assert_array_equal(again.xy, first.xy)
    # rows asked in another order come back in that order
    perm = np.random.default_rng(0).permutation(600)
    np.testing.assert_array_equal(projection.read_umap(first.path, ids[perm]), first.xy[perm])
    # other parameters: another key, another fit
    other = projection.project(rand_cache, "umap", ids, x, projection.UMAPConfig(n_neighbors=11))
    assert not other.cached and calls and other.path != first.path
    stored = projection.store.query_df(first.path, "SELECT key, value FROM config")
    assert json.loads(stored.set_index("key").loc["n_neighbors", "value"]) == 10


def test_bad_projection_and_config_are_named():
    with pytest.raises(ValueError, match="choose one of"):
        projection.project(None, "tsne", np.arange(3), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="metric"):
        projection.UMAPConfig(metric="manhattan")
    with pytest.raises(ValueError, match="ks"):
        report.GapConfig(ks=(0, 5))


def test_report_equals_metrics_and_is_stored(rand_cache):
    cfg = report.GapConfig(w_max=100, probe_max=200, batch=64)
    rep = report.gap_report(rand_cache, cfg)
    img, txt, _ = synthetic.random_pairs(300, 16, 0.4, 0.5, 1)
    assert rep["n_pairs"] == 300 and rep["dim"] == 16
    assert rep["gap"]["DiM"] == pytest.approx(metrics.centroid_distance(img, txt))
    w = metrics.wasserstein(img, txt, 100, 0)
    assert rep["gap"]["W"] == pytest.approx(w.value) and rep["gap"]["W_subsampled"] and rep["gap"]["W_points"] == [100, 100]
    assert rep["retrieval"]["full_gallery"] == metrics.recall_full(img, txt)
    assert rep["retrieval"]["batched"] == metrics.recall_batched(img, txt, batch=64)
    assert rep["probe"]["n_train"] + rep["probe"]["n_test"] == 400 and rep["probe"]["subsampled"]
    # the gap exists by construction: images sit on +e0, captions on −e0
    assert rep["gap"]["DiM"] > 0.3 and rep["gap_projection"]["image_mean"] > rep["gap_projection"]["text_mean"]
    assert report.report_path(rand_cache, cfg).exists()
    assert report.gap_report(rand_cache, cfg) == rep  # read back, identical
    assert report.report_path(rand_cache, report.GapConfig(w_max=101)) != report.report_path(rand_cache, cfg)


def test_map_draws_every_point_or_says_how_many():
    rng = np.random.default_rng(0)
    import pandas as pd

    n = 500
    table = pd.DataFrame({"id": np.arange(2 * n), "modality": ["image"] * n + ["text"] * n,
                          "pair_id": np.r_[np.arange(n), np.arange(n)], "text": [None] * n + ["c"] * n,
                          "f": rng.choice(["a", "b", "c"], 2 * n)})
    xy = rng.normal(size=(2 * n, 2)).astype(np.float32)
    fig, info = figures.joint_map(xy, table, "f", segments=True)
    assert (info.n_drawn, info.density, info.n_segments) == (1000, False, 500)
    drawn = [t for t in fig.data if t.customdata is not None]
    assert sorted(np.concatenate([t.customdata for t in drawn])) == list(range(1000))
    assert {t.name for t in drawn} == {"a", "b", "c"}
    seg = next(t for t in fig.data if t.name == "true pairs")
    np.testing.assert_allclose([seg.x[0], seg.x[1]], [xy[0, 0], xy[n, 0]])  # image 0 → its caption
    fig, info = figures.joint_map(xy, table, "modality", max_points=300, sample=200, max_segments=50, segments=True)
    assert (info.n_points, info.n_drawn, info.density, info.n_segments) == (1000, 200, True, 50)
    heat = next(t for t in fig.data if t.type == "heatmap")
    assert np.nansum(10 ** np.asarray(heat.z, dtype=float) - 1) == pytest.approx(1000)  # density holds every point
    with pytest.raises(ValueError, match="cannot colour"):
        figures.joint_map(xy, table, "nope")


def test_gap_histogram_counts_every_point():
    a, b = np.linspace(0, 1, 40), np.linspace(-1, 0.2, 25)
    fig = figures.gap_histogram(a, b, bins=10)
    assert [int(sum(t.y)) for t in fig.data] == [40, 25]
