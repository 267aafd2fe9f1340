"""Interventions and composed retrieval on tiny hand-made dictionaries."""
import numpy as np
import pytest

from engine.atoms import interventions as iv


def test_bimodal_only_reconstruction_is_the_sum_over_bimodal_atoms():
    D = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.6, 0.8, 0]])  # (m=4, d=3)
    Z = np.array([[2.0, 0, 1.0, 0.5], [0, 3.0, 0, 1.0]])  # (n=2, m=4)
    bimodal = np.array([True, False, False, True])
    got = iv.decode_subset(Z, D, bimodal)
    want = np.array([[2.0 + 0.5 * 0.6, 0.5 * 0.8, 0], [1.0 * 0.6, 1.0 * 0.8, 0]])
    np.testing.assert_allclose(got, want)
    # bimodal-only + unimodal-only = full reconstruction
    np.testing.assert_allclose(iv.decode_subset(Z, D, bimodal) + iv.decode_subset(Z, D, ~bimodal), Z @ D)


def test_variants_mean_centred_and_shifted():
    D = np.eye(2)
    Zi, Zt = np.array([[1.0, 0], [3.0, 0]]), np.array([[0, 1.0], [0, 3.0]])
    vs = iv.variants(Zi @ D, Zt @ D, Zi, Zt, D, np.array([True, False]))
    np.testing.assert_allclose(vs["mean_centred"][0], [[-1, 0], [1, 0]])
    np.testing.assert_allclose(vs["mean_centred"][1], [[0, -1], [0, 1]])
    # Δ = (2, 0) − (0, 2) = (2, −2): images − Δ/2, texts + Δ/2 -> both clouds share the mean (1, 1)
    np.testing.assert_allclose(vs["shifted"][0].mean(0), vs["shifted"][1].mean(0))
    np.testing.assert_allclose(vs["shifted"][0], [[0, 1], [2, 1]])
    np.testing.assert_allclose(vs["bimodal_only"][1], 0)  # text codes use only the unimodal atom


def test_removing_unimodal_atoms_closes_a_synthetic_gap():
    rng = np.random.default_rng(0)
    n, shared = 200, 8
    D = np.eye(shared + 2)  # atoms 0..7 shared concepts, 8 image bias, 9 text bias
    S = np.abs(rng.normal(size=(n, shared))) * (rng.random((n, shared)) < 0.3)
    Zi = np.hstack([S, np.full((n, 1), 2.0), np.zeros((n, 1))])
    Zt = np.hstack([S, np.zeros((n, 1)), np.full((n, 1), 2.0)])
    bimodal = np.array([True] * shared + [False, False])
    rows = {r["variant"]: r for r in iv.intervention_table(iv.variants(Zi @ D, Zt @ D, Zi, Zt, D, bimodal))}
    assert rows["reconstructed"]["DiM"] > 0.5
    assert rows["bimodal_only"]["DiM"] == pytest.approx(0.0, abs=1e-9)
    assert rows["bimodal_only"]["full_gallery_R@10"] >= rows["reconstructed"]["full_gallery_R@10"]
    assert rows["unimodal_only"]["full_gallery_R@1"] <= 0.05  # the bias atoms carry no pairing
    assert rows["unimodal_only"]["probe_accuracy"] == 1.0


def test_ood_score_is_cosine_distance_to_fifth_nearest():
    gallery = np.array([[np.cos(a), np.sin(a)] for a in np.linspace(0, np.pi / 2, 7)])  # 7 unit vectors
    q = np.array([[1.0, 0.0]])
    # cosines to q: cos(0), cos(15°), ..., cos(90°); 5th nearest is at 60°
    assert iv.ood_score(q, gallery, k=5)[0] == pytest.approx(1 - np.cos(np.pi / 3))
    comp = iv.compose(np.array([[1.0, 0]]), np.array([0, 1.0]))
    np.testing.assert_allclose(comp, [[2 ** -0.5, 2 ** -0.5]])


def test_torch_reconstruct_equals_the_numpy_variants():
    import torch

    from engine.sae.learners import TopKSAE

    g = torch.Generator().manual_seed(3)
    model = TopKSAE(6, 12, 3)
    with torch.no_grad():
        model.bias.copy_(torch.randn(6, generator=g) * 0.1)
    xi = torch.nn.functional.normalize(torch.randn(23, 6, generator=g), dim=1).numpy()
    xt = torch.nn.functional.normalize(torch.randn(23, 6, generator=g), dim=1).numpy()
    bimodal = np.arange(12) % 3 == 0
    with torch.no_grad():
        Zi, Zt = model.encode(torch.from_numpy(xi)).numpy(), model.encode(torch.from_numpy(xt)).numpy()
    D, b = model.dictionary().detach().numpy(), model.bias.detach().numpy()
    want = iv.variants(xi, xt, Zi, Zt, D, bimodal, b)
    got = iv.variants_from(xi, xt, iv.reconstruct(model, xi, bimodal, chunk=5), iv.reconstruct(model, xt, bimodal, chunk=7))
    assert got.keys() == want.keys()
    for name in want:
        for a, w in zip(got[name], want[name]):
            np.testing.assert_allclose(a, w, atol=1e-5, err_msg=name)


def test_nearest_atoms_hand_made_dictionary():
    from engine.atoms.views import nearest_atoms

    D = np.array([[1.0, 0], [0.6, 0.8], [0, 2.0], [-1.0, 0], [3.0, 0.0]])  # atom 4 is atom 0 scaled: cosine 1
    idx, cos = nearest_atoms(D, 0, k=3, chunk=2)
    assert idx.tolist() == [4, 1, 2]
    np.testing.assert_allclose(cos, [1.0, 0.6, 0.0], atol=1e-6)
    idx, cos = nearest_atoms(D, 3, k=10)  # fewer atoms than k: every other atom, farthest last
    assert idx.tolist()[-2:] in ([0, 4], [4, 0]) and len(idx) == 4
    with pytest.raises(IndexError, match="atoms 0..4"):
        nearest_atoms(D, 5)
