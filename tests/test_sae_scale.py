"""SAE at scale: the fast MP encoder against the textbook loop, the streamed batch order, streamed
training equal to in-memory training, and the per-atom tables an interaction reads."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.sae.config import SAEConfig
from engine.sae.learners import MPSAE, matching_pursuit, mp_select, mp_values, scatter_codes
from engine.sae.stream import ArraySource, CacheSource, epoch_batches, epoch_groups, epoch_order, init_sample
from engine.sae.train import train_loop, train_source


def residual_mp(x, D, k):
    """The textbook loop (overcomplete's MpSAE), autograd through every step: dense codes (n, m)."""
    z, r = torch.zeros(x.shape[0], D.shape[0], dtype=x.dtype), x
    rows = torch.arange(x.shape[0])
    for _ in range(k):
        s = r @ D.T
        v, j = s.max(1)
        z = z + torch.zeros_like(z).index_put((rows, j), v)
        r = r - v[:, None] * D[j]
    return z


def test_fast_mp_values_and_gradients_equal_the_residual_loop():
    g = torch.Generator().manual_seed(4)
    W = torch.randn(60, 12, generator=g, dtype=torch.float64)
    x = torch.randn(30, 12, generator=g, dtype=torch.float64)
    W1, W2 = W.clone().requires_grad_(True), W.clone().requires_grad_(True)
    D1, D2 = W1 / W1.norm(dim=1, keepdim=True), W2 / W2.norm(dim=1, keepdim=True)
    z_ref = residual_mp(x, D1, 7)
    idx, val = matching_pursuit(x, D2, 7)
    z = scatter_codes(idx, val, 60)
    torch.testing.assert_close(z, z_ref, atol=1e-10, rtol=0)
    target = torch.randn(30, 12, generator=g, dtype=torch.float64)
    ((z_ref @ D1 - target) ** 2).sum().backward()
    ((z @ D2 - target) ** 2).sum().backward()
    torch.testing.assert_close(W2.grad, W1.grad, atol=1e-9, rtol=0)


def test_mp_triangular_values_hand_worked():
    s2 = 2 ** -0.5
    D = torch.tensor([[1.0, 0.0], [0.0, 1.0], [s2, s2]])
    x = torch.tensor([[3.0, 2.0]])
    idx = mp_select(x, D, 2)
    assert idx.tolist() == [[2, 0]]
    val, DJ = mp_values(x, D, idx)  # v1 = 5/√2; v2 = ⟨x, e0⟩ − v1 ⟨D2, e0⟩ = 3 − 5/2 = 0.5
    torch.testing.assert_close(val, torch.tensor([[5 * s2, 0.5]]))
    model = MPSAE(2, 3, 2)
    with torch.no_grad():
        model.weight.copy_(D)
        z, x_hat = model(x)
    torch.testing.assert_close(x_hat, z @ D)  # the sparse decode equals the dense one
    torch.testing.assert_close(x_hat, torch.tensor([[3.0, 2.5]]))


@pytest.mark.parametrize("n,block,window", [(50, 64, 1), (203, 16, 3), (203, 10, 1)])
def test_epoch_batches_cover_every_row_once(n, block, window):
    batches = list(epoch_batches(n, 32, seed=5, epoch=2, block=block, window=window))
    assert len(batches) == -(-n // 32) and all(len(b) == 32 for b in batches[:-1])
    rows = torch.cat(batches)
    assert sorted(rows.tolist()) == list(range(n))
    if block * window >= n:  # one group: exactly the full permutation of before
        assert torch.equal(rows, epoch_order(n, 5, 2))
    else:  # the epoch is the groups in turn; each group holds whole blocks, at most `window` of them
        groups = list(epoch_groups(n, 5, 2, block, window))
        assert torch.equal(torch.cat(groups), rows)
        for grp in groups:
            blocks = (grp // block).unique()
            assert len(blocks) <= window
            assert sorted(grp.tolist()) == [r for b in blocks.tolist() for r in range(b * block, min(n, (b + 1) * block))]
    assert not torch.equal(torch.cat(list(epoch_batches(n, 32, 5, 3, block, window))), rows)  # epochs differ


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    from engine.gap.synthetic import write_random_cache

    return write_random_cache(n=203, d=16, folder=tmp_path_factory.mktemp("stream"))


@pytest.mark.parametrize("arch", ["mp", "topk"])
def test_streamed_training_equals_in_memory(small_cache, arch, tmp_path):
    cfg = SAEConfig(arch=arch, atoms=24, k=3, epochs=1, min_steps=14, batch_pairs=32, lr=5e-3, stream_block=16,
                    stream_window=3, checkpoint_every=5)
    img, txt, _ = small_cache.pairs()
    mem = MPSAE(16, 24, 3) if arch == "mp" else __import__("engine.sae.learners", fromlist=["TopKSAE"]).TopKSAE(16, 24, 3)
    streamed = type(mem)(16, 24, 3)
    a = train_loop(mem, img, txt, cfg, device="cpu", show_bar=False)
    src = CacheSource(small_cache, block=cfg.stream_block, window=cfg.stream_window)
    b = train_source(streamed, src, cfg, device="cpu", show_bar=False)
    assert a["steps"] == b["steps"] == 14 and a["history"] == b["history"]
    for (k1, v1), (k2, v2) in zip(mem.state_dict().items(), streamed.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    assert len(src._blocks) <= 2 * cfg.stream_window  # memory O(block · window), not O(N)
    assert src.blocks_read > -(-203 // 16)  # blocks were re-read each epoch, not all held


def test_init_sample_is_the_same_for_every_source(small_cache, monkeypatch):
    import engine.sae.stream as stream

    img, txt, _ = small_cache.pairs()
    x, rows = init_sample(ArraySource(img, txt), torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, torch.from_numpy(np.concatenate([img, txt])))  # small: every row
    monkeypatch.setattr(stream, "INIT_MAX_ROWS", 50)  # large: a seeded sample, the same rows from the cache
    xa, ra = init_sample(ArraySource(img, txt), torch.Generator().manual_seed(1))
    xc, rc = init_sample(CacheSource(small_cache, block=16), torch.Generator().manual_seed(1))
    assert len(ra) == 50 and torch.equal(ra, rc) and torch.equal(xa, xc)
    torch.testing.assert_close(xa, torch.from_numpy(np.concatenate([img, txt])[ra.numpy()]))


def test_chunked_tables_equal_the_dense_reference(tmp_path):
    """encode_tables in chunks of 7 items == the pandas tables built from dense codes of all items at once."""
    import pandas as pd

    from engine.sae import stats, tables

    g = torch.Generator().manual_seed(2)
    model = MPSAE(6, 10, 3)
    n = 41
    x = torch.nn.functional.normalize(torch.randn(n, 6, generator=g), dim=1).numpy()
    ids = np.arange(100, 100 + n)[::-1].copy()  # unsorted on purpose
    modality = np.where(np.arange(n) % 3 == 0, "image", "text")
    with torch.no_grad():
        z = model.encode(torch.from_numpy(x)).numpy()
    codes = stats.sparse_codes(z, ids)
    modality_of = pd.Series(modality, index=ids)
    n_items = {m: int((modality == m).sum()) for m in ("image", "text")}
    want_atoms = stats.atom_stats(codes, modality_of, n_items, 10)
    want_top = stats.top_items(codes, modality_of, 4)
    want_hist = stats.histograms(codes, modality_of, 5)

    got = stats.compute_stats(model, ids, x, modality, n_top=4, bins=5, chunk=7)
    cols = [c for c in want_atoms.columns]
    pd.testing.assert_frame_equal(got["atoms"][cols], want_atoms, check_dtype=False, rtol=1e-5)
    pd.testing.assert_frame_equal(got["top_items"], want_top, check_dtype=False)
    key = ["atom", "modality", "bin"]
    pd.testing.assert_frame_equal(got["histograms"].sort_values(key).reset_index(drop=True),
                                  want_hist.sort_values(key).reset_index(drop=True), check_dtype=False)
    pd.testing.assert_frame_equal(got["codes"].sort_values(["id", "atom"]).reset_index(drop=True),
                                  codes.sort_values(["id", "atom"]).reset_index(drop=True), check_dtype=False)

    tables.write_tables(tmp_path, got["arrays"])
    busiest = int(want_top.groupby("atom").size().idxmax())
    for mod in ("image", "text"):
        ref = want_top[(want_top["atom"] == busiest) & (want_top["modality"] == mod)]
        top = tables.atom_top_items(tmp_path, busiest, k=4, modality=mod)
        assert top["id"].tolist() == ref["id"].tolist() and top["rank"].tolist() == ref["rank"].tolist()
        np.testing.assert_allclose(top["value"], ref["value"])
    for atom in range(10):  # codes by atom: every item using it, largest value first
        ref = codes[codes["atom"] == atom].sort_values(["value", "id"], ascending=[False, True])
        got_a = tables.atom_codes(tmp_path, atom)
        assert sorted(got_a["id"].tolist()) == sorted(ref["id"].tolist())
        assert (np.diff(got_a["value"].to_numpy()) <= 0).all()
    item = int(ids[5])
    code = tables.item_code(tmp_path, item)
    nz = np.nonzero(z[5])[0]
    assert sorted(code["atom"].tolist()) == nz.tolist()
    np.testing.assert_allclose(code.set_index("atom").loc[nz, "value"], z[5, nz], rtol=1e-6)
    assert tables.item_code(tmp_path, 99).empty
    with pytest.raises(IndexError, match="atoms 0..9"):
        tables.atom_top_items(tmp_path, 10)


def test_streamed_evaluation_equals_in_memory(small_cache):
    from engine.sae.metrics import evaluate, evaluate_source

    img, txt, _ = small_cache.pairs()
    model = MPSAE(16, 24, 3)
    model.init_from_data(torch.from_numpy(np.concatenate([img, txt])), torch.Generator().manual_seed(0))
    want = evaluate(model, img, txt)
    got = evaluate_source(model, CacheSource(small_cache, block=16), chunk=50)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=2e-6), k


def test_sae_epoch_runs_one_epoch_of_steps(small_cache, monkeypatch):
    import engine.sae.train as train

    calls = []
    real = train.train_source

    def spy(model, source, cfg, *a, **kw):
        out = real(model, source, cfg, *a, **kw)
        calls.append((type(source).__name__, out["steps_run"]))
        return out

    monkeypatch.setattr(train, "train_source", spy)
    cfg = SAEConfig(atoms=24, k=3, batch_pairs=64, stream_block=32, stream_window=2)
    img, txt, _ = small_cache.pairs()
    assert train.sae_epoch(small_cache, cfg, device="cpu") > 0
    assert train.sae_epoch((img, txt), cfg, device="cpu") > 0
    assert calls == [("CacheSource", 4), ("ArraySource", 4)]  # ceil(203 / 64) steps each
