"""Gap layouts, the stored report and layout artifacts and the figures, on a small synthetic cache
(written with its artifacts to its own cache root, so the suite's shared cache root is untouched)."""
from __future__ import annotations


import numpy as np
import pytest

from engine.core import artifacts
from engine.gap import figures, layout, projection, reference, report, synthetic


@pytest.fixture(scope="module")
def rand_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("gap-rand")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEOLENS_CACHE", str(root))
        yield synthetic.write_random_cache(300, d=16, shift=0.4, noise=0.5, seed=1, folder=root)


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


def test_layout_is_built_once_stored_beside_the_cache_and_memory_mapped(rand_cache, monkeypatch):
    pts = report.load_points(rand_cache)
    cfg = layout.LayoutConfig(n_neighbors=10, umap_sample=200, extend_k=5, extend_dims=8)
    assert layout.find_layout(rand_cache, cfg) is None
    seen = []
    lay = layout.build_layout(rand_cache, cfg, progress=seen.append)
    assert lay.path.parent == artifacts.root() / layout.KIND and not (lay.path / "features.npy").exists()
    assert isinstance(lay.coords["umap"], np.memmap) and lay.xy("umap").dtype == np.float32
    np.testing.assert_array_equal(lay.ids, pts.table["id"].to_numpy())
    assert (lay.meta["n_points"], lay.meta["umap_fitted"], lay.meta["interpolated"]) == (600, 200, 400)
    assert set(lay.meta["seconds"]) == {"pca", "umap_fit", "umap_interpolate"}
    assert seen and seen[-1].done == 600 and seen[-1].stage == "umap interpolate"
    # PCA equals scikit-learn's (which centres and fits on all rows; signs by svd_flip)
    sk = projection.pca_2d(projection.stack(pts.img, pts.txt))
    np.testing.assert_allclose(lay.xy("pca"), sk, atol=2e-5)
    # fitted rows keep their UMAP position; the others lie inside the fitted cloud
    fitted = np.load(lay.path / "umap_fitted.npy")
    np.testing.assert_array_equal(lay.xy("umap")[fitted], np.load(lay.path / "umap_fit_xy.npy"))
    lo, hi = lay.xy("umap")[fitted].min(0), lay.xy("umap")[fitted].max(0)
    assert np.all((lay.xy("umap") >= lo - 1e-5) & (lay.xy("umap") <= hi + 1e-5))
    # found again without refitting; other parameters: another artifact
    monkeypatch.setattr(layout, "umap_fit", lambda *a: pytest.fail("refitted a stored layout"))
    again = layout.build_layout(rand_cache, cfg)
    assert again.path == lay.path
    np.testing.assert_array_equal(again.xy("umap"), lay.xy("umap"))
    assert layout.find_layout(rand_cache, layout.LayoutConfig(n_neighbors=11, umap_sample=200)) is None


def test_interpolation_by_hand():
    # 1-D features; fitted rows 0 (at x=0) and 1 (at x=1) placed at (0, 0) and (10, 0)
    feats = np.array([[0.0], [1.0], [0.25], [2.0]], dtype=np.float32)
    out = np.zeros((4, 2), np.float32)
    layout.interpolate(feats, np.array([0, 1]), np.array([[0, 0], [10, 0]], np.float32), 2, out, device="cpu")
    # row 2: d = (.25, .75), rel = (0, .5), σ = .25: weights (1, e⁻²) → x = 10 e⁻² / (1 + e⁻²)
    w = np.exp(-2.0)
    np.testing.assert_allclose(out[2], [10 * w / (1 + w), 0], rtol=1e-5)
    # row 3: d = (2, 1) → nearest is row 1 (weight 1), then row 0 (rel 1, σ .5 → e⁻²)
    np.testing.assert_allclose(out[3], [10 / (1 + w), 0], rtol=1e-5)
    np.testing.assert_allclose(out[:2], [[0, 0], [10, 0]])


def test_interrupted_layout_build_resumes(rand_cache, monkeypatch):
    cfg = layout.LayoutConfig(n_neighbors=10, umap_sample=150, extend_k=3, extend_dims=4, seed=3)
    calls = []
    real = layout.umap_fit

    def boom(*a, **kw):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(layout, "interpolate", boom)
    with pytest.raises(KeyboardInterrupt):
        layout.build_layout(rand_cache, cfg)
    assert layout.find_layout(rand_cache, cfg) is None  # nothing half-written is visible
    monkeypatch.undo()
    monkeypatch.setattr(layout, "umap_fit", lambda *a: calls.append("fit") or real(*a))
    lay = layout.build_layout(rand_cache, cfg)
    assert "fit" not in calls and lay.meta["umap_fitted"] == 150  # the stored fit was reused


def test_bad_projection_and_config_are_named():
    with pytest.raises(ValueError, match="choose one of"):
        layout.Layout(np.arange(3), {}, {}, None).xy("tsne")
    with pytest.raises(ValueError, match="metric"):
        projection.UMAPConfig(metric="manhattan")
    with pytest.raises(ValueError, match="umap_sample"):
        layout.LayoutConfig(umap_sample=10, n_neighbors=15)
    with pytest.raises(ValueError, match="ks"):
        report.GapConfig(ks=(0, 5))


def test_report_equals_references_and_is_stored(rand_cache):
    cfg = report.GapConfig(w_max=100, probe_max=200, batch=64)
    assert report.find_report(rand_cache, cfg) is None
    rep = report.gap_report(rand_cache, cfg)
    img, txt, _ = synthetic.random_pairs(300, 16, 0.4, 0.5, 1)
    assert rep["n_pairs"] == 300 and rep["dim"] == 16
    assert rep["gap"]["DiM"] == pytest.approx(reference.centroid_distance(img, txt))
    w = reference.wasserstein(img, txt, 100, 0)
    assert rep["gap"]["W"] == pytest.approx(w.value) and rep["gap"]["W_subsampled"] and rep["gap"]["W_points"] == [100, 100]
    for flavour, ref in (("full_gallery", reference.recall_full(img, txt)), ("batched", reference.recall_batched(img, txt, batch=64))):
        for direction in ("image_to_text", "text_to_image", "mean"):
            assert rep["retrieval"][flavour][direction] == pytest.approx(ref[direction])
    assert rep["retrieval"]["full_gallery"]["exact"] and rep["retrieval"]["full_gallery"]["queries"] == 300
    assert rep["probe"]["n_train"] + rep["probe"]["n_test"] == 400 and rep["probe"]["subsampled"]
    assert {"W", "probe", "recall_full", "recall_batched", "cosines", "total"} <= set(rep["seconds"])
    # the gap exists by construction: images sit on +e0, captions on −e0
    assert rep["gap"]["DiM"] > 0.3 and rep["gap_projection"]["image_mean"] > rep["gap_projection"]["text_mean"]
    art = report.find(rand_cache, cfg)
    assert art.path.parent == artifacts.root() / report.KIND and art.inputs == [rand_cache.manifest["key"]]
    pi, pt = report.read_projection(art)
    u = reference.gap_direction(img, txt)
    np.testing.assert_allclose(pi, img @ u, atol=1e-6)
    np.testing.assert_allclose(pt, txt @ u, atol=1e-6)
    assert report.find_report(rand_cache, cfg) == rep == report.gap_report(rand_cache, cfg)  # read back, identical
    assert report.find(rand_cache, report.GapConfig(w_max=101)) is None



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
    image = fig.layout.images[0]  # the density image of every point, placed in data coordinates
    (x0, x1), (y0, y1) = figures.extent(xy)
    assert (image.xref, image.yref, image.sizing) == ("x", "y", "stretch")
    assert (image.x, image.y, image.sizex, image.sizey) == pytest.approx((x0, y1, x1 - x0, y1 - y0))
    counts, xr, yr = figures.density_counts(xy, px=50)
    assert int(counts.values.sum()) == 1000 and counts.shape == (50, 50)
    # row 0 is the bottom: a lone point in the bottom-left corner lands in counts[0, 0]
    corner = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)
    c, _, _ = figures.density_counts(corner, px=4)
    assert c.values[0, 0] == 1 and c.values[3, 3] == 1
    with pytest.raises(ValueError, match="cannot colour"):
        figures.joint_map(xy, table, "nope")


def test_gap_histogram_counts_every_point():
    a, b = np.linspace(0, 1, 40), np.linspace(-1, 0.2, 25)
    fig = figures.gap_histogram(a, b, bins=10)
    assert [int(sum(t.y)) for t in fig.data] == [40, 25]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_knn_graph_matches_brute_force(metric):
    """UMAP's k-NN graph: sklearn's brute-force neighbours, each row first at distance 0."""
    from sklearn.neighbors import NearestNeighbors

    x = np.random.default_rng(4).standard_normal((700, 12)).astype(np.float32)
    idx, dist = projection.knn_graph(x, 9, metric, block=256)
    ref_d, ref_i = NearestNeighbors(n_neighbors=9, metric=metric, algorithm="brute").fit(x).kneighbors(x)
    assert (idx[:, 0] == np.arange(700)).all() and np.abs(dist[:, 0]).max() < 1e-6
    np.testing.assert_array_equal(idx, ref_i)  # continuous data: no ties
    np.testing.assert_allclose(dist, ref_d, atol=2e-5)
    with pytest.raises(ValueError, match="metric"):
        projection.knn_graph(x, 3, "manhattan")


def test_umap_start_is_checked_and_used():
    with pytest.raises(ValueError, match="init"):
        projection.UMAPConfig(init="laplacian")
    x = np.random.default_rng(5).standard_normal((60, 5)).astype(np.float32)
    a = projection.umap_2d(x, projection.UMAPConfig(n_neighbors=8, init="pca"))
    b = projection.umap_2d(x, projection.UMAPConfig(n_neighbors=8, init="random"))
    assert a.shape == (60, 2) and not np.allclose(a, b)
