"""DuckDB files on disk: where caches live, how they are written atomically and read safely.

Rules every cache in geolens follows:
- a finished cache file is never modified (derived results are artifacts beside it,
  ``engine.core.artifacts``); a writer replaces it whole, by ``os.replace`` of a temp file,
  so a reader sees either the old or the new file, never half of one;
- writers work on ``<name>.duckdb.partial``; an interrupted writer leaves it behind and the
  next run with the same key resumes from it (see ``writing``);
- readers open read-only with external access disabled and one connection per query;
- table names are validated identifiers, values always go through parameters.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
from pathlib import Path
from typing import Iterator

import duckdb
import numpy as np
import pyarrow as pa

ENV_CACHE = "GEOLENS_CACHE"
SUFFIX = ".duckdb"
PARTIAL = ".partial"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def cache_root() -> Path:
    """The cache folder: $GEOLENS_CACHE, else ``cache/`` at the repository root."""
    root = Path(os.environ.get(ENV_CACHE) or Path(__file__).resolve().parent.parent / "cache")
    root.mkdir(parents=True, exist_ok=True)
    return root


def portable(path: str | os.PathLike) -> str:
    """How to store a path inside a cache: relative to the cache root when it lies inside it (so
    moving the cache folder keeps it valid), else absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(cache_root().resolve()))
    except ValueError:
        return str(p)


def resolve_stored(stored: str | os.PathLike) -> Path:
    """The path a ``portable`` string names now (relative ones are under the current cache root)."""
    p = Path(stored)
    return p if p.is_absolute() else cache_root() / p


def ident(name: str) -> str:
    """Return ``name`` if it is a safe SQL identifier, else raise."""
    if not _IDENT.match(name):
        raise ValueError(f"invalid table/column name {name!r}: use letters, digits and _")
    return name


def safe_name(text: str) -> str:
    """A file-name-safe slug of ``text``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def connect_ro(path: str | os.PathLike) -> duckdb.DuckDBPyConnection:
    """Open a finished cache read-only, with external access disabled."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no cache at {path}; list caches with `geolens caches`")
    return duckdb.connect(str(path), read_only=True, config={"enable_external_access": False})


def query_df(path: str | os.PathLike, sql: str, params: list | tuple | None = None):
    """Run one parameterised query on a read-only connection; returns a pandas DataFrame."""
    with contextlib.closing(connect_ro(path)) as con:
        return con.execute(sql, params or []).df()


def _connect_rw(path: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(path), config={"enable_external_access": False})


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[duckdb.DuckDBPyConnection]:
    """Write a new cache at ``path`` atomically.

    Yields a connection to ``path + '.partial'``. If that file exists from an interrupted
    run it is reopened as it is, so the writer can resume (it should record its own progress,
    e.g. a ``done_batches`` table). On success the partial file is renamed over ``path``;
    on an exception it stays for the next run.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + PARTIAL)
    with _lock(path):
        con = _connect_rw(partial)
        try:
            yield con
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(partial, path)
        wal = partial.with_name(partial.name + ".wal")
        if wal.exists():
            wal.unlink()


def has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    rows = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [ident(table)]
    ).fetchall()  # fetchall consumes the result, so the connection is free for the next statement
    return bool(rows and rows[0][0])


def array_to_arrow(x: np.ndarray) -> pa.FixedSizeListArray:
    """(n, d) float32 array -> Arrow fixed-size list column (DuckDB FLOAT[d])."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, columns: dict[str, object]) -> None:
    """Append columns (numpy 1-D arrays, lists, or (n, d) float arrays) to ``table``.

    Creates the table on first use; (n, d) arrays become FLOAT[d] columns.
    """
    arrays = {}
    for name, col in columns.items():
        ident(name)
        if isinstance(col, np.ndarray) and col.ndim == 2:
            arrays[name] = array_to_arrow(col)
        else:
            arrays[name] = pa.array(col)
    batch = pa.table(arrays)
    con.register("_geolens_batch", batch)
    try:
        if has_table(con, table):
            con.execute(f"INSERT INTO {ident(table)} SELECT * FROM _geolens_batch")
        else:
            con.execute(f"CREATE TABLE {ident(table)} AS SELECT * FROM _geolens_batch")
    finally:
        con.unregister("_geolens_batch")


def fetch_array(con: duckdb.DuckDBPyConnection, sql: str, params: list | tuple | None = None) -> np.ndarray:
    """First column of the query, a FLOAT[d] column, as an (n, d) float32 array."""
    tbl = con.sql(sql, params=params or None).to_arrow_table() if params else con.sql(sql).to_arrow_table()
    col = tbl.column(0).combine_chunks()
    if len(col) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    d = col.type.list_size
    return col.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, d)


def list_files(pattern: str = "*" + SUFFIX) -> list[Path]:
    """Finished cache files under the cache root (partial and update files excluded)."""
    return sorted(p for p in cache_root().glob(pattern) if p.name.endswith(SUFFIX))
