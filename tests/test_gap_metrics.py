"""Gap measures and retrieval against hand-computed values and brute force."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from engine.gap import metrics as M

S = 1 / math.sqrt(2)


def _unit(rng, n, d, shift=0.0):
    x = rng.normal(size=(n, d)) + shift
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_centroid_distance_and_gap_direction_by_hand():
    img = np.array([[1.0, 0.0], [0.0, 1.0]])   # centroid (.5, .5)
    txt = np.array([[-1.0, 0.0], [-1.0, 0.0]])  # centroid (-1, 0)
    assert M.centroid_distance(img, txt) == pytest.approx(math.sqrt(1.5**2 + 0.5**2))
    u = M.gap_direction(img, txt)
    np.testing.assert_allclose(u, np.array([1.5, 0.5]) / math.sqrt(2.5))
    np.testing.assert_allclose(M.gap_projection(img, u), [1.5 / math.sqrt(2.5), 0.5 / math.sqrt(2.5)])
    with pytest.raises(ValueError, match="coincide"):
        M.gap_direction(img, img)


def test_pair_and_intra_cosine_by_hand():
    img = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # norms differ: cosines normalise
    txt = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # pair cosines 1, 0, 1/√2
    assert M.mean_pair_cosine(img, txt) == pytest.approx((1 + 0 + S) / 3)
    # img pairs: (0,1) 0, (0,2) 1/√2, (1,2) 1/√2
    assert M.mean_intra_cosine(img) == pytest.approx(2 * S / 3)
    # txt pairs: 1, 0, 0
    assert M.mean_intra_cosine(txt) == pytest.approx(1 / 3)


def test_intra_cosine_equals_brute_force():
    x = _unit(np.random.default_rng(3), 40, 7, shift=0.3)
    g = x @ x.T
    brute = (g.sum() - np.trace(g)) / (40 * 39)
    assert M.mean_intra_cosine(x) == pytest.approx(brute, abs=1e-12)


def test_wasserstein_single_points_is_one_minus_cos():
    w = M.wasserstein(np.array([[1.0, 0.0]]), np.array([[1.0, 1.0]]))
    assert w.value == pytest.approx(1 - S)
    assert (w.n_img, w.n_txt, w.subsampled) == (1, 1, False)


def test_wasserstein_equals_brute_force_assignment():
    rng = np.random.default_rng(0)
    a, b = _unit(rng, 6, 3), _unit(rng, 6, 3, shift=0.5)
    cost = 1 - a @ b.T
    best = min(sum(cost[i, p[i]] for i in range(6)) for p in itertools.permutations(range(6))) / 6
    assert M.wasserstein(a, b).value == pytest.approx(best, abs=1e-9)


def test_wasserstein_unequal_sizes_by_hand():
    # two images on e1, one text on e1 and one... uniform 1/2 vs 1/1: all mass to the single text
    img = np.array([[1.0, 0.0], [0.0, 1.0]])
    txt = np.array([[1.0, 0.0]])
    assert M.wasserstein(img, txt).value == pytest.approx(0.5 * 0 + 0.5 * 1)


def test_wasserstein_subsamples_and_says_so():
    rng = np.random.default_rng(1)
    a, b = _unit(rng, 30, 4), _unit(rng, 30, 4)
    w = M.wasserstein(a, b, max_n=10, seed=5)
    assert (w.n_img, w.n_txt, w.subsampled) == (10, 10, True)
    _, idx = M.subsample(a, 10, seed=5)
    assert w.value == pytest.approx(M.wasserstein(a[idx], b[idx]).value)
    assert M.wasserstein(a, b, max_n=10, seed=5).value == w.value  # seeded


def test_probe_separable_and_indistinguishable():
    rng = np.random.default_rng(0)
    img = _unit(rng, 100, 5) + np.array([4.0, 0, 0, 0, 0])
    txt = _unit(rng, 100, 5) - np.array([4.0, 0, 0, 0, 0])
    p = M.probe_accuracy(img, txt, test_fraction=0.3)
    assert p.accuracy == 1.0 and (p.n_train, p.n_test, p.subsampled) == (140, 60, False)
    # identical image and caption: one of each held-out pair is right, the other wrong
    same = _unit(rng, 100, 5)
    assert M.probe_accuracy(same, same.copy()).accuracy == 0.5
    assert M.probe_accuracy(img, txt, max_n=50).subsampled


def test_recall_full_by_hand():
    # 3 pairs in 2-D; image 0 matches txt 0, etc.
    img = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    txt = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    # image→text cosines: img0: [0, 0, .707] → true 0 with txt1 tied at 0, txt2 above: g=1, e=1
    #   img1: [1, 1, .707] → true 1 ties txt0: g=0, e=1 ; img2: [.707,.707,1] → g=0, e=0
    g, e = M.rank_counts(img, txt, np.arange(3))
    np.testing.assert_array_equal(g, [1, 0, 0])
    np.testing.assert_array_equal(e, [1, 1, 0])
    r = M.recall_full(img, txt, ks=(1, 2))
    # R@1: img0 0, img1 1/2, img2 1 ; R@2: img0 (2-1)/2 = 1/2, img1 1, img2 1
    assert r["image_to_text"] == pytest.approx({"R@1": 1.5 / 3, "R@2": 2.5 / 3})
    # text→image: txt0 → [0, 1, .707] g=2 ; txt1 → g=0 ; txt2 → [.707, .707, 1] g=0
    assert r["text_to_image"] == pytest.approx({"R@1": 2 / 3, "R@2": 2 / 3})
    assert r["mean"]["R@1"] == pytest.approx((1.5 / 3 + 2 / 3) / 2)


def test_recall_full_equals_argsort_brute_force():
    rng = np.random.default_rng(2)
    img = _unit(rng, 50, 8)
    txt = img + 0.8 * _unit(rng, 50, 8)
    r = M.recall_full(img, txt)
    sims = M.normalise(img) @ M.normalise(txt).T
    rank = np.array([np.where(np.argsort(-sims[i]) == i)[0][0] for i in range(50)])
    for k in M.KS:
        assert r["image_to_text"][f"R@{k}"] == pytest.approx(np.mean(rank < k))


def test_recall_batched_uses_disjoint_random_batches():
    rng = np.random.default_rng(4)
    img = _unit(rng, 70, 6)
    txt = img + 1.0 * _unit(rng, 70, 6)
    # one batch holding everything is the full gallery
    assert M.recall_batched(img, txt, batch=70) == M.recall_full(img, txt)
    # batches of 20 (the last one has 10): reproduce by hand from the same permutation
    perm = np.random.default_rng(9).permutation(70)
    hits = []
    for s in range(0, 70, 20):
        rows = perm[s:s + 20]
        sims = M.normalise(img[rows]) @ M.normalise(txt[rows]).T
        hits += [np.sum(sims[i] > sims[i, i]) < 1 for i in range(len(rows))]
    r = M.recall_batched(img, txt, batch=20, seed=9)
    assert r["image_to_text"]["R@1"] == pytest.approx(np.mean(hits))
    assert r["image_to_text"]["R@1"] >= M.recall_full(img, txt)["image_to_text"]["R@1"]


def test_top_k_cosine_and_subsample():
    gal = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    idx, cos = M.top_k_cosine(np.array([2.0, 0.0]), gal, k=3)
    np.testing.assert_array_equal(idx, [0, 2, 1])
    np.testing.assert_allclose(cos, [1, S, 0], atol=1e-12)
    x = np.arange(20.0).reshape(10, 2)
    sub, idx = M.subsample(x, 4, seed=1)
    assert len(sub) == 4 and np.all(np.diff(idx) > 0) and np.array_equal(sub, x[idx])
    assert M.subsample(x, 50)[0] is x


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="aligned"):
        M.mean_pair_cosine(np.zeros((3, 2)), np.zeros((4, 2)))


# ----------------------------------------------------------------------------- torch vs the NumPy reference
@pytest.fixture(scope="module")
def pairs():
    from engine.gap import synthetic

    img, txt, _ = synthetic.random_pairs(700, 12, shift=0.3, noise=3.0, seed=5)
    return img.astype(np.float64) * 1.7, txt  # un-normalised images: every metric must normalise


def test_torch_metrics_equal_the_numpy_reference(pairs):
    from engine.gap import reference as R

    img, txt = pairs
    assert M.centroid_distance(img, txt) == pytest.approx(R.centroid_distance(img, txt), rel=1e-12)
    np.testing.assert_allclose(M.gap_direction(img, txt), R.gap_direction(img, txt), rtol=1e-12)
    u = R.gap_direction(img, txt)
    np.testing.assert_allclose(M.gap_projection(txt, u), R.gap_projection(txt, u), rtol=1e-12, atol=1e-15)
    assert M.mean_pair_cosine(img, txt) == pytest.approx(R.mean_pair_cosine(img, txt), rel=1e-12)
    for x in (img, txt):
        assert M.mean_intra_cosine(x) == pytest.approx(R.mean_intra_cosine(x), rel=1e-10)
    assert M.wasserstein(img, txt, max_n=120, seed=2).value == pytest.approx(R.wasserstein(img, txt, 120, 2).value, rel=1e-12)
    truth = np.arange(len(img))
    for a, b in zip(M.rank_counts(img, txt, truth, chunk=97), R.rank_counts(img, txt, truth)):
        np.testing.assert_array_equal(a, b)
    for ours, ref in ((M.recall_full(img, txt), R.recall_full(img, txt)),
                      (M.recall_batched(img, txt, batch=64, seed=3), R.recall_batched(img, txt, batch=64, seed=3))):
        for direction in ("image_to_text", "text_to_image", "mean"):
            assert ours[direction] == pytest.approx(ref[direction], abs=1e-12)
    idx, cos = M.top_k_cosine(img[3], txt, k=7)
    ridx, rcos = R.top_k_cosine(img[3], txt, k=7)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_allclose(cos, rcos, rtol=1e-12)
    # the float32 unit-row gallery gives the same neighbours, and counts items above the partner
    idx32, cos32, (above, pcos) = M.neighbours(img[3], M.unit_rows(txt), k=7, partner=3)
    np.testing.assert_array_equal(idx32, ridx)
    np.testing.assert_allclose(cos32, rcos, atol=1e-6)
    sims = R.normalise(txt) @ R.normalise(img[3:4])[0]
    assert above == int(np.sum(sims > sims[3])) and pcos == pytest.approx(sims[3], abs=1e-6)


def test_recall_is_exact_up_to_the_limit_and_sampled_beyond(pairs):
    img, txt = pairs
    exact = M.recall_full(img, txt, max_exact=700)
    assert exact["exact"] and exact["queries"] == 700 and exact["interval"] is None
    assert M.exact_limit(512, "cpu") == M.EXACT_PAIRS["cpu"]
    assert M.exact_limit(128, "cpu") == int(M.EXACT_PAIRS["cpu"] * 2)  # sqrt(512 / 128)
    rows = M.query_sample(50_000, 2_000, seed=1)
    assert len(rows) == M.MIN_QUERIES and np.all(np.diff(rows) > 0)
    assert len(M.query_sample(10**7, 200_000)) == 4_000  # limit² / n scores, as many as at the limit
    np.testing.assert_array_equal(M.query_sample(500, 600), np.arange(500))


def test_wilson_interval_by_hand():
    # p = .5, n = 100: centre .5, half-width z·sqrt(.25/100 + z²/40000) / (1 + z²/100)
    z = M.Z95
    half = z * math.sqrt(0.25 / 100 + z * z / 40000) / (1 + z * z / 100)
    assert M.wilson(0.5, 100) == pytest.approx((0.5 - half, 0.5 + half))
    lo, hi = M.wilson(0.0, 10)  # none of 10: [0, z²/(n + z²)]
    assert lo == 0.0 and hi == pytest.approx(z * z / (10 + z * z))
    with pytest.raises(ValueError, match="trial"):
        M.wilson(0.5, 0)
