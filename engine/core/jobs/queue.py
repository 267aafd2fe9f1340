"""The jobs database and log files: submit, read, cancel and claim jobs; one active job per artifact.

``<cache root>/jobs/jobs.sqlite`` holds one row per job (``Job``); every statement takes
parameters. The unique index ``one_active_job_per_artifact`` is the per-artifact lock.
``<cache root>/jobs/logs/<id>.log`` is a job's output.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Iterator, Mapping

from engine.core.jobs.builders import BUILDERS
from engine.core.jobs.job import Job

DB_NAME = "jobs.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    artifact TEXT NOT NULL,
    title TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    progress TEXT,
    step INTEGER NOT NULL DEFAULT 0,
    steps INTEGER NOT NULL DEFAULT 1,
    step_label TEXT NOT NULL DEFAULT '',
    submitted REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    cancel INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS one_active_job_per_artifact ON jobs(artifact) WHERE state IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, priority, id);
"""


# ----------------------------------------------------------------------------- files
def folder() -> Path:
    """``<cache root>/jobs`` (it follows ``$GEOLENS_CACHE``), not created: what readers use."""
    from engine.store import cache_root

    return cache_root() / "jobs"


def jobs_dir() -> Path:
    """``<cache root>/jobs``, created. Readers use ``folder``."""
    d = folder()
    (d / "logs").mkdir(parents=True, exist_ok=True)
    return d


def log_path(job_id: int) -> Path:
    return folder() / "logs" / f"{int(job_id)}.log"


def log_tail(job_id: int, n: int = 20) -> str:
    """The last ``n`` non-empty lines of a job's log (tqdm's carriage returns count as line ends)."""
    try:
        lines = log_path(job_id).read_text(errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        return ""
    return "\n".join([line for line in lines if line.strip()][-n:])


# ----------------------------------------------------------------------------- the database
@contextlib.contextmanager
def connect(readonly: bool = False) -> Iterator[sqlite3.Connection | None]:
    """A connection to the jobs database (autocommit; writers use ``BEGIN IMMEDIATE``).

    ``readonly`` never writes, so pages can run on a read-only cache folder: it yields None when
    there is no database yet. The database keeps SQLite's default rollback journal (not WAL),
    which read-only connections can open without creating ``-shm``/``-wal`` files.
    """
    if readonly:
        path = folder() / DB_NAME
        if not path.exists():
            yield None
            return
        con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30, isolation_level=None)
    else:
        con = sqlite3.connect(jobs_dir() / DB_NAME, timeout=30, isolation_level=None)
    try:
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA busy_timeout = 30000")
        if not readonly:
            con.executescript(SCHEMA)
        yield con
    finally:
        con.close()


def _rows(sql: str, args: tuple = ()) -> list[sqlite3.Row]:
    """Rows of a read-only query ([] when there is no jobs database yet)."""
    with connect(readonly=True) as con:
        if con is None:
            return []
        try:
            return con.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:  # a database created but its schema not yet written
            if "no such table" in str(exc):
                return []
            raise


@contextlib.contextmanager
def _transaction(con: sqlite3.Connection) -> Iterator[None]:
    con.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _job(con: sqlite3.Connection, job_id: int) -> Job:
    return Job.from_row(con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())


def _no_job(job_id: int) -> ValueError:
    return ValueError(f"no job {job_id}; `geolens jobs list` shows the jobs")


# ----------------------------------------------------------------------------- jobs
def submit(name: str, config: Mapping | None = None, *, priority: int = 0) -> Job:
    """Queue ``name(config)``; if a job for the same artifact is queued or running, return it
    instead (raising its priority to ``priority`` if that is higher)."""
    builder = BUILDERS.get(name)
    config = dict(config or {})
    json.dumps(config)  # configs are JSON: fail here, not in the runner
    artifact = builder.key(name, config)
    with connect() as con, _transaction(con):
        row = con.execute("SELECT * FROM jobs WHERE artifact = ? AND state IN ('queued', 'running')", (artifact,)).fetchone()
        if row is not None:
            if priority > row["priority"]:
                con.execute("UPDATE jobs SET priority = ? WHERE id = ?", (priority, row["id"]))
            return _job(con, row["id"])
        cur = con.execute("INSERT INTO jobs(name, config, artifact, title, state, priority, submitted) VALUES (?, ?, ?, ?, 'queued', ?, ?)",
                          (name, json.dumps(config, sort_keys=True), artifact, builder.title(config), priority, time.time()))
        return _job(con, cur.lastrowid)


def get(job_id: int) -> Job:
    rows = _rows("SELECT * FROM jobs WHERE id = ?", (int(job_id),))
    if not rows:
        raise _no_job(job_id)
    return Job.from_row(rows[0])


def list_jobs(states: tuple[str, ...] | None = None, name: str | None = None, limit: int = 200) -> list[Job]:
    """Jobs, newest first, optionally only in ``states`` and of builder ``name``."""
    where, args = [], []
    if states:
        where.append(f"state IN ({', '.join('?' for _ in states)})")
        args += list(states)
    if name:
        where.append("name = ?")
        args.append(name)
    sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
    return [Job.from_row(r) for r in _rows(sql, (*args, int(limit)))]


def latest(name: str, config: Mapping | None = None) -> Job | None:
    """The newest job for the artifact of ``name(config)`` (active or not), or None."""
    artifact = BUILDERS.get(name).key(name, dict(config or {}))
    rows = _rows("SELECT * FROM jobs WHERE artifact = ? ORDER BY id DESC LIMIT 1", (artifact,))
    return Job.from_row(rows[0]) if rows else None


def cancel(job_id: int) -> Job:
    """Cancel a job: a queued one at once; a running one is stopped by the runner (SIGTERM to its
    process group, SIGKILL after ``runner.CANCEL_GRACE_S``). A finished job is left as it is."""
    with connect() as con, _transaction(con):
        row = con.execute("SELECT * FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
        if row is None:
            raise _no_job(job_id)
        if row["state"] == "queued":
            con.execute("UPDATE jobs SET state = 'cancelled', cancel = 1, finished = ? WHERE id = ?", (time.time(), row["id"]))
        elif row["state"] == "running":
            con.execute("UPDATE jobs SET cancel = 1 WHERE id = ?", (row["id"],))
    return get(job_id)


def update(job_id: int, **fields) -> None:
    """Set columns of job ``job_id`` (the runner's and the child's writes)."""
    cols = ", ".join(f"{k} = ?" for k in fields)  # keys are the jobs table's own column names, never user input
    with connect() as con:
        con.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), int(job_id)))


def _waits_for(row) -> set[str]:
    """The artifact keys whose active jobs the queued ``row`` waits for (``Builder.after``)."""
    try:
        builder = BUILDERS.get(row["name"])
    except ValueError:  # not registered here: the child reports that when it runs
        return set()
    return set(builder.after(json.loads(row["config"]))) - {row["artifact"]} if builder.after else set()


def claim() -> Job | None:
    """Take the next queued job (highest priority, then oldest) that waits for no active job, and
    mark it running."""
    with connect() as con, _transaction(con):
        rows = con.execute("SELECT * FROM jobs WHERE state IN ('queued', 'running') ORDER BY priority DESC, id ASC").fetchall()
        active = {r["artifact"] for r in rows}
        row = next((r for r in rows if r["state"] == "queued" and not _waits_for(r) & active), None)
        if row is None:
            return None
        con.execute("UPDATE jobs SET state = 'running', started = ?, attempts = attempts + 1, error = NULL WHERE id = ?",
                    (time.time(), row["id"]))
        return _job(con, row["id"])
