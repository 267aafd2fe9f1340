"""`geolens sae encode`: a trained SAE's codes and atom statistics over every item of its cache.

``engine="local"`` is what ``train-sae`` does at the end of training (one process,
``engine.sae.pipeline.write_artifact_stats``). ``engine="ray"`` shards the items by id the same
way as ``engine.ray_precompute``: an actor pool (one actor per GPU, or CPU actors) loads the SAE
once per actor; each actor task reads one shard's embeddings from the cache file (read-only),
encodes them with ``engine.sae.metrics.encode_all`` and writes the shard's sparse codes
(``engine.sae.stats.sparse_codes``) as ``codes-<shard>.parquet``, atomically. Done shards are
skipped on a rerun; a killed actor's task is retried and rewrites the same file. The driver then
builds the atom table, top items and histograms from all codes with the same functions as the
local path, and writes the SAE's ``stats.duckdb`` atomically.

Shards live in ``<sae folder>/ray-codes-<weights hash>-s<shard size>/`` and are removed once the
stats are written.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from engine.config import atomic_write_text, file_hash
from engine.embcache import EmbCache
from engine.sae.pipeline import META, STATS, WEIGHTS, anchor_table, sae_dir, write_artifact_stats
from engine.sae.stats import DEFAULT_EPS, atom_stats, compute_stats, histograms, sparse_codes, top_items, write_stats

ENGINES = ("local", "ray")
_DEFAULTS = {k: v.default for k, v in inspect.signature(compute_stats).parameters.items() if k in ("n_top", "bins")}


def item_shards(ids: np.ndarray, size: int) -> list[tuple[int, int, int]]:
    """(shard, first id, last id) covering the sorted item ids ``size`` at a time."""
    ids = np.sort(np.asarray(ids))
    return [(s, int(ids[i]), int(ids[min(i + size, len(ids)) - 1])) for s, i in enumerate(range(0, len(ids), size))]


def tables_from_codes(model, codes: pd.DataFrame, ids: np.ndarray, modality: np.ndarray, eps: float) -> dict:
    """``compute_stats``'s tables from codes already computed (same functions, same defaults)."""
    modality_of = pd.Series(np.asarray(modality), index=np.asarray(ids))
    n_items = {m: int((np.asarray(modality) == m).sum()) for m in ("image", "text")}
    D = model.dictionary().detach().cpu().numpy()
    atoms = atom_stats(codes, modality_of, n_items, D.shape[0], eps)
    atoms["norm"] = np.linalg.norm(D, axis=1).astype(np.float32)
    return {"atoms": atoms, "top_items": top_items(codes, modality_of, _DEFAULTS["n_top"]),
            "histograms": histograms(codes, modality_of, _DEFAULTS["bins"]), "codes": codes, "dictionary": D}


class _EncodeShard:
    """Actor: the SAE loaded once; each call reads a shard's embeddings and writes its codes."""

    def __init__(self, cache_path: str, model, folder: str, device: str, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.cache = EmbCache(cache_path)
        self.model = model.to(device).eval()  # shipped by the driver: workers need no access to the SAE's folder
        self.folder = Path(folder)

    def __call__(self, batch: dict) -> dict:
        import contextlib

        from engine import store
        from engine.sae.metrics import encode_all

        out = []
        for s, lo, hi in zip(batch["shard"], batch["lo"], batch["hi"]):
            with contextlib.closing(store.connect_ro(self.cache.path)) as con:
                ids = con.execute("SELECT id FROM embeddings WHERE id BETWEEN ? AND ? ORDER BY id",
                                  [int(lo), int(hi)]).fetchnumpy()["id"]
                x = store.fetch_array(con, "SELECT emb FROM embeddings WHERE id BETWEEN ? AND ? ORDER BY id",
                                      [int(lo), int(hi)])
            z, _ = encode_all(self.model, x)
            codes = sparse_codes(z, np.asarray(ids))
            path = self.folder / f"codes-{int(s):06d}.parquet"
            tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
            pq.write_table(pa.Table.from_pandas(codes, preserve_index=False), tmp)
            os.replace(tmp, path)
            out.append(len(ids))
        return {"shard": np.asarray(batch["shard"]), "n_items": np.array(out)}


def ray_codes(cache: EmbCache, name: str, model, ids: np.ndarray, cfg) -> pd.DataFrame:
    """Every item's sparse code (id, atom, value), computed as a Ray job in shards of cfg.batch_size items."""
    from tqdm import tqdm

    from engine.ray_precompute import connect

    ray = connect(cfg.address)
    sae = sae_dir(cache, name)
    folder = sae / f"ray-codes-{file_hash(sae / WEIGHTS, 12)}-s{cfg.batch_size}"
    folder.mkdir(parents=True, exist_ok=True)
    shards = item_shards(ids, cfg.batch_size)
    todo = [s for s in shards if not (folder / f"codes-{s[0]:06d}.parquet").exists()]
    bar = tqdm(total=len(ids), initial=len(ids) - sum(_count(ids, lo, hi) for _, lo, hi in todo),
               desc="sae encode[ray]", unit="item")
    if todo:
        ds = ray.data.from_items([{"shard": s, "lo": lo, "hi": hi} for s, lo, hi in todo])
        ds = ds.map_batches(_EncodeShard, batch_size=1, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=cfg.workers),
                            num_gpus=cfg.gpus_per_worker or None, num_cpus=cfg.cpus_per_worker,
                            fn_constructor_kwargs={"cache_path": str(cache.path), "model": model.cpu(), "folder": str(folder),
                                                   "device": "cuda" if cfg.gpus_per_worker > 0 else "cpu",
                                                   "threads": int(max(1, cfg.cpus_per_worker))})
        for row in ds.iter_rows():
            bar.update(int(row["n_items"]))
    bar.close()
    parts = [pq.read_table(folder / f"codes-{s:06d}.parquet").to_pandas() for s, _, _ in shards]
    codes = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["id", "atom", "value"])
    codes = codes.astype({"id": np.int64, "atom": np.int32, "value": np.float32})
    got = np.unique(codes["id"].to_numpy())
    if not np.isin(got, ids).all():
        raise RuntimeError(f"codes in {folder} name items the cache does not have; delete the folder and rerun")
    if not cfg.keep_shards:
        shutil.rmtree(folder, ignore_errors=True)
    return codes


def _count(ids: np.ndarray, lo: int, hi: int) -> int:
    return int(((ids >= lo) & (ids <= hi)).sum())


def encode_stats(cache: EmbCache, name: str, engine: str = "local", cfg=None, eps: float | None = None) -> dict:
    """Recompute the SAE's codes and atom statistics over every item; rewrites stats.duckdb and meta.json.

    ``cfg``: an ``engine.ray_precompute.RayConfig`` for ``engine="ray"``. Returns the new meta.
    """
    from engine.sae.store import load_sae

    if engine not in ENGINES:
        raise ValueError(f"--engine {engine!r}: choose one of {ENGINES}")
    folder = sae_dir(cache, name)
    if not (folder / META).exists():
        raise FileNotFoundError(f"no SAE {name!r} on cache {cache.name}; list them with `geolens saes --cache {cache.name}`")
    meta = json.loads((folder / META).read_text())
    eps = float(meta.get("eps", DEFAULT_EPS) if eps is None else eps)
    model = load_sae(cache, name)
    pair_ids = cache.pair_ids()
    t0 = time.perf_counter()
    if engine == "local":
        meta = write_artifact_stats(cache, model, folder, meta, pair_ids, eps)
    else:
        from engine.ray_precompute import RayConfig

        cfg = cfg or RayConfig()
        items = cache.items()
        ids, modality = items["id"].to_numpy(), items["modality"].to_numpy()
        codes = ray_codes(cache, name, model, ids, cfg)
        tables = tables_from_codes(model, codes, ids, modality, eps)
        counts = tables["atoms"]["class"].value_counts().to_dict()
        meta = {**meta, "eps": eps, "class_counts": {c: int(counts.get(c, 0)) for c in ("bimodal", "image", "text", "dead")}}
        write_stats(folder / STATS, tables, meta, anchor_table(model, pair_ids))
    meta["encode"] = {"engine": engine, "seconds": round(time.perf_counter() - t0, 2), "n_items": int(len(cache.items())),
                      **({"ray": cfg.to_dict()} if engine == "ray" else {})}
    atomic_write_text(folder / META, json.dumps(meta, indent=1, default=float))
    return meta
