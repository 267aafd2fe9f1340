"""Joint 2-D maps of image and text embeddings: PCA (instant) and UMAP (cached on disk).

Points are stacked as ``X = [img; txt]`` (rows 0..n-1 images, n..2n-1 their captions), as in
METHODS.md §1, and both modalities share one map. A UMAP is stored in a DuckDB file under the
cache's ``artifact_dir``, named by a hash of its parameters, the cache key and the engine
version, so a second request with the same inputs reads it back instead of refitting.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from engine import ENGINE_VERSION, store
from engine.config import Config, check_choice, check_positive, stable_hash

PROJECTIONS = ("pca", "umap")
"""projection names: URL values, dropdown options and CLI choices"""
UMAP_METRICS = ("cosine", "euclidean")


@dataclasses.dataclass
class UMAPConfig(Config):
    n_neighbors: int = 15
    """size of the local neighbourhood UMAP preserves"""
    min_dist: float = 0.1
    """how tightly UMAP packs neighbours in 2-D"""
    metric: str = "cosine"
    """distance in embedding space"""
    seed: int = 0
    """random_state (a seeded UMAP runs single-threaded, but reproducibly)"""

    def validate(self) -> None:
        check_positive("n_neighbors", self.n_neighbors)
        check_positive("min_dist", self.min_dist, allow_zero=True)
        check_choice("metric", self.metric, UMAP_METRICS)


def stack(img: np.ndarray, txt: np.ndarray) -> np.ndarray:
    """[img; txt] as one float32 array. (n, d), (m, d) -> (n + m, d)"""
    return np.ascontiguousarray(np.vstack([img, txt]), dtype=np.float32)


def pca_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """First two principal components of the centred rows. (N, d) -> (N, 2) float32"""
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(x).astype(np.float32)


def umap_2d(x: np.ndarray, cfg: UMAPConfig) -> np.ndarray:
    """UMAP of the rows. (N, d) -> (N, 2) float32"""
    import umap

    if len(x) <= cfg.n_neighbors:
        raise ValueError(f"UMAP needs more than n_neighbors={cfg.n_neighbors} points, got {len(x)}; use PCA")
    model = umap.UMAP(n_components=2, n_neighbors=cfg.n_neighbors, min_dist=cfg.min_dist,
                      metric=cfg.metric, random_state=cfg.seed, n_jobs=1)
    return model.fit_transform(x).astype(np.float32)


def umap_key(cache_key: str, ids: np.ndarray, cfg: UMAPConfig) -> str:
    """Hash of every input of a cached UMAP: the cache, which points, the parameters, the code."""
    return stable_hash({"cache": cache_key, "ids": stable_hash(np.asarray(ids, dtype=np.int64).tolist()),
                        "umap": cfg.to_dict(), "engine": ENGINE_VERSION})


def umap_path(artifact_dir: Path, key: str) -> Path:
    return Path(artifact_dir) / f"umap-{key}{store.SUFFIX}"


def read_umap(path: Path, ids: np.ndarray) -> np.ndarray | None:
    """Coordinates stored at ``path`` in the order of ``ids``, or None when not cached."""
    if not path.exists():
        return None
    df = store.query_df(path, "SELECT id, x, y FROM coords")
    pos = {int(i): k for k, i in enumerate(df["id"])}
    if len(pos) != len(ids) or any(int(i) not in pos for i in ids):
        return None
    order = np.array([pos[int(i)] for i in ids])
    return df[["x", "y"]].to_numpy(np.float32)[order]


def write_umap(path: Path, ids: np.ndarray, xy: np.ndarray, cfg: UMAPConfig, meta: dict) -> None:
    """Store coordinates atomically, with the config and provenance in a ``config`` table."""
    with store.writing(path) as con:
        con.execute("DROP TABLE IF EXISTS coords")
        con.execute("DROP TABLE IF EXISTS config")
        store.insert_rows(con, "coords", {"id": np.asarray(ids, dtype=np.int64),
                                          "x": xy[:, 0].astype(np.float32), "y": xy[:, 1].astype(np.float32)})
        con.execute("CREATE TABLE config(key VARCHAR, value VARCHAR)")
        for k, v in {**cfg.to_dict(), **meta}.items():
            con.execute("INSERT INTO config VALUES (?, ?)", [k, json.dumps(v)])


@dataclasses.dataclass(frozen=True)
class Map:
    xy: np.ndarray
    """(N, 2) coordinates, rows in the order of the ids asked for"""
    method: str
    """'pca' or 'umap'"""
    cached: bool
    """True when read back from disk"""
    seconds: float
    """time to fit (or to read back)"""
    path: Path | None = None
    """the UMAP file, if any"""


def cached_umap(cache, ids: np.ndarray, x: np.ndarray, cfg: UMAPConfig | None = None,
                register: bool = True, on_start: Callable[[str, int], None] | None = None) -> Map:
    """UMAP of ``x`` (rows = items ``ids`` of ``cache``), read from or written to the artifact dir.

    ``cache`` is an ``EmbCache``. With ``register`` the file is also linked in the cache's
    ``artifacts`` table (kind 'projection'), so `geolens caches` lists it. ``on_start('umap', N)``
    is called before a fit (not before a read-back), so callers can show progress.
    """
    cfg = cfg or UMAPConfig()
    t0 = time.perf_counter()
    key = umap_key(str(cache.manifest["key"]), ids, cfg)
    path = umap_path(cache.artifact_dir, key)
    xy = read_umap(path, ids)
    if xy is not None:
        return Map(xy, "umap", True, time.perf_counter() - t0, path)
    if on_start:
        on_start("umap", len(ids))
    xy = umap_2d(x, cfg)
    seconds = time.perf_counter() - t0
    write_umap(path, ids, xy, cfg, {"cache": cache.name, "cache_key": cache.manifest["key"], "key": key,
                                    "n_points": int(len(ids)), "seconds": round(seconds, 2),
                                    "engine_version": ENGINE_VERSION})
    if register:
        with contextlib.suppress(OSError):  # a read-only cache still gets its map
            cache.register_artifact("projection", path.stem, path, cfg.to_dict())
    return Map(xy, "umap", False, seconds, path)


def project(cache, method: str, ids: np.ndarray, x: np.ndarray, umap_cfg: UMAPConfig | None = None,
            on_start: Callable[[str, int], None] | None = None) -> Map:
    """The 2-D map of ``x`` by ``method`` (one of PROJECTIONS); see ``cached_umap`` for ``on_start``."""
    check_choice("projection", method, PROJECTIONS)
    if method == "pca":
        t0 = time.perf_counter()
        return Map(pca_2d(x), "pca", False, time.perf_counter() - t0)
    return cached_umap(cache, ids, x, umap_cfg, on_start=on_start)
