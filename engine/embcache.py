"""Embedding caches: one DuckDB file per (dataset, model) holding paired image/text embeddings.

Schema (documented in README.md):
  manifest(key VARCHAR, value VARCHAR)          provenance, JSON-encoded values
  items(id INTEGER, modality VARCHAR, pair_id INTEGER, path VARCHAR, text VARCHAR)
  embeddings(id INTEGER, emb FLOAT[d])          L2-normalised
  factors(pair_id INTEGER, name VARCHAR, value VARCHAR)   ground-truth labels, if any
  factor_kinds(name VARCHAR, kind VARCHAR)      shared | image | text
  thumbs(id INTEGER, png BLOB)                  image thumbnails, so pages need no source files
  skipped(path VARCHAR, reason VARCHAR)         unreadable/truncated/oversized inputs
  done_batches(batch INTEGER)                   resume bookkeeping

Item ids: image of pair p has id 2p, its caption 2p + 1.
"""
from __future__ import annotations

import contextlib
import json
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from engine import store

KINDS = ("shared", "image", "text")


def image_id(pair_id):
    return 2 * np.asarray(pair_id)


def text_id(pair_id):
    return 2 * np.asarray(pair_id) + 1


class EmbCache:
    """Read-only view of one finished embedding cache. Every method opens its own connection."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no cache {self.path.name!r}; list caches with `geolens caches`")
        self.name = self.path.name[: -len(store.SUFFIX)]

    def __repr__(self) -> str:
        return f"EmbCache({self.name!r})"

    def _df(self, sql: str, params=None) -> pd.DataFrame:
        return store.query_df(self.path, sql, params)

    @cached_property
    def manifest(self) -> dict:
        df = self._df("SELECT key, value FROM manifest")
        return {k: json.loads(v) for k, v in zip(df["key"], df["value"])}

    def items(self) -> pd.DataFrame:
        return self._df("SELECT id, modality, pair_id, path, text FROM items ORDER BY id")

    def pair_ids(self) -> np.ndarray:
        """Pair ids that have both an image and a caption embedding, ascending."""
        df = self._df("SELECT pair_id FROM items GROUP BY pair_id HAVING count(*) = 2 ORDER BY pair_id")
        return df["pair_id"].to_numpy()

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(images (n, d), texts (n, d), pair_ids (n,)): row i of both is pair pair_ids[i]."""
        with contextlib.closing(store.connect_ro(self.path)) as con:
            sql = ("SELECT e.emb FROM embeddings e JOIN items i USING (id) "
                   "WHERE i.modality = ? AND i.pair_id IN (SELECT pair_id FROM items GROUP BY pair_id HAVING count(*) = 2) "
                   "ORDER BY i.pair_id")
            img = store.fetch_array(con, sql, ["image"])
            txt = store.fetch_array(con, sql, ["text"])
        return img, txt, self.pair_ids()

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids (N,), embeddings (N, d)) of every item, ordered by id."""
        with contextlib.closing(store.connect_ro(self.path)) as con:
            ids = con.execute("SELECT id FROM embeddings ORDER BY id").fetchnumpy()["id"]
            return np.asarray(ids), store.fetch_array(con, "SELECT emb FROM embeddings ORDER BY id")

    def factors(self) -> pd.DataFrame:
        """One row per pair, one column per factor (empty if the dataset has no labels)."""
        df = self._df("SELECT pair_id, name, value FROM factors")
        if df.empty:
            return pd.DataFrame({"pair_id": self.pair_ids()})
        return df.pivot(index="pair_id", columns="name", values="value").reset_index().rename_axis(None, axis=1)

    def factor_kinds(self) -> dict[str, str]:
        df = self._df("SELECT name, kind FROM factor_kinds")
        return dict(zip(df["name"], df["kind"]))

    def thumbnails(self, ids) -> dict[int, bytes]:
        ids = [int(i) for i in ids]
        df = self._df("SELECT id, png FROM thumbs WHERE list_contains(?, id)", [ids])
        return {int(i): bytes(b) for i, b in zip(df["id"], df["png"])}

    def skipped(self) -> pd.DataFrame:
        return self._df("SELECT path, reason FROM skipped")

    def artifacts(self, kind: str | None = None) -> pd.DataFrame:
        """What has been built directly on this cache (``engine.core.artifacts`` whose inputs name it)."""
        from engine.core import artifacts

        rows = [{"kind": a.kind, "name": a.name, "key": a.key, "config": a.config}
                for a in artifacts.list(kind, of=str(self.manifest["key"]))]
        return pd.DataFrame(rows, columns=["kind", "name", "key", "config"])

    def size_bytes(self) -> int:
        return self.path.stat().st_size


def list_caches() -> list[EmbCache]:
    """Every finished embedding cache under the cache root."""
    out = []
    for p in store.list_files():
        with contextlib.closing(store.connect_ro(p)) as con:
            if store.has_table(con, "embeddings") and store.has_table(con, "manifest"):
                out.append(EmbCache(p))
    return out


def open_cache(name: str) -> EmbCache:
    """A cache by name (file stem), or a unique prefix of one."""
    if not name or not name.strip():
        raise ValueError("empty cache name: pass one of `geolens caches`")
    caches = list_caches()
    exact = [c for c in caches if c.name == name]
    if exact:
        return exact[0]
    hits = [c for c in caches if c.name.startswith(name)]
    if len(hits) == 1:
        return hits[0]
    known = ", ".join(c.name for c in caches) or "none yet (run `geolens precompute`)"
    raise FileNotFoundError(f"no single cache matches {name!r}; caches: {known}")
