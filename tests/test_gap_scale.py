"""Scale paths of the gap page: sampled full-gallery recall against the exact value on a 20k-pair
cache, and the server-side box and lasso selection against hand-made shapes."""
from __future__ import annotations

import numpy as np
import pytest

from engine.gap import layout, metrics, report, synthetic


@pytest.fixture(scope="module")
def cache_20k(tmp_path_factory):
    root = tmp_path_factory.mktemp("gap-20k")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEOLENS_CACHE", str(root))
        yield synthetic.write_random_cache(20_000, d=16, noise=1.0, seed=0, folder=root)


def test_sampled_full_gallery_recall_falls_within_its_interval_of_the_exact_value(cache_20k):
    pts = report.load_points(cache_20k)
    exact = metrics.recall_full(pts.img, pts.txt, max_exact=20_000)
    assert exact["exact"] and exact["queries"] == 20_000
    assert 0.05 < exact["mean"]["R@1"] < 0.5  # neither trivial nor hopeless: the interval has work to do
    sampled = metrics.recall_full(pts.img, pts.txt, max_exact=2_000, seed=4)
    assert not sampled["exact"] and sampled["queries"] == metrics.MIN_QUERIES  # max(1000, 2000² / 20000)
    for direction in ("image_to_text", "text_to_image", "mean"):
        for k, value in exact[direction].items():
            lo, hi = sampled["interval"][direction][k]
            assert lo <= sampled[direction][k] <= hi
            assert lo <= value <= hi, (direction, k, value, lo, hi)
            assert hi - lo < 0.07  # 1000 queries: a half-width of at most ~3 points
    # the report says the same: sampled beyond its limit, with the count and the intervals
    rep = report.gap_report(cache_20k, report.GapConfig(w_max=200, probe_max=500, full_exact_max=2_000, seed=4))
    f = rep["retrieval"]["full_gallery"]
    assert (f["exact"], f["queries"], f["exact_limit"]) == (False, 1000, 2000)
    assert f["mean"] == pytest.approx(sampled["mean"]) and f["interval"] == sampled["interval"]


def test_lasso_returns_exactly_the_points_inside_a_hand_made_polygon():
    # a 5 × 5 grid of cell centres (0.5 … 4.5) and an L-shaped (concave) polygon:
    # the bottom row y < 1 for x < 4, and the left column x < 1 up to y = 4
    gx, gy = np.meshgrid(np.arange(5) + 0.5, np.arange(5) + 0.5)
    xy = np.column_stack([gx.ravel(), gy.ravel()]).astype(np.float32)  # row r = (r % 5 + .5, r // 5 + .5)
    poly_x = [0, 4, 4, 1, 1, 0]
    poly_y = [0, 0, 1, 1, 4, 4]
    inside = layout.select_lasso(xy, poly_x, poly_y)
    # by hand: (0.5..3.5, 0.5) are rows 0-3; (0.5, 1.5), (0.5, 2.5), (0.5, 3.5) are rows 5, 10, 15
    np.testing.assert_array_equal(inside, [0, 1, 2, 3, 5, 10, 15])
    # the same polygon drawn the other way round, and shifted copies of the grid far away, change nothing
    far = np.vstack([xy, xy + 100])
    np.testing.assert_array_equal(layout.select_lasso(far, poly_x[::-1], poly_y[::-1]), [0, 1, 2, 3, 5, 10, 15])
    # a triangle under the line y = x − 0.2 (no point on an edge): the points with y < x
    tri = layout.select_lasso(xy, [0.2, 5, 5], [0, 0, 4.8])
    np.testing.assert_array_equal(tri, [r for r in range(25) if r // 5 < r % 5])
    with pytest.raises(ValueError, match="3 vertices"):
        layout.select_lasso(xy, [0, 1], [0, 1])


@pytest.mark.parametrize("seed", range(4))
def test_gridded_lasso_equals_testing_every_point(seed):
    """The cell shortcut changes nothing: matplotlib's test on every point of the bounding box gives
    the same rows, for star-shaped, self-intersecting and hand-drawn (many vertices) lassos."""
    from matplotlib.path import Path as MplPath

    rng = np.random.default_rng(seed)
    xy = np.vstack([rng.normal(0, 1, (60_000, 2)), rng.uniform(-3, 3, (20_000, 2))]).astype(np.float32)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 300))
    shapes = [
        (np.cos(angles) * rng.uniform(0.3, 2.5, 300), np.sin(angles) * rng.uniform(0.3, 2.5, 300)),  # jagged star
        tuple(rng.uniform(-2.5, 2.5, (2, 9))),  # random vertex order: crosses itself
        ([-2, 2, 2, -2, -2, 0.5, 0.5], [-2, -2, 2, 2, 0, 0, 1]),  # a thin slit cut into a square
    ]
    for xs, ys in shapes:
        xs, ys = np.asarray(xs, float), np.asarray(ys, float)
        box = layout.select_box(xy, (xs.min(), xs.max()), (ys.min(), ys.max()))
        want = box[MplPath(np.column_stack([xs, ys])).contains_points(xy[box].astype(np.float64))]
        got = layout.select_lasso(xy, xs, ys)
        assert 0 < len(got) < len(xy)
        np.testing.assert_array_equal(got, want)


def test_box_selects_edges_included_and_any_corner_order():
    xy = np.array([[0, 0], [1, 1], [2, 2], [1, 3], [3, 1]], np.float32)
    np.testing.assert_array_equal(layout.select_box(xy, (2, 1), (2, 0.5)), [1, 2])
    np.testing.assert_array_equal(layout.select_box(xy, (-1, 5), (-1, 5)), np.arange(5))
    assert len(layout.select_box(xy, (10, 11), (0, 1))) == 0
