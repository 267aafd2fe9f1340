"""A synthetic embedding cache of random unit-vector pairs with a controllable gap.

Used by the benchmark (100k pairs) and the engine tests: it has the schema of
``engine.embcache`` (no thumbnails, one two-valued factor), so every gap function and the page
run on it unchanged. Images are u_i = normalise(g_i + s e₀), captions
t_i = normalise(g_i + σ ε_i − s e₀) with g, ε standard normal: s sets the gap, σ the pair noise.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from engine import ENGINE_VERSION, store
from engine.config import stable_hash
from engine.embcache import EmbCache, image_id, text_id


def random_pairs(n: int, d: int, shift: float = 0.3, noise: float = 1.0, seed: int = 0):
    """(img (n, d), txt (n, d), group (n,)) float32 unit rows; group ∈ {0, 1} splits by sign of g_i1."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, d)) / np.sqrt(d)
    e0 = np.zeros(d)
    e0[0] = shift
    img = g + e0
    txt = g + noise * rng.standard_normal((n, d)) / np.sqrt(d) - e0
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return unit(img), unit(txt), (g[:, 1] > 0).astype(np.int64)


def write_random_cache(n: int, d: int = 64, shift: float = 0.3, noise: float = 1.0, seed: int = 0,
                       folder: Path | None = None, chunk: int = 50_000) -> EmbCache:
    """Write (or reuse) a cache of ``n`` random pairs under ``folder`` (default: the cache root)."""
    params = {"source": "random-unit-pairs", "n": n, "d": d, "shift": shift, "noise": noise, "seed": seed}
    key = stable_hash({"dataset": params, "engine": ENGINE_VERSION})
    path = Path(folder or store.cache_root()) / f"random-n{n}-d{d}-{key}{store.SUFFIX}"
    if path.exists():
        return EmbCache(path)
    img, txt, group = random_pairs(n, d, shift, noise, seed)
    with store.writing(path) as con:
        for tbl in ("items", "embeddings", "factors", "factor_kinds", "thumbs", "skipped", "artifacts", "manifest"):
            con.execute(f"DROP TABLE IF EXISTS {store.ident(tbl)}")
        con.execute("CREATE TABLE items(id INTEGER, modality VARCHAR, pair_id INTEGER, path VARCHAR, text VARCHAR)")
        con.execute(f"CREATE TABLE embeddings(id INTEGER, emb FLOAT[{int(d)}])")
        con.execute("CREATE TABLE factors(pair_id INTEGER, name VARCHAR, value VARCHAR)")
        con.execute("CREATE TABLE factor_kinds(name VARCHAR, kind VARCHAR)")
        con.execute("CREATE TABLE thumbs(id INTEGER, png BLOB)")
        con.execute("CREATE TABLE skipped(path VARCHAR, reason VARCHAR)")
        con.execute("CREATE TABLE artifacts(kind VARCHAR, name VARCHAR, path VARCHAR, config VARCHAR)")
        con.execute("CREATE TABLE manifest(key VARCHAR, value VARCHAR)")
        con.execute("INSERT INTO factor_kinds VALUES ('group', 'shared')")
        for s in range(0, n, chunk):
            pid = np.arange(s, min(n, s + chunk))
            ids = np.concatenate([image_id(pid), text_id(pid)]).astype(np.int32)
            store.insert_rows(con, "items", {"id": ids, "modality": ["image"] * len(pid) + ["text"] * len(pid),
                                             "pair_id": np.concatenate([pid, pid]).astype(np.int32),
                                             "path": [None] * (2 * len(pid)),
                                             "text": [None] * len(pid) + [f"random caption {p}" for p in pid]})
            store.insert_rows(con, "embeddings", {"id": ids, "emb": np.concatenate([img[pid], txt[pid]])})
            store.insert_rows(con, "factors", {"pair_id": pid.astype(np.int32), "name": ["group"] * len(pid),
                                               "value": [f"g{v}" for v in group[pid]]})
        manifest = {"key": key, "dataset": params, "model": {"arch": "random", "pretrained": None, "weights_hash": None},
                    "n_pairs": n, "n_skipped": 0, "dim": d, "engine_version": ENGINE_VERSION, "device": "cpu",
                    "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        for k, v in manifest.items():
            con.execute("INSERT INTO manifest VALUES (?, ?)", [k, json.dumps(v)])
    return EmbCache(path)
