"""`--engine ray`: precompute and SAE encoding as Ray Data jobs on a local 2-CPU cluster.

The Ray runs are compared with the single-process runs on the same captions set (with broken
images) and the same model (geolens-tiny, the default model's architecture, random weights):
same ids, texts, labels, thumbnails and skipped list, embeddings within 1e-5, same gap report;
a rerun encodes only the pairs missing from the shards; a SIGKILLed encoder actor loses and
duplicates nothing; SAE codes and atom statistics match the local computation.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from PIL import Image

from engine import cli, store
from engine.datasets.sources import resolve
from engine.embcache import EmbCache
from engine.encoders import Encoder, ModelSpec
from engine.precompute import cache_path, precompute
from engine.ray_precompute import RayConfig, connect, ray_precompute, shard_dir

N_GOOD = 26
BROKEN = ("truncated.png", "garbage.jpg", "missing.png")


@contextlib.contextmanager
def cache_root_at(path: Path):
    """Point $GEOLENS_CACHE at ``path`` for a while (single-process and Ray caches share a name)."""
    old = os.environ.get(store.ENV_CACHE)
    os.environ[store.ENV_CACHE] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop(store.ENV_CACHE, None)
        else:
            os.environ[store.ENV_CACHE] = old


@pytest.fixture(scope="module")
def cluster(cache_root):
    """A local Ray cluster (2 CPUs, this host only), started once for the module."""
    if ray.is_initialized():
        ray.shutdown()
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the fault hooks below run in actors
    # Ray's memory monitor kills the newest workers when the *machine* is above 95% memory, whoever
    # uses it; on a shared CI box that turns into endless retries. The kernel's OOM killer still applies.
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    try:
        connect(None, num_cpus=2)
    except Exception as exc:  # Ray gives its raylet a fixed 30 s to register: a loaded box can miss it once
        if "timed out during startup" not in str(exc):
            raise
        ray.shutdown()
        connect(None, num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def captions(tmp_path_factory) -> Path:
    """A captions CSV: N_GOOD small images of varied sizes, three broken ones among them, a label column."""
    d = tmp_path_factory.mktemp("ray-captions")
    (d / "imgs").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N_GOOD):
        Image.fromarray(rng.integers(0, 255, (30 + i, 50 + 2 * i, 3), dtype=np.uint8)).save(d / "imgs" / f"im{i}.png")
        rows.append((f"imgs/im{i}.png", f"a picture number {i}", "odd" if i % 2 else "even"))
    good = (d / "imgs" / "im0.png").read_bytes()
    (d / "imgs" / "truncated.png").write_bytes(good[: len(good) // 2])
    (d / "imgs" / "garbage.jpg").write_bytes(b"not an image")
    for at, name in zip((3, 11, 20), BROKEN):
        rows.insert(at, (f"imgs/{name}", f"broken {name}", "odd"))
    pd.DataFrame(rows, columns=["image", "caption", "parity"]).to_csv(d / "caps.csv", index=False)
    return d / "caps.csv"


@pytest.fixture(scope="module")
def encoder(tiny_weights) -> Encoder:
    return Encoder(ModelSpec("geolens-tiny", str(tiny_weights[0])), device="cpu")


@pytest.fixture(scope="module")
def reference(captions, encoder, tmp_path_factory) -> EmbCache:
    """The single-process cache of the same dataset and model."""
    with cache_root_at(tmp_path_factory.mktemp("ref-root")):
        return precompute(resolve(str(captions)), encoder, batch_size=16).cache


def assert_same_cache(a: EmbCache, b: EmbCache) -> None:
    ia, ib = a.items(), b.items()
    pd.testing.assert_frame_equal(ia, ib)  # ids, modality, pair ids, paths, texts
    ea, eb = a.embeddings(), b.embeddings()
    assert (ea[0] == eb[0]).all()
    assert np.abs(ea[1] - eb[1]).max() <= 1e-5
    sa = sorted(map(tuple, a.skipped().to_numpy().tolist()))
    assert sa == sorted(map(tuple, b.skipped().to_numpy().tolist()))
    assert len(sa) == len(BROKEN)
    pd.testing.assert_frame_equal(a.factors(), b.factors())
    assert a.factor_kinds() == b.factor_kinds()
    img_ids = ia.loc[ia.modality == "image", "id"]
    assert a.thumbnails(img_ids) == b.thumbnails(img_ids)
    for m in ("n_pairs", "n_skipped", "dim", "dataset", "model", "key"):
        assert a.manifest[m] == b.manifest[m], m
    n = a.path
    with contextlib.closing(store.connect_ro(n)) as con:  # every item once
        assert con.execute("SELECT count(*) = count(DISTINCT id) FROM items").fetchone()[0]
        assert con.execute("SELECT count(*) = count(DISTINCT id) FROM embeddings").fetchone()[0]


@pytest.fixture(scope="module")
def ray_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ray-root")


@pytest.fixture(scope="module")
def ray_cache(cluster, captions, tiny_weights, encoder, ray_root) -> EmbCache:
    """`geolens precompute --engine ray` through the CLI, shards kept."""
    with cache_root_at(ray_root):
        assert cli.main(["precompute", "--dataset", str(captions), "--model", "geolens-tiny",
                         "--pretrained", str(tiny_weights[0]), "--engine", "ray", "--workers", "1",
                         "--batch-size", "8", "--keep-shards"]) == 0
        return EmbCache(cache_path(resolve(str(captions)), encoder))


def test_ray_precompute_matches_single_process(ray_cache, reference, ray_root):
    from engine.gap.report import GapConfig, gap_report

    assert ray_cache.name == reference.name  # the same cache every page reads
    assert ray_cache.manifest["engine"] == "ray" and ray_cache.manifest["n_pairs"] == N_GOOD
    assert_same_cache(ray_cache, reference)
    with cache_root_at(ray_root):
        g_ray = gap_report(ray_cache, GapConfig(), fresh=True)
    g_ref = gap_report(reference, GapConfig(), fresh=True)
    flat = lambda d, p="": {k2: v2 for k, v in d.items() for k2, v2 in (flat(v, f"{p}{k}.") if isinstance(v, dict)  # noqa: E731
                                                                       else {f"{p}{k}": v}).items()}
    fr, ff = flat(g_ray), flat(g_ref)
    assert fr.keys() == ff.keys()
    for k in fr:
        if k.startswith("seconds."):
            continue
        if isinstance(fr[k], float):
            assert fr[k] == pytest.approx(ff[k], abs=1e-4), k
        elif k != "cache":
            assert fr[k] == ff[k], k


def _record_and_kill_once(marker_dir: str, pair: int):
    """A fault hook: record each batch's pairs, and SIGKILL the actor's own process the first time
    it is about to write the batch holding ``pair``."""
    def hook(pair_ids, at):
        if at != "before_write":
            return
        ids = sorted(int(p) for p in pair_ids)
        (Path(marker_dir) / f"batch-{ids[0]}-{os.getpid()}.txt").write_text(",".join(map(str, ids)))
        marker = Path(marker_dir) / "killed"
        if pair in ids and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
    return hook


def test_rerun_after_a_sigkill_encodes_exactly_the_missing_pairs(ray_cache, reference, captions, encoder, ray_root,
                                                                 tmp_path):
    """Shards lost + the cache deleted, then a rerun whose actor is SIGKILLed mid-run: the rerun
    encodes only the pairs of the lost shards, the killed batch is retried, nothing is lost or doubled."""
    folder = shard_dir(ray_cache.path)
    shards = sorted(folder.glob("pairs-*.parquet"))
    assert len(shards) == 4  # 29 pairs in batches of 8
    lost = set()
    for f in (shards[1], shards[3]):
        lost |= set(pd.read_parquet(f, columns=["pair_id"])["pair_id"].tolist())
        f.unlink()
    ray_cache.path.unlink()
    marks = tmp_path / "marks"
    marks.mkdir()
    victim = sorted(lost)[2]
    with cache_root_at(ray_root):
        res = ray_precompute(resolve(str(captions)), encoder, RayConfig(batch_size=8),
                             fault=_record_and_kill_once(str(marks), victim))
    killed_pid = (marks / "killed").read_text()
    batches = {p.name: {int(x) for x in p.read_text().split(",")} for p in marks.glob("batch-*.txt")}
    assert set().union(*batches.values()) == lost  # only the missing pairs were encoded
    retried = [name for name, ids in batches.items() if victim in ids]
    assert len(retried) == 2 and any(killed_pid in name for name in retried)  # killed once, then retried elsewhere
    assert res.resumed_batches == 2
    assert not folder.exists()  # shards are removed after the import by default
    assert_same_cache(res.cache, reference)  # 0 rows lost, 0 duplicated, same numbers


def test_import_keeps_one_copy_of_each_pair_and_refuses_gaps(captions, encoder, tmp_path):
    """A shard that overlaps another (a retried batch cut differently) is imported once; a pair in
    no shard stops the import with the fix."""
    from engine.ray_precompute import import_shards, shard_table, write_shard

    src = resolve(str(captions))
    n, d = len(src), encoder.dim
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(n, 2, d)).astype(np.float32)

    def shard(ids):
        ids = np.asarray(ids)
        ok = ids % 7 != 3
        t = shard_table(ids, ok, [f"p{i}" for i in ids], [f"cap {i}" for i in ids], ['{"parity": "x"}'] * len(ids),
                        [b"png"] * len(ids), ["" if o else "broken" for o in ok], emb[ids[ok], 0], emb[ids[ok], 1])
        return write_shard(tmp_path / "shards", t)

    (tmp_path / "shards").mkdir()
    for lo, hi in ((0, 10), (10, 20), (15, 25)):  # (15, 25) overlaps (10, 20)
        shard(range(lo, hi))
    path = tmp_path / "c.duckdb"
    with pytest.raises(RuntimeError, match=r"4 pairs are in no shard \(first: \[25, 26, 27, 28\]\); rerun"):
        import_shards(path, tmp_path / "shards", src, encoder, {})
    shard(range(25, n))
    import_shards(path, tmp_path / "shards", src, encoder, {"engine": "ray"})
    c = EmbCache(path)
    ok = np.array([i for i in range(n) if i % 7 != 3])
    ids, x = c.embeddings()
    assert (ids == np.sort(np.r_[2 * ok, 2 * ok + 1])).all()
    np.testing.assert_array_equal(x[0::2], emb[ok, 0])
    np.testing.assert_array_equal(x[1::2], emb[ok, 1])
    assert sorted(c.skipped()["path"]) == sorted(f"p{i}" for i in range(n) if i % 7 == 3)
    assert len(c.factors()) == len(ok) and c.manifest["engine"] == "ray" and c.manifest["n_pairs"] == len(ok)


def test_sae_encode_on_ray_matches_local(ray_cache, ray_root):
    from engine.sae.pipeline import default_config, train_on_cache
    from engine.sae.store import atom_table, sae_meta

    with cache_root_at(ray_root):
        cfg = default_config(ray_cache, arch="topk", atoms=48, k=4, min_steps=30, epochs=1, batch_pairs=16)
        name, meta = train_on_cache(ray_cache, cfg, show_bar=False)
        local_atoms = atom_table(ray_cache, name)
        local_codes = _codes(ray_cache, name)
        assert cli.main(["sae", "encode", "--cache", ray_cache.name, "--sae", name, "--engine", "ray",
                         "--batch-size", "10", "--workers", "1"]) == 0
        ray_atoms, ray_codes = atom_table(ray_cache, name), _codes(ray_cache, name)
        assert sae_meta(ray_cache, name)["encode"]["engine"] == "ray"
        assert sae_meta(ray_cache, name)["class_counts"] == meta["class_counts"]
    assert len(local_codes) == 4 * 2 * N_GOOD  # top-k: k codes per item
    pd.testing.assert_frame_equal(ray_codes[["id", "atom"]], local_codes[["id", "atom"]])
    assert np.abs(ray_codes["value"].to_numpy() - local_codes["value"].to_numpy()).max() <= 1e-5
    assert (ray_atoms["class"] == local_atoms["class"]).all()
    num = [c for c in local_atoms.columns if c not in ("atom", "class")]
    np.testing.assert_allclose(ray_atoms[num].to_numpy(float), local_atoms[num].to_numpy(float), atol=1e-5, equal_nan=True)


def _codes(cache: EmbCache, name: str) -> pd.DataFrame:
    from engine.sae.pipeline import STATS, sae_dir

    return store.query_df(sae_dir(cache, name) / STATS, "SELECT id, atom, value FROM codes ORDER BY id, atom")


def test_actor_pool_that_starves_the_job_is_refused_with_the_fix():
    from engine.ray_precompute import check_resources

    check_resources({"CPU": 2.0}, RayConfig(workers=1))  # one actor + one CPU for decoding
    with pytest.raises(ValueError, match=r"2 workers x 1 CPU leave no CPU .* use --cpus-per-worker 0.5"):
        check_resources({"CPU": 2.0}, RayConfig(workers=2))
    check_resources({"CPU": 2.0}, RayConfig(workers=2, cpus_per_worker=0.5))
    with pytest.raises(ValueError, match=r"need 2 GPUs; the Ray cluster has 1: use --workers 1"):
        check_resources({"CPU": 16.0, "GPU": 1.0}, RayConfig(workers=2, gpus_per_worker=1.0))
    with pytest.raises(ValueError, match="workers"):
        RayConfig(workers=0)


def test_merged_shard_tables_equal_one_pass():
    """sae encode --engine ray merges per-shard encode_tables results; equal to one pass over all items."""
    import torch

    from engine.sae.registry import make_learner
    from engine.sae.ray_encode import id_shards, merge_tables
    from engine.sae.tables import encode_tables

    torch.manual_seed(0)
    model = make_learner("topk", 8, 16, 3).eval()
    rng = np.random.default_rng(0)
    ids = np.sort(rng.choice(200, size=90, replace=False)).astype(np.int64)  # gaps, like skipped pairs
    x = rng.normal(size=(90, 8)).astype(np.float32)
    x[40] = x[41]  # equal codes: ties in the top lists go to the smaller id
    img = ids % 2 == 0
    whole = encode_tables(model, [(ids, x, img)], n_top=5)
    parts = []
    for _, lo, hi in id_shards(ids.min(), ids.max(), 37):
        sel = (ids >= lo) & (ids <= hi)
        parts.append(encode_tables(model, [(ids[sel], x[sel], img[sel])] if sel.any() else [], n_top=5))
    merged = merge_tables(parts)
    assert merged.n_items == whole.n_items == {"image": int(img.sum()), "text": int((~img).sum())}
    np.testing.assert_allclose(merged.energy, whole.energy, rtol=1e-12)
    np.testing.assert_array_equal(merged.count, whole.count)
    np.testing.assert_array_equal(merged.top_ids, whole.top_ids)
    np.testing.assert_array_equal(merged.top_values, whole.top_values)
    for k in ("item_ids", "item_image", "item_offsets", "item_atoms", "item_values"):
        np.testing.assert_array_equal(getattr(merged, k), getattr(whole, k), err_msg=k)
    assert id_shards(3, 10, 4) == [(0, 3, 6), (1, 7, 10)]
