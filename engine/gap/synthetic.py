"""A synthetic embedding cache of random unit-vector pairs with a controllable gap.

Used by the benchmarks (``bench/gap.py``, ``bench/scale.py`` up to 1M pairs) and the engine
tests: it has the schema of ``engine.embcache`` (one two-valued factor, thumbnails optional), so
every gap function and the page run on it unchanged. Images are u_i = normalise(g_i + s e₀),
captions t_i = normalise(g_i + σ ε_i − s e₀) with g, ε standard normal / √d: s sets the gap,
σ the pair noise. Rows are drawn in blocks of ``CHUNK`` pairs, block b from the generator seeded
(seed, b), so a cache of any size is written in O(CHUNK · d) memory and equals ``random_pairs``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from engine import ENGINE_VERSION, store
from engine.config import stable_hash
from engine.embcache import EmbCache, image_id, text_id


CHUNK = 50_000
"""pairs drawn (and written) per block"""


def pair_blocks(n: int, d: int, shift: float = 0.3, noise: float = 1.0, seed: int = 0, chunk: int = CHUNK):
    """Yield (start, img (m, d), txt (m, d), group (m,)) blocks of at most ``chunk`` pairs."""
    e0 = np.zeros(d, dtype=np.float32)
    e0[0] = shift
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    for b, s in enumerate(range(0, n, chunk)):
        m = min(chunk, n - s)
        rng = np.random.default_rng([seed, b])
        g = rng.standard_normal((m, d), dtype=np.float32) / np.float32(np.sqrt(d))
        img = unit(g + e0)
        txt = unit(g + np.float32(noise) * rng.standard_normal((m, d), dtype=np.float32) / np.float32(np.sqrt(d)) - e0)
        yield s, img.astype(np.float32), txt.astype(np.float32), (g[:, 1] > 0).astype(np.int64)


def random_pairs(n: int, d: int, shift: float = 0.3, noise: float = 1.0, seed: int = 0):
    """(img (n, d), txt (n, d), group (n,)) float32 unit rows; group ∈ {0, 1} splits by sign of g_i1."""
    blocks = list(pair_blocks(n, d, shift, noise, seed))
    return tuple(np.concatenate([b[k] for b in blocks]) for k in (1, 2, 3))


def _thumbnail(v: np.ndarray) -> bytes:
    """An 8 × 8 PNG whose colour is the first three coordinates of ``v``."""
    import io

    from PIL import Image

    rgb = tuple(int(c) for c in np.clip(128 + 400 * np.asarray(v[:3], dtype=np.float64), 0, 255))
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), rgb).save(buf, format="PNG")
    return buf.getvalue()


def write_random_cache(n: int, d: int = 64, shift: float = 0.3, noise: float = 1.0, seed: int = 0,
                       folder: Path | None = None, thumbnails: bool = False) -> EmbCache:
    """Write (or reuse) a cache of ``n`` random pairs under ``folder`` (default: the cache root).

    ``thumbnails`` adds an 8 × 8 PNG per image (the page then shows image grids).
    """
    params = {"source": "random-unit-pairs", "n": n, "d": d, "shift": shift, "noise": noise, "seed": seed,
              "generator": "blocks-v2", **({"thumbnails": True} if thumbnails else {})}
    key = stable_hash({"dataset": params, "engine": ENGINE_VERSION})
    path = Path(folder or store.cache_root()) / f"random-n{n}-d{d}-{key}{store.SUFFIX}"
    if path.exists():
        return EmbCache(path)
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
        for s, img, txt, group in pair_blocks(n, d, shift, noise, seed):
            pid = np.arange(s, s + len(img))
            ids = np.concatenate([image_id(pid), text_id(pid)]).astype(np.int32)
            store.insert_rows(con, "items", {"id": ids, "modality": ["image"] * len(pid) + ["text"] * len(pid),
                                             "pair_id": np.concatenate([pid, pid]).astype(np.int32),
                                             "path": [None] * (2 * len(pid)),
                                             "text": [None] * len(pid) + [f"random caption {p}" for p in pid]})
            store.insert_rows(con, "embeddings", {"id": ids, "emb": np.concatenate([img, txt])})
            store.insert_rows(con, "factors", {"pair_id": pid.astype(np.int32), "name": ["group"] * len(pid),
                                               "value": [f"g{v}" for v in group]})
            if thumbnails:
                store.insert_rows(con, "thumbs", {"id": image_id(pid).astype(np.int32),
                                                  "png": [_thumbnail(v) for v in img]})
        manifest = {"key": key, "dataset": params, "model": {"arch": "random", "pretrained": None, "weights_hash": None},
                    "n_pairs": n, "n_skipped": 0, "dim": d, "engine_version": ENGINE_VERSION, "device": "cpu",
                    "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        for k, v in manifest.items():
            con.execute("INSERT INTO manifest VALUES (?, ?)", [k, json.dumps(v)])
    return EmbCache(path)
