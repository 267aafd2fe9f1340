"""A write that fails half-way (a full disk, simulated by a writer raising ENOSPC mid-write) leaves
the last good cache / artifact intact, says so clearly, and the rerun succeeds."""
from __future__ import annotations

import errno
import hashlib
import re

import duckdb
import numpy as np
import pytest

from engine.paths import DiskFullError

FULL = r"no space left on device while writing .*{name}.*; free space and rerun — nothing was lost"


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _enospc(path="x"):
    return OSError(errno.ENOSPC, "No space left on device", str(path))


@pytest.fixture(scope="module")
def encoder(tiny_weights):
    from engine.encoders import Encoder, ModelSpec

    return Encoder(ModelSpec("geolens-tiny", str(tiny_weights[0])))


@pytest.mark.parametrize("error", ["oserror", "duckdb"])
def test_cache_write_fails_half_way(cache_root, encoder, monkeypatch, error, capsys):
    from engine import precompute as pc
    from engine import store
    from engine.datasets.sources import resolve

    src = resolve("shapes", n=30, seed=21 if error == "oserror" else 22)
    good = pc.precompute(src, encoder, batch_size=10)
    path, before = good.cache.path, _digest(good.cache.path)
    img0, txt0, _ = good.cache.pairs()

    real, calls = store.insert_rows, [0]

    def full_disk(con, table, columns):
        calls[0] += 1
        if calls[0] > 4:  # the first batch (4 tables) is written, then the disk is full
            raise _enospc(path) if error == "oserror" else duckdb.IOException(
                f'IO Error: Could not write file "{path}.partial": No space left on device')
        return real(con, table, columns)

    monkeypatch.setattr(store, "insert_rows", full_disk)
    with pytest.raises(DiskFullError, match=FULL.format(name=path.name)) as info:
        pc.precompute(src, encoder, batch_size=10, force=True)
    assert "\n" not in str(info.value)
    assert _digest(path) == before  # the finished cache was never touched
    img, txt, _ = type(good.cache)(path).pairs()
    np.testing.assert_array_equal(img, img0)
    monkeypatch.setattr(store, "insert_rows", real)
    res = pc.precompute(src, encoder, batch_size=10, force=True)  # the rerun resumes from the partial file
    assert res.resumed_batches == 1 and res.n_pairs == 30
    img2, txt2, pid = res.cache.pairs()
    np.testing.assert_allclose(img2, img0, atol=1e-6)
    np.testing.assert_allclose(txt2, txt0, atol=1e-6)
    assert list(pid) == list(range(30))


def test_cli_says_disk_full_in_one_line(cache_root, tiny_weights, monkeypatch, capsys):
    from engine import cli
    from engine import precompute as pc

    def full_disk(*a, **k):
        raise _enospc()

    monkeypatch.setattr(pc, "_write_batch", full_disk)
    argv = ["precompute", "--dataset", "shapes", "--n", "12", "--seed", "23", "--model", "geolens-tiny",
            "--pretrained", str(tiny_weights[0]), "--batch-size", "6"]
    assert cli.main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "geolens: error" in ln][-1]
    err = err[err.index("geolens: error"):]
    assert err.startswith("geolens: error: no space left on device while writing ") and "\n" not in err, err
    assert "free space and rerun — nothing was lost" in err
    monkeypatch.undo()
    assert cli.main(argv) == 0


@pytest.fixture(scope="module")
def sae_cache(cache_root, encoder):
    from engine.datasets.sources import resolve
    from engine.precompute import precompute

    return precompute(resolve("shapes", n=48, seed=24), encoder, batch_size=48).cache


@pytest.mark.parametrize("where", ["weights", "stats"])
def test_sae_artifact_write_fails_half_way(sae_cache, monkeypatch, where):
    from engine import store
    from engine.sae import pipeline
    from engine.sae.pipeline import META, STATS, WEIGHTS, default_config, sae_dir, train_on_cache

    cfg = default_config(sae_cache, atoms=32, k=4, batch_pairs=16, epochs=1, min_steps=60, seed=1 if where == "weights" else 2)
    name, meta0 = train_on_cache(sae_cache, cfg, show_bar=False)
    folder = sae_dir(sae_cache, name)
    before = {f: _digest(folder / f) for f in (WEIGHTS, META, STATS)}

    if where == "weights":
        real = pipeline.save_file

        def half_then_full(state, filename):  # half the bytes reach the disk, then it is full
            real(state, filename)
            data = open(filename, "rb").read()
            open(filename, "wb").write(data[: len(data) // 2])
            raise _enospc(filename)

        monkeypatch.setattr(pipeline, "save_file", half_then_full)
    else:
        def full(con, table, columns):
            raise duckdb.IOException("IO Error: Could not write file: No space left on device")

        monkeypatch.setattr(store, "insert_rows", full)
    with pytest.raises(DiskFullError, match=FULL.format(name=name)):
        train_on_cache(sae_cache, cfg, name=name, force=True, show_bar=False)
    assert {f: _digest(folder / f) for f in before} == before  # the old SAE is whole
    assert not (folder / (WEIGHTS + ".tmp")).exists()
    monkeypatch.undo()
    name2, meta = train_on_cache(sae_cache, cfg, name=name, force=True, show_bar=False)
    assert name2 == name and meta["metrics"] == meta0["metrics"]  # same config, same seed: the same SAE
    assert _digest(folder / WEIGHTS) == before[WEIGHTS]


def test_export_fails_half_way(cache_root, encoder, tmp_path, monkeypatch, capsys):
    import pyarrow.parquet as pq

    from engine import cli
    from engine.datasets.sources import resolve
    from engine.precompute import precompute

    cache = precompute(resolve("shapes", n=10, seed=25), encoder, batch_size=10).cache
    out = tmp_path / "e.parquet"
    assert cli.main(["export", "--cache", cache.name, "--out", str(out)]) == 0
    before = _digest(out)
    real = pq.write_table

    def half(table, where, **kw):
        real(table.slice(0, 3), where, **kw)
        raise _enospc(where)

    monkeypatch.setattr(pq, "write_table", half)
    assert cli.main(["export", "--cache", cache.name, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    err = err[err.index("geolens: error"):].strip()
    assert "\n" not in err and re.search(r"^geolens: error: no space left on device while writing .*e\.parquet.*; free space and rerun", err), err
    assert _digest(out) == before and [p.name for p in tmp_path.iterdir()] == ["e.parquet"]
    monkeypatch.undo()
    assert cli.main(["export", "--cache", cache.name, "--out", str(out)]) == 0
