"""`geolens sae encode`: a trained SAE's codes and atom statistics over every item of its cache.

``engine="local"`` is what ``train-sae`` does at the end of training (one process,
``engine.sae.pipeline.write_artifact_stats``). ``engine="ray"`` does the same steps with the encoding pass as a Ray job: the
items' id range is cut every ``--batch-size`` ids (as ``pipeline.item_chunks`` cuts it); an actor
pool (one actor per GPU, or CPU actors) gets the SAE from the driver, and each actor task reads one
shard's embeddings from the cache file (read-only) and runs ``engine.sae.tables.encode_tables`` on
it, writing the shard's ``Tables`` as ``tables-<shard>.npz`` (temp file + rename). Done shards are
skipped on a rerun; a killed actor's task is retried and rewrites the same file. The driver merges
the shards' tables (``merge_tables``: equal to one pass over all items), then writes the atom
tables (``write_tables``) and ``stats.duckdb`` (``stats.tables_from``, ``write_stats``) exactly as
the local path does.

Shards live in ``<sae folder>/ray-tables-<weights hash>-s<shard size>/`` and are removed once the
stats are written (``--keep-shards`` keeps them).
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np

from engine.config import atomic_write_text, file_hash
from engine.embcache import EmbCache
from engine.sae.pipeline import META, STATS, WEIGHTS, anchor_table, sae_dir, write_artifact_stats
from engine.sae.stats import DEFAULT_EPS, tables_from, write_stats

ENGINES = ("local", "ray")
TABLE_FIELDS = ("energy", "count", "top_ids", "top_values", "item_ids", "item_image", "item_offsets", "item_atoms",
                "item_values")


def id_shards(lo: int, hi: int, size: int) -> list[tuple[int, int, int]]:
    """(shard, first id, last id): the id range [lo, hi] cut every ``size`` ids, as ``pipeline.item_chunks``."""
    return [(s, a, min(hi, a + size - 1)) for s, a in enumerate(range(int(lo), int(hi) + 1, size))]


def shard_items(cache_path, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, embeddings, is_image) of the items with ids in [lo, hi], ascending (read-only)."""
    import contextlib

    from engine import store

    with contextlib.closing(store.connect_ro(cache_path)) as con:
        tbl = con.sql("SELECT e.id, i.modality = 'image' AS img, e.emb FROM embeddings e JOIN items i USING (id) "
                      "WHERE e.id BETWEEN ? AND ? ORDER BY e.id", params=[int(lo), int(hi)]).to_arrow_table()
    if tbl.num_rows == 0:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32), np.zeros(0, bool)
    col = tbl.column(2).combine_chunks()
    x = col.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(tbl.num_rows, -1)
    return tbl.column(0).to_numpy().astype(np.int64), x, tbl.column(1).to_numpy(zero_copy_only=False).astype(bool)


def save_part(path: Path, t) -> None:
    """One shard's ``Tables`` as .npz, atomically."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp.npz")
    np.savez(tmp, n_image=t.n_items["image"], n_text=t.n_items["text"], **{k: getattr(t, k) for k in TABLE_FIELDS})
    os.replace(tmp, path)


def load_part(path: Path):
    from engine.sae.tables import Tables

    with np.load(path) as z:
        return Tables(n_items={"image": int(z["n_image"]), "text": int(z["n_text"])},
                      **{k: z[k] for k in TABLE_FIELDS})


def merge_tables(parts: list):
    """One ``Tables`` from the ``Tables`` of disjoint, ascending id ranges, equal to one pass over all.

    Sums and counts add; each (modality, atom) keeps the n_top largest values over the parts, ties
    to the smaller id (the order ``encode_tables`` keeps); the per-item code arrays are concatenated.
    """
    from engine.sae.tables import Tables

    parts = [p for p in parts if len(p.item_ids)] or parts[:1]
    n_top = parts[0].top_ids.shape[2]
    ids = np.concatenate([p.top_ids for p in parts], axis=2)  # (2, m, P·n_top)
    vals = np.concatenate([p.top_values for p in parts], axis=2).astype(np.float64)
    vals = np.where(ids >= 0, vals, -np.inf)
    order = np.lexsort((ids, -vals), axis=-1)[..., :n_top]  # value descending, then id ascending
    top_i, top_v = np.take_along_axis(ids, order, -1), np.take_along_axis(vals, order, -1)
    top_i = np.where(np.isfinite(top_v), top_i, -1)
    top_v = np.where(np.isfinite(top_v), top_v, np.nan).astype(np.float32)
    item_ids = np.concatenate([p.item_ids for p in parts])
    if len(item_ids) > 1 and not (np.diff(item_ids) > 0).all():
        raise ValueError("merge_tables: parts must cover disjoint id ranges in ascending order")
    per_item = np.concatenate([np.diff(p.item_offsets) for p in parts])
    return Tables(energy=sum(p.energy for p in parts), count=sum(p.count for p in parts),
                  n_items={m: sum(p.n_items[m] for p in parts) for m in ("image", "text")},
                  top_ids=top_i, top_values=top_v, item_ids=item_ids,
                  item_image=np.concatenate([p.item_image for p in parts]),
                  item_offsets=np.concatenate([[0], np.cumsum(per_item)]).astype(np.int64),
                  item_atoms=np.concatenate([p.item_atoms for p in parts]),
                  item_values=np.concatenate([p.item_values for p in parts]))


class _EncodeShard:
    """Actor: the SAE (shipped by the driver); each call encodes one id range with ``encode_tables``."""

    def __init__(self, cache_path: str, model, folder: str, device: str, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.cache_path = cache_path
        self.model = model.to(device).eval()  # workers need no access to the SAE's folder
        self.folder = Path(folder)

    def __call__(self, batch: dict) -> dict:
        from engine.sae.tables import encode_tables

        out = []
        for s, lo, hi in zip(batch["shard"], batch["lo"], batch["hi"]):
            ids, x, is_image = shard_items(self.cache_path, lo, hi)
            t = encode_tables(self.model, [(ids, x, is_image)] if len(ids) else [])
            save_part(self.folder / f"tables-{int(s):06d}.npz", t)
            out.append(len(ids))
        return {"shard": np.asarray(batch["shard"]), "n_items": np.array(out)}


def ray_tables(cache: EmbCache, name: str, model, cfg):
    """The SAE's ``Tables`` over every item of ``cache``, as a Ray job in shards of cfg.batch_size ids."""
    import contextlib

    from tqdm import tqdm

    from engine import store
    from engine.ray_precompute import check_resources, connect

    with contextlib.closing(store.connect_ro(cache.path)) as con:
        lo, hi, n = con.execute("SELECT min(id), max(id), count(*) FROM embeddings").fetchone()
    if lo is None:
        raise ValueError(f"cache {cache.name} has no items to encode")
    ray = connect(cfg.address)
    check_resources(ray.cluster_resources(), cfg)
    sae = sae_dir(cache, name)
    folder = sae / f"ray-tables-{file_hash(sae / WEIGHTS, 12)}-s{cfg.batch_size}"
    folder.mkdir(parents=True, exist_ok=True)
    shards = id_shards(lo, hi, cfg.batch_size)
    todo = [s for s in shards if not (folder / f"tables-{s[0]:06d}.npz").exists()]
    with tqdm(total=int(n), desc="sae encode[ray]", unit="item") as bar:
        if todo:
            ds = ray.data.from_items([{"shard": s, "lo": a, "hi": b} for s, a, b in todo])
            ds = ds.map_batches(_EncodeShard, batch_size=1, batch_format="numpy",
                                compute=ray.data.ActorPoolStrategy(size=cfg.workers),
                                num_gpus=cfg.gpus_per_worker or None, num_cpus=cfg.cpus_per_worker,
                                fn_constructor_kwargs={"cache_path": str(cache.path), "model": model.cpu(),
                                                       "folder": str(folder),
                                                       "device": "cuda" if cfg.gpus_per_worker > 0 else "cpu",
                                                       "threads": int(max(1, cfg.cpus_per_worker))})
            for row in ds.iter_rows():
                bar.update(int(row["n_items"]))
        bar.n = int(n)
        bar.refresh()
    t = merge_tables([load_part(folder / f"tables-{s:06d}.npz") for s, _, _ in shards])
    if len(t.item_ids) != n:
        raise RuntimeError(f"the shards in {folder} hold {len(t.item_ids)} items, the cache {n}; delete the folder and rerun")
    if not cfg.keep_shards:
        shutil.rmtree(folder, ignore_errors=True)
    return t


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
    else:  # the same steps as pipeline.write_artifact_stats, with the encoding pass on Ray
        from engine.ray_precompute import RayConfig
        from engine.sae.tables import write_tables

        cfg = cfg or RayConfig()
        t = ray_tables(cache, name, model, cfg)
        tables = tables_from(model, t, eps)
        counts = tables["atoms"]["class"].value_counts().to_dict()
        meta = {**meta, "eps": eps, "class_counts": {c: int(counts.get(c, 0)) for c in ("bimodal", "image", "text", "dead")}}
        write_tables(folder, t)
        write_stats(folder / STATS, tables, meta, anchor_table(model, pair_ids))
    meta["encode"] = {"engine": engine, "seconds": round(time.perf_counter() - t0, 2), "n_items": int(len(cache.items())),
                      **({"ray": cfg.to_dict()} if engine == "ray" else {})}
    atomic_write_text(folder / META, json.dumps(meta, indent=1, default=float))
    return meta
