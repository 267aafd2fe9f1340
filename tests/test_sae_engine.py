"""SAE engine: learners' contract, hand-worked MP and alignment loss, metrics, stats, synthetic data."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from engine.sae.archetypal import ArchetypalSAE, kmeans
from engine.sae.config import SAEConfig
from engine.sae.learners import BatchTopKSAE, MPSAE, matching_pursuit, scatter_codes
from engine.sae.registry import LEARNER_NAMES, make_learner
from engine.sae.losses import alignment_loss, mask_top1, sae_loss
from engine.sae.metrics import code_metrics, explained_variance, evaluate
from engine.sae.shapes_check import indicator_corr
from engine.sae.stats import atom_stats, classify, histograms, sparse_codes, top_items
from engine.sae.synthetic import SyntheticConfig, generate, match_atoms, recovery
from engine.sae.train import train_loop

S2 = 1 / math.sqrt(2)


def tiny_pairs(n=96, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(n, d, generator=g) + 2 * torch.eye(d)[0], dim=1)
    txt = torch.nn.functional.normalize(img + 0.3 * torch.randn(n, d, generator=g) - 2 * torch.eye(d)[1], dim=1)
    return img, txt


def tiny_cfg(arch, **kw):
    return SAEConfig(**{"arch": arch, "atoms": 16, "k": 3, "min_steps": 30, "batch_pairs": 32, "lr": 5e-3,
                        "checkpoint_every": 10, **kw})


@pytest.mark.parametrize("arch", LEARNER_NAMES)
def test_contract_every_learner(arch):
    img, txt = tiny_pairs()
    cfg = tiny_cfg(arch)
    model = make_learner(arch, 8, 16, 3, **cfg.learner_kwargs())
    summary = train_loop(model, img, txt, cfg, show_bar=False)
    assert summary["steps"] == 30
    x = torch.cat([img, txt])
    with torch.no_grad():
        z = model.encode(x)
        x_hat = model.decode(z)
        D = model.dictionary()
    assert z.shape == (192, 16) and x_hat.shape == (192, 8) and D.shape == (16, 8)
    if arch != "batchtopk":  # BatchTopK keeps k per row on average, through a threshold at inference
        assert int((z != 0).sum(1).max()) <= 3
    keep = torch.zeros(16, dtype=torch.bool)
    keep[::2] = True
    with torch.no_grad():  # the intervention one-liner: decode(z * keep) == Σ_{k∈keep} z_k D_k + b
        assert torch.allclose(model.decode(z * keep), (z * keep) @ D + model.bias, atol=1e-6)
    ev = evaluate(model, img.numpy(), txt.numpy())
    assert ev["ev"] > 0.3, ev
    hist = np.array(summary["history"])
    assert hist[-1, 2] < hist[0, 2]  # the reconstruction error went down


def test_mp_hand_worked():
    D = torch.tensor([[1.0, 0.0], [0.0, 1.0], [S2, S2]])
    x = torch.tensor([[3.0, 2.0]])
    # step 1: s = (3, 2, 5/√2): atom 2, z2 = 5/√2, r = (0.5, −0.5); step 2: s = (0.5, −0.5, 0): atom 0
    idx, val = matching_pursuit(x, D, 2)
    assert idx.tolist() == [[2, 0]]
    assert torch.allclose(val, torch.tensor([[5 * S2, 0.5]]), atol=1e-6)
    z = scatter_codes(idx, val, 3)
    assert torch.allclose(z @ D, torch.tensor([[3.0, 2.5]]), atol=1e-6)


def test_mp_matches_residual_reference():
    """The Gram-matrix implementation equals the textbook residual loop (as in overcomplete's MpSAE)."""
    g = torch.Generator().manual_seed(1)
    D = torch.nn.functional.normalize(torch.randn(40, 10, generator=g), dim=1)
    x = torch.randn(25, 10, generator=g)
    z_ref, r = torch.zeros(25, 40), x.clone()
    for _ in range(6):
        s = r @ D.T
        v, j = s.max(1)
        z_ref[torch.arange(25), j] += v
        r = r - v[:, None] * D[j]
    idx, val = matching_pursuit(x, D, 6)
    assert torch.allclose(scatter_codes(idx, val, 40), z_ref, atol=1e-5)
    model = MPSAE(10, 40, 6)
    with torch.no_grad():
        model.weight.copy_(D)
        assert torch.allclose(model.encode(x), z_ref, atol=1e-5)


def test_alignment_loss_hand_computed():
    z_img = torch.tensor([[3.0, 1.0, 0.0, 2.0], [1.0, 0.0, 0.0, 0.0]])
    z_txt = torch.tensor([[0.0, 2.0, 1.0, 4.0], [1.0, 0.0, 0.0, 0.0]])
    a, b = mask_top1(z_img, z_txt)  # pair 0: atoms 0 (image top-1) and 3 (text top-1) zeroed in both
    assert a[0].tolist() == [0, 1, 0, 0] and b[0].tolist() == [0, 2, 1, 0]
    # cos((0,1,0,0), (0,2,1,0)) = 2/√5; pair 1 is all masked: cosine 0
    expected = -(2 / math.sqrt(5) + 0.0) / 2
    assert float(alignment_loss(z_img, z_txt)) == pytest.approx(expected, abs=1e-6)
    x = torch.zeros(4, 2)
    x_hat = torch.ones(4, 2)
    z = torch.cat([z_img, z_txt])
    loss, parts = sae_loss(x, x_hat, z, beta=0.5)
    assert float(loss) == pytest.approx(1.0 + 0.5 * expected, abs=1e-6)
    assert float(sae_loss(x, x_hat, z, beta=0.0)[0]) == pytest.approx(1.0)


def test_explained_variance_is_mean_centred():
    x = np.array([[10.0, 0.0], [12.0, 0.0]])
    x_hat = np.array([[11.0, 0.0], [11.0, 0.0]])
    # residual 2, variance around the mean (11, 0) is 2: EV = 0; against zero it would be 1 − 2/244
    assert explained_variance(x, x_hat) == pytest.approx(0.0)
    assert 1 - 2 / 244 > 0.99
    assert code_metrics(np.array([[1.0, 0, 0], [2.0, 3.0, 0]])) == {"l0": 1.5, "dead_fraction": pytest.approx(1 / 3)}


def test_batchtopk_keeps_k_per_row_on_average():
    model = BatchTopKSAE(8, 16, 3).train()
    x = torch.randn(10, 8)
    z = model.encode(x)
    assert int((z != 0).sum()) <= 30
    assert float(model.threshold) >= 0


def test_archetypal_constraints_and_formula():
    img, txt = tiny_pairs()
    cfg = tiny_cfg("archetypal", delta=0.05, n_centroids=12)
    model = ArchetypalSAE(8, 16, 3, delta=0.05, n_centroids=12)
    gen = torch.Generator().manual_seed(0)
    model.init_from_data(torch.cat([img, txt]), gen)
    assert torch.equal(model.W.data[:12], torch.eye(12))  # identity init (rows ≥ c wrap around)
    train_loop(model, img, txt, cfg, show_bar=False)
    W, L = model.W.detach(), model.Lambda.detach()
    assert (W >= 0).all() and torch.allclose(W.sum(1), torch.ones(16), atol=1e-5)
    assert (L.norm(dim=1) <= 0.05 + 1e-6).all()
    D = torch.exp(model.log_scale) * (W @ model.C + L)
    assert torch.allclose(model.dictionary(), D)
    rows, w = model.anchors(3)
    assert rows.shape == (16, 3) and int(rows.max()) < 192


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    x = torch.cat([c + 0.1 * torch.randn(30, 2, generator=g) for c in centres])
    cent = kmeans(x, 3, torch.Generator().manual_seed(3))
    d = torch.cdist(centres, cent).min(1).values
    assert (d < 0.2).all()


def test_resume_from_checkpoint_equals_uninterrupted(tmp_path):
    img, txt = tiny_pairs()
    cfg = tiny_cfg("mp", min_steps=40)
    full = MPSAE(8, 16, 3)
    train_loop(full, img, txt, cfg, show_bar=False)

    class Stop(Exception):
        pass

    def stop_at_25(p):  # engine.core.progress.Progress snapshots, one per step
        if p.done == 25:
            raise Stop

    ckpt = tmp_path / "checkpoint.pt"
    part = MPSAE(8, 16, 3)
    with pytest.raises(Stop):
        train_loop(part, img, txt, cfg, checkpoint=ckpt, progress=stop_at_25, show_bar=False)
    assert ckpt.exists()
    resumed = MPSAE(8, 16, 3)
    summary = train_loop(resumed, img, txt, cfg, checkpoint=ckpt, show_bar=False)
    assert summary["steps_run"] == summary["steps"] - 20  # resumed from the checkpoint at step 20
    assert torch.allclose(resumed.dictionary(), full.dictionary(), atol=1e-6)


def test_atom_stats_hand_computed():
    # items 0, 2 images; 1, 3 texts. atom 0 image-only, atom 1 bimodal, atom 2 text-heavy, atom 3 dead
    codes = pd.DataFrame({"id": [0, 0, 2, 1, 1, 3], "atom": [0, 1, 1, 1, 2, 2], "value": [2.0, 1.0, 1.0, 1.0, 3.0, 1.0]})
    mod = pd.Series(["image", "text", "image", "text"], index=[0, 1, 2, 3])
    st = atom_stats(codes, mod, {"image": 2, "text": 2}, 4, eps=0.05)
    assert st["energy_image"].tolist() == [2.0, 1.0, 0.0, 0.0]  # (4 + 0)/2, (1 + 1)/2
    assert st["energy_text"].tolist() == [0.0, 0.5, 5.0, 0.0]  # (1)/2, (9 + 1)/2
    assert st["mu"].iloc[1] == pytest.approx(2 / 3)
    assert st["class"].tolist() == ["image", "bimodal", "text", "dead"]
    assert st["freq_image"].tolist() == [0.5, 1.0, 0.0, 0.0]
    assert st["share_text"].tolist() == pytest.approx([0.0, 0.5 / 5.5, 5.0 / 5.5, 0.0])
    top = top_items(codes, mod, 1)
    assert top[(top.atom == 2) & (top.modality == "text")][["id", "value"]].values.tolist() == [[1, 3.0]]
    h = histograms(codes, mod, bins=3)
    assert int(h[h.atom == 2]["count"].sum()) == 2
    assert classify(np.array([0.04, 0.5, 0.96, np.nan]), np.array([1, 1, 1, 0]), 0.05).tolist() == \
        ["text", "bimodal", "image", "dead"]
    assert classify(np.array([0.04]), np.array([1]), 0.01).tolist() == ["bimodal"]


def test_sparse_codes_round_trip():
    z = np.array([[0.0, 1.5], [2.0, 0.0]], dtype=np.float32)
    df = sparse_codes(z, np.array([10, 11]))
    assert df.values.tolist() == [[10, 1, 1.5], [11, 0, 2.0]]


def test_synthetic_generator_and_hungarian():
    cfg = SyntheticConfig(d=16, n_shared=6, n_bias=2, n_pairs=500)
    data = generate(cfg)
    assert data.img.shape == (500, 16) and data.true_atoms.shape == (10, 16)
    assert np.allclose(np.linalg.norm(data.img, axis=1), 1, atol=1e-5)
    assert data.true_labels.tolist().count("bimodal") == 6
    broken = generate(dataclasses.replace(cfg, iso_energy=False))
    assert broken.true_atoms.shape == (16, 16) and "bimodal" not in broken.true_labels.tolist()
    perm = np.random.default_rng(0).permutation(10)
    learned = np.concatenate([data.true_atoms[perm], np.random.default_rng(1).standard_normal((3, 16))])
    idx, cos = match_atoms(data.true_atoms, learned)
    assert (perm[idx] == np.arange(10)).all() and np.allclose(cos, 1, atol=1e-5)
    # codes: learned atom for shared j fires equally in both modalities, bias atoms in one only
    z_img = np.zeros((4, 13))
    z_txt = np.zeros((4, 13))
    inv = np.argsort(perm)
    z_img[:, inv[:6]] = 1.0
    z_txt[:, inv[:6]] = 1.0
    z_img[:, inv[6:8]] = 1.0
    z_txt[:, inv[8:]] = 1.0
    rec = recovery(data, learned, z_img, z_txt)
    assert rec == {"match_cosine": pytest.approx(1.0, abs=1e-5), "label_accuracy": 1.0}
    z_txt[:, inv[:6]] = 0.0  # shared atoms now image-only: 6 of 10 labels wrong
    assert recovery(data, learned, z_img, z_txt)["label_accuracy"] == pytest.approx(0.4)


def test_indicator_corr_matches_numpy():
    rng = np.random.default_rng(0)
    labels = rng.choice(["a", "b", "c"], 50)
    z = rng.random((50, 4)) + (labels == "b")[:, None] * np.array([2.0, 0, 0, 0])
    want = [max(np.corrcoef(z[:, j], (labels == v).astype(float))[0, 1] for v in "abc") for j in range(4)]
    assert np.allclose(indicator_corr(z, labels), want)
