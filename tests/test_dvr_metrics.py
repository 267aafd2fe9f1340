"""dvr metrics against hand computations on tiny feature sets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.dvr import generators, metrics
from engine.dvr.networks import ConvNet4, embed, nt_xent, proto_logits


def test_diversity_hand():
    # one class, 3 samples, 2 dims: std(ddof=1) of (0,1,2) = 1, of (0,2,4) = 2 -> mean 1.5
    f = np.array([[[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]]])
    assert metrics.diversity_per_class(f) == pytest.approx([1.5])
    # two classes: second has identical samples -> 0
    f2 = np.concatenate([f, np.ones((1, 3, 2))])
    assert metrics.diversity_per_class(f2) == pytest.approx([1.5, 0.0])


def test_diversity_needs_two_samples():
    with pytest.raises(ValueError, match="samples >= 2"):
        metrics.diversity_per_class(np.zeros((2, 1, 4)))


def test_exemplar_copy_has_zero_diversity():
    rng = np.random.default_rng(0)
    ex = (rng.random((3, 50, 50)) > 0.8).astype(np.float32)
    s = generators.make("copy").sample(ex, 20, 0, ex[:, None])
    net = ConvNet4().eval()
    assert np.all(metrics.diversity_per_class(embed(net, s)) == 0.0)


def test_episodes_fixed_and_valid():
    e1 = metrics.make_episodes(30, 20, 50, 7)
    e2 = metrics.make_episodes(30, 20, 50, 7)
    assert e1.others.shape == (30, 50, 19)
    np.testing.assert_array_equal(e1.others, e2.others)
    for c in range(30):
        assert not np.any(e1.others[c] == c)
        assert all(len(set(row)) == 19 for row in e1.others[c])
    assert metrics.make_episodes(5, 20, 3).others.shape == (5, 3, 4)  # way clamps to the class count
    q = e1.query_index(19)
    assert q.min() >= 0 and q.max() <= 18


def test_recognizability_hand():
    # exemplars at (0,0), (10,0), (0,10); 3-way episodes include every class
    ex = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    s = np.array([[[1.0, 0.0], [2.0, 1.0]],     # class 0: both nearest e0 -> 1.0
                  [[0.0, 9.0], [0.0, 8.0]],     # class 1: both nearest e2 -> 0.0
                  [[1.0, 9.0], [9.0, 1.0]]])    # class 2: first right, second nearest e1 -> depends on query
    eps = metrics.make_episodes(3, 3, 40, 1)
    correct, qi = metrics.episode_correct(s, ex, eps)
    rec = correct.mean(1)
    assert rec[0] == 1.0 and rec[1] == 0.0
    assert rec[2] == pytest.approx(np.mean(qi[2] == 0))


def test_random_embeddings_give_chance_recognizability():
    rng = np.random.default_rng(0)
    c = 40
    eps = metrics.make_episodes(c, 20, 500, 3)
    rec = metrics.recognizability_per_class(rng.normal(size=(c, 20, 8)), rng.normal(size=(c, 8)), eps)
    assert rec.mean() == pytest.approx(1 / 20, abs=0.01)


def test_originality_and_scale():
    f_s = np.array([[[3.0, 4.0], [0.0, 0.0]]])
    f_e = np.array([[0.0, 0.0]])
    np.testing.assert_allclose(metrics.originality(f_s, f_e, 1.0), [[5.0, 0.0]])
    np.testing.assert_allclose(metrics.originality(f_s, f_e, 5.0), [[1.0, 0.0]])
    ref = np.array([[1.0, 3.0], [5.0, 7.0]])  # pooled 1,3,5,7: std(ddof=1) = sqrt(20/3)
    assert metrics.feature_scale(ref) == pytest.approx(np.sqrt(20 / 3))


def test_recognizability_by_originality_hand():
    edges = metrics.bin_edges(np.array([0.0, 4.0]), 2)  # [0, 2, 4]
    np.testing.assert_allclose(edges, [0, 2, 4])
    orig = np.array([0.5, 1.5, 2.5, 4.0, 3.0])
    corr = np.array([1, 0, 1, 1, 0], dtype=bool)
    acc, cnt = metrics.recognizability_by_originality(orig, corr, edges)
    np.testing.assert_array_equal(cnt, [2, 3])
    np.testing.assert_allclose(acc, [0.5, 2 / 3])
    acc, cnt = metrics.recognizability_by_originality(np.array([0.1]), np.array([True]), np.array([0, 1, 2.0]))
    assert acc[0] == 1.0 and np.isnan(acc[1])


def test_distance_to_human_hand():
    d = metrics.distance_to_human(np.array([2.0, 1.0]), np.array([0.5, 1.0]), (1.0, 1.0), (2.0, 1.0))
    np.testing.assert_allclose(d, [np.hypot(0.5, 0.5), 0.0])


def test_proto_logits_and_nt_xent():
    sup = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    q = torch.tensor([[0.0, 1.0]])
    torch.testing.assert_close(proto_logits(sup, q), torch.tensor([[-1.0, -18.0]]))
    # NT-Xent by hand for 2 pairs of orthogonal unit vectors, temperature 1
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = nt_xent(z1, z1.clone(), 1.0)
    # row 0: sims to others (excluding self) = [0 (z1[1]), 1 (pos), 0 (z2[1])]
    expected = -np.log(np.e / (np.e + 2))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_other_class_never_returns_own_class():
    pool = np.stack([np.full((4, 2, 2), c, dtype=np.float32) for c in range(5)])  # (5, 4, 2, 2)
    s = generators.make("other_class").sample(pool[:, 0], 30, 0, pool)
    for c in range(5):
        assert not np.any(s[c] == c)


@pytest.mark.parametrize("name", [n for n in generators.GENERATORS if n not in generators.trained_names()])
def test_generator_contract(name):
    rng = np.random.default_rng(1)
    ex = (rng.random((3, 50, 50)) > 0.7).astype(np.float32)
    pool = (rng.random((3, 5, 50, 50)) > 0.7).astype(np.float32)
    out = generators.make(name, **({"strength": 1.0} if name == "affine" else {})).sample(ex, 4, 0, pool)
    assert out.shape[:2] == ((3, 5) if name == "human" else (3, 4)) and out.shape[2:] == (50, 50)
    assert out.min() >= 0 and out.max() <= 1


def test_kl_gauss_matches_torch_distributions():
    from torch.distributions import Normal, kl_divergence

    from engine.dvr.vae import kl_gauss

    mq, lq, mp, lp = torch.tensor([[0.3, -1.0]]), torch.tensor([[0.2, -0.5]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[-0.3, 0.4]])
    ref = kl_divergence(Normal(mq, (0.5 * lq).exp()), Normal(mp, (0.5 * lp).exp())).sum(-1)
    torch.testing.assert_close(kl_gauss(mq, lq, mp, lp), ref)
