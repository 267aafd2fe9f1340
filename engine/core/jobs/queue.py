"""Background jobs: a queue in SQLite, one runner process, progress, logs, cancel, resume.

A job is ``(builder name, config dict)``. The builder is looked up in ``BUILDERS`` (a
``Registry``); the runner claims queued jobs one at a time and runs each in a child process
(``python -m engine.core.jobs exec ID``) whose stdout/stderr go to the job's log. The child
reports ``Progress`` snapshots (``engine.core.progress``) into the job's row, and every tqdm bar
a builder draws is reported the same way, so today's commands show progress with no change.

Files, all under ``<cache root>/jobs/``:

- ``jobs.sqlite``: one row per job (state, progress, result, error); every statement takes
  parameters. WAL mode, so pages read while the runner writes.
- ``logs/<id>.log``: the job's output (appended to when a job resumes).
- ``runner.lock``: an ``flock`` held by the one runner (released by the kernel when it dies,
  even on ``kill -9``); ``runner.pid`` says which process holds it.

States: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``. A unique index on
``artifact`` over queued and running rows is the lock: one active job per artifact, and
submitting the same artifact again returns the existing job. A runner that starts finds any
``running`` row stale (only one runner exists), so it re-queues it; the builder then resumes
from its own checkpoints (every build-defaults command caches finished work and resumes
interrupted work). A child whose runner dies is killed by the kernel (``PR_SET_PDEATHSIG``)
and, where that is unavailable, by a watchdog thread that sees its parent change.

Libraries evaluated before writing this (all must run offline on one machine):

- huey with ``SqliteHuey``: the closest fit, but its SQLite storage deletes a task row when a
  consumer dequeues it (no acknowledgement), so a consumer killed with ``kill -9`` loses the
  running task; it has no progress, per-artifact lock, per-task log or cancel of a running
  task (``revoke`` only skips tasks not yet started), and it pickles task arguments.
- persist-queue's ``SQLiteAckQueue``: acks and re-delivers unacked items, but is only a queue
  (no state listing, progress, cancel or lock).
- rq, arq (Redis), dramatiq, Celery (a broker: Redis or RabbitMQ), procrastinate (PostgreSQL):
  a server process to install and run beside the app.
- Ray: a cluster runtime of hundreds of MB for a single serial queue.

So the queue is this module on the standard library's ``sqlite3``; the rest (progress,
registries, artifacts) is the shared core's.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from engine.config import stable_hash
from engine.core.progress import Progress, format_seconds
from engine.core.registry import Registry

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
DB_NAME = "jobs.sqlite"
LOCK_NAME = "runner.lock"
PID_NAME = "runner.pid"
CANCEL_GRACE_S = 5.0
PROGRESS_EVERY_S = 1.0

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


# ----------------------------------------------------------------------------- builders
@dataclasses.dataclass(frozen=True)
class Builder:
    """What a job runs.

    ``run(config, ctx)`` does the work (resuming from its own checkpoints) and returns a JSON-able
    result naming what it produced. ``title(config)`` is the human name; ``artifact(config)`` the
    lock key (default: builder name + config hash); ``built(config)`` lists what already exists
    ([] if nothing: the job is then "not built"), read without side effects.
    """

    run: Callable[[dict, "JobContext"], Any]
    title: Callable[[dict], str]
    artifact: Callable[[dict], str] | None = None
    built: Callable[[dict], list[str]] | None = None

    def key(self, name: str, config: Mapping) -> str:
        return self.artifact(dict(config)) if self.artifact else f"{name}:{stable_hash(dict(config), 12)}"


BUILDERS: Registry[Builder] = Registry("job builder")


# ----------------------------------------------------------------------------- storage
def _folder() -> Path:
    from engine.store import cache_root

    return cache_root() / "jobs"


def jobs_dir() -> Path:
    """``<cache root>/jobs``, created (it follows ``$GEOLENS_CACHE``). Readers use ``_folder``."""
    d = _folder()
    (d / "logs").mkdir(parents=True, exist_ok=True)
    return d


def log_path(job_id: int) -> Path:
    return _folder() / "logs" / f"{int(job_id)}.log"


@contextlib.contextmanager
def connect(readonly: bool = False) -> Iterator[sqlite3.Connection | None]:
    """A connection to the jobs database (autocommit; writers use ``BEGIN IMMEDIATE``).

    ``readonly`` never writes, so pages can run on a read-only cache folder: it yields None when
    there is no database yet. The database keeps SQLite's default rollback journal (not WAL),
    which read-only connections can open without creating ``-shm``/``-wal`` files.
    """
    if readonly:
        path = _folder() / DB_NAME
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


@dataclasses.dataclass(frozen=True)
class Job:
    """One row of the jobs table."""

    id: int
    name: str
    config: dict
    artifact: str
    title: str
    state: str
    priority: int
    progress: Progress | None
    step: int
    steps: int
    step_label: str
    submitted: float
    started: float | None
    finished: float | None
    attempts: int
    pid: int | None
    cancel: bool
    error: str | None
    result: Any

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> "Job":
        p = json.loads(r["progress"]) if r["progress"] else None
        prog = Progress(p["done"], p["total"], p["unit"], p["rate"], p["stage"]) if p else None
        return cls(r["id"], r["name"], json.loads(r["config"]), r["artifact"], r["title"], r["state"], r["priority"],
                   prog, r["step"], r["steps"], r["step_label"], r["submitted"], r["started"], r["finished"],
                   r["attempts"], r["pid"], bool(r["cancel"]), r["error"],
                   json.loads(r["result"]) if r["result"] else None)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def fraction(self) -> float | None:
        """Overall fraction: finished steps plus the current step's bar, over all steps."""
        if self.state == "done":
            return 1.0
        if self.state != "running":
            return None if self.state == "queued" else 0.0
        inner = self.progress.fraction if self.progress and self.progress.fraction is not None else 0.0
        return min(1.0, (self.step + inner) / max(self.steps, 1))

    @property
    def eta_s(self) -> float | None:
        """Seconds left: of the current step's bar on the last step; else extrapolated from the
        elapsed time and the overall fraction (None until there is something to go on)."""
        if self.state != "running":
            return None
        if self.step >= self.steps - 1 and self.progress is not None and self.progress.eta_s is not None:
            return self.progress.eta_s
        f = self.fraction
        if not f or not self.started or f < 0.02:
            return self.progress.eta_s if self.progress is not None else None
        return (time.time() - self.started) * (1 - f) / f

    def status_text(self) -> str:
        """e.g. ``'building (45 % · 3 min 10 s left)'``, ``'queued'``, ``'failed: …'``."""
        if self.state == "running":
            f, eta = self.fraction, self.eta_s
            parts = [f"{100 * f:.0f} %" if f is not None else None, f"{format_seconds(eta)} left" if eta is not None else None]
            inner = " · ".join(p for p in parts if p)
            return f"building ({inner})" if inner else "building"
        if self.state == "failed":
            return f"failed: {(self.error or '').strip().splitlines()[-1] if self.error else 'see the log'}"
        return {"queued": "queued", "done": "ready", "cancelled": "cancelled"}[self.state]

    def detail_text(self) -> str:
        """What the job is doing now: its step and its current bar."""
        step = f"step {self.step + 1}/{self.steps}" + (f": {self.step_label}" if self.step_label else "")
        return step + (f" — {self.progress.text()}" if self.progress is not None else "")


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
                row = con.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone()
            return Job.from_row(row)
        cur = con.execute("INSERT INTO jobs(name, config, artifact, title, state, priority, submitted) VALUES (?, ?, ?, ?, 'queued', ?, ?)",
                          (name, json.dumps(config, sort_keys=True), artifact, builder.title(config), priority, time.time()))
        return Job.from_row(con.execute("SELECT * FROM jobs WHERE id = ?", (cur.lastrowid,)).fetchone())


def get(job_id: int) -> Job:
    rows = _rows("SELECT * FROM jobs WHERE id = ?", (int(job_id),))
    row = rows[0] if rows else None
    if row is None:
        raise ValueError(f"no job {job_id}; `geolens jobs list` shows the jobs")
    return Job.from_row(row)


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
    process group, SIGKILL after ``CANCEL_GRACE_S``). A finished job is left as it is."""
    with connect() as con, _transaction(con):
        row = con.execute("SELECT * FROM jobs WHERE id = ?", (int(job_id),)).fetchone()
        if row is None:
            raise ValueError(f"no job {job_id}; `geolens jobs list` shows the jobs")
        if row["state"] == "queued":
            con.execute("UPDATE jobs SET state = 'cancelled', cancel = 1, finished = ? WHERE id = ?", (time.time(), row["id"]))
        elif row["state"] == "running":
            con.execute("UPDATE jobs SET cancel = 1 WHERE id = ?", (row["id"],))
    return get(job_id)


def _update(job_id: int, **fields) -> None:
    cols = ", ".join(f"{k} = ?" for k in fields)  # keys are this module's own column names
    with connect() as con:
        con.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), int(job_id)))


def _claim() -> Job | None:
    """Take the next queued job (highest priority, then oldest) and mark it running."""
    with connect() as con, _transaction(con):
        row = con.execute("SELECT * FROM jobs WHERE state = 'queued' ORDER BY priority DESC, id ASC LIMIT 1").fetchone()
        if row is None:
            return None
        con.execute("UPDATE jobs SET state = 'running', started = ?, attempts = attempts + 1, error = NULL WHERE id = ?",
                    (time.time(), row["id"]))
        return Job.from_row(con.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())


# ----------------------------------------------------------------------------- the runner
class RunnerBusy(RuntimeError):
    """Another runner holds the lock."""


def runner_pid() -> int | None:
    """The pid of the live runner, or None if no runner holds the lock. Never writes."""
    import fcntl

    lock = _folder() / LOCK_NAME
    if not lock.exists():
        return None
    with open(lock, "r") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return int((_folder() / PID_NAME).read_text().strip())
            except (OSError, ValueError):
                return -1
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def ensure_runner(idle_exit_s: float | None = 600, submit_defaults: bool = False) -> int | None:
    """Start a runner in the background unless one is running; returns the new process's pid or None.

    The runner lives in its own session (it outlives the caller, e.g. the Streamlit server) and
    exits after ``idle_exit_s`` seconds with nothing to do; its output goes to ``jobs/runner.log``.
    With ``submit_defaults`` it first queues the default stages not built yet (in the background,
    so the caller does not wait for the imports that check them).
    """
    if runner_pid() is not None:
        return None
    argv = [sys.executable, "-m", "engine.core.jobs", "run"] + ([] if idle_exit_s is None else ["--idle-exit", str(idle_exit_s)]) \
        + (["--submit-defaults"] if submit_defaults else [])
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    with open(jobs_dir() / "runner.log", "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root, env=env,
                                start_new_session=True)
    return proc.pid


def _die_with_parent() -> None:
    """preexec_fn of a job's child: the kernel kills it when the runner dies (Linux)."""
    os.setsid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _is_our_child(pid: int, job_id: int) -> bool:
    """Is ``pid`` still a job child for ``job_id`` (and not a reused pid)?"""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"engine.core.jobs" in cmd and str(job_id).encode() in cmd


def _recover() -> list[int]:
    """At runner start: every ``running`` row is stale. Kill its leftover child, then re-queue it
    (or mark it cancelled if a cancel was asked). Returns the re-queued ids."""
    requeued = []
    with connect() as con:
        rows = con.execute("SELECT * FROM jobs WHERE state = 'running'").fetchall()
    for r in rows:
        if r["pid"] and _is_our_child(r["pid"], r["id"]):
            _kill_group(r["pid"], signal.SIGKILL)
        if r["cancel"]:
            _update(r["id"], state="cancelled", finished=time.time(), pid=None)
        else:
            _update(r["id"], state="queued", pid=None)
            requeued.append(r["id"])
            with open(log_path(r["id"]), "a") as f:
                f.write(f"\n[runner] the previous runner stopped during this job; re-queued at {time.ctime()}\n")
    return requeued


def _tail(path: Path, n: int = 20) -> str:
    """The last ``n`` non-empty lines of a log (tqdm's carriage returns count as line ends)."""
    try:
        lines = path.read_text(errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        return ""
    return "\n".join([line for line in lines if line.strip()][-n:])


def _execute(job: Job, poll_s: float) -> str:
    """Run one claimed job in a child process; returns its final state."""
    log = log_path(job.id)
    env = {**os.environ, "TQDM_MININTERVAL": "1", "PYTHONUNBUFFERED": "1"}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with open(log, "ab") as out:
        out.write(f"[runner] attempt {job.attempts} of job {job.id} ({job.name} {json.dumps(job.config)}) "
                  f"started {time.ctime()}\n".encode())
        out.flush()
        child = subprocess.Popen([sys.executable, "-m", "engine.core.jobs", "exec", str(job.id), str(os.getpid())],
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root, env=env,
                                 preexec_fn=_die_with_parent)
    _update(job.id, pid=child.pid)
    cancel_at = None
    while True:
        try:
            rc = child.wait(timeout=poll_s)
            break
        except subprocess.TimeoutExpired:
            pass
        if cancel_at is None and get(job.id).cancel:
            cancel_at = time.monotonic()
            _kill_group(child.pid, signal.SIGTERM)
        elif cancel_at is not None and time.monotonic() - cancel_at > CANCEL_GRACE_S:
            _kill_group(child.pid, signal.SIGKILL)
    _kill_group(child.pid, signal.SIGKILL)  # stray grandchildren (DataLoader workers) of a finished job
    now = get(job.id)
    if now.cancel:
        state, err = "cancelled", None
    elif rc == 0 and now.state == "done":
        return "done"
    else:
        state, err = "failed", f"exit code {rc}\n{_tail(log)}"
    _update(job.id, state=state, finished=time.time(), pid=None, error=err)
    with open(log, "a") as f:
        f.write(f"[runner] job {job.id} {state} at {time.ctime()}\n")
    return state


def run(*, poll_s: float = 0.5, idle_exit_s: float | None = None, max_jobs: int | None = None,
        on_start: Callable[[list[int]], None] | None = None) -> int:
    """The runner loop: hold the lock, recover stale jobs, then run queued jobs one at a time.

    Returns the number of jobs run when it stops: after ``idle_exit_s`` seconds with an empty
    queue, or after ``max_jobs`` jobs; never otherwise. Raises ``RunnerBusy`` if another runner
    holds the lock.
    """
    import fcntl

    d = jobs_dir()
    lock = open(d / LOCK_NAME, "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise RunnerBusy(f"a job runner already runs (pid {runner_pid()}; lock {d / LOCK_NAME})") from None
    try:
        (d / PID_NAME).write_text(str(os.getpid()))
        requeued = _recover()
        if on_start:
            on_start(requeued)
        done, idle_since = 0, time.monotonic()
        while max_jobs is None or done < max_jobs:
            job = _claim()
            if job is None:
                if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    break
                time.sleep(poll_s)
                continue
            print(f"[runner] job {job.id} {job.name} {json.dumps(job.config)}", flush=True)
            state = _execute(job, poll_s)
            print(f"[runner] job {job.id} {state}", flush=True)
            done += 1
            idle_since = time.monotonic()
        return done
    finally:
        with contextlib.suppress(OSError):
            (d / PID_NAME).unlink()
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


# ----------------------------------------------------------------------------- inside the child
class JobContext:
    """What a builder gets: its job id and config, a progress sink and step markers.

    ``progress(Progress)`` stores a snapshot (at most every ``PROGRESS_EVERY_S``, always the
    last of a bar); ``step(i, n, label)`` says which of ``n`` steps runs now. Everything the
    builder prints goes to the job's log.
    """

    def __init__(self, job: Job):
        self.job, self.id, self.config = job, job.id, job.config
        self._last = 0.0
        self._step = (job.step, job.steps)

    def progress(self, p: Progress, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= PROGRESS_EVERY_S or (p.total and p.done >= p.total):
            self._last = now
            _update(self.id, progress=json.dumps(dataclasses.asdict(p), default=float))

    def step(self, i: int, n: int, label: str = "") -> None:
        self._step = (i, n)
        _update(self.id, step=int(i), steps=max(int(n), 1), step_label=label, progress=None)

    @property
    def cancelled(self) -> bool:
        return get(self.id).cancel


def hook_tqdm(ctx: JobContext) -> Callable[[], None]:
    """Report every tqdm bar drawn in this process as the job's progress; returns the undo."""
    import tqdm.std

    original = tqdm.std.tqdm.display

    def display(bar, *a, **kw):
        out = original(bar, *a, **kw)
        with contextlib.suppress(Exception):  # progress is best effort; the work goes on
            d = bar.format_dict
            rate = d.get("rate")
            if not rate and d.get("elapsed"):
                rate = (d["n"] - getattr(bar, "initial", 0)) / d["elapsed"]
            ctx.progress(Progress(float(d["n"]), float(d["total"]) if d.get("total") else None, d.get("unit") or "it",
                                  float(rate) if rate else None, str(d.get("prefix") or "").rstrip(": ")))
        return out

    tqdm.std.tqdm.display = display

    def undo() -> None:
        tqdm.std.tqdm.display = original

    return undo


def _watch_parent(parent: int) -> None:
    def loop():
        while True:
            if os.getppid() != parent:
                os._exit(137)
            time.sleep(0.5)

    threading.Thread(target=loop, daemon=True, name="watch-runner").start()


def exec_job(job_id: int, parent: int | None = None) -> int:
    """Run job ``job_id``'s builder here (the runner's child); mark it done with its result."""
    if parent is not None:
        _watch_parent(parent)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    job = get(job_id)
    builder = BUILDERS.get(job.name)
    ctx = JobContext(job)
    hook_tqdm(ctx)
    t0 = time.time()
    result = builder.run(job.config, ctx)
    print(f"[job] finished in {format_seconds(time.time() - t0)}: {json.dumps(result, default=str)}", flush=True)
    _update(job_id, state="done", finished=time.time(), pid=None, error=None,
            result=json.dumps(result, default=str))
    return 0


# ----------------------------------------------------------------------------- built-in builders
def load_builders() -> None:
    """Import the modules that register builders (the default stages here; tests add their own
    through ``$GEOLENS_JOB_MODULES``, a comma list of modules)."""
    import importlib

    for mod in filter(None, os.environ.get("GEOLENS_JOB_MODULES", "").split(",")):
        importlib.import_module(mod.strip())


STAGE_TITLES = {"shapes": "Default Shapes cache (geolens-tiny, 4,000 pairs)", "saes": "Plain and aligned SAEs",
                "concepts": "CRAFT concepts of Sneaker and Bag (fmnist-cnn)",
                "geodesics": "EBM geodesics on UCG and URC", "dvr": "Diversity vs. recognizability models"}


def _stage_run(config: dict, ctx: JobContext) -> dict:
    """Build the default stage ``config["stage"]``, after the stages it needs when they are not built
    (``engine.commands.build_stages``: each build skips finished work and resumes interrupted work),
    reporting which of its steps runs."""
    from engine.commands import DEFAULT_STAGES, build_stages

    stage = config["stage"]
    todo = [s for s in DEFAULT_STAGES[stage].needs if not stage_built(s)] + [stage]
    build_stages(todo, config.get("device"), on_step=ctx.step)
    return {"stage": stage, "built": stage_built(stage)}


def stage_built(stage: str) -> list[str]:
    """Names of what the default build of ``stage`` produced ([] if it is not built). Reads only."""
    from engine.core import names

    return names.default_stage_outputs(stage)


def _register_stages() -> None:
    from engine.commands import DEFAULT_STAGES

    for stage in DEFAULT_STAGES:
        if stage in BUILDERS:
            continue
        BUILDERS.add(stage, Builder(
            run=_stage_run,
            title=lambda c, s=stage: STAGE_TITLES.get(s, f"build-defaults {s}"),
            artifact=lambda c, s=stage: f"defaults:{s}",
            built=lambda c, s=stage: stage_built(s)))


def default_stages() -> list[str]:
    """The build-defaults stages in the order ``make app`` queues them (quickest pages first)."""
    from engine.commands import DEFAULT_STAGES

    order = ["shapes", "concepts", "saes", "dvr", "geodesics"]
    return [s for s in order if s in DEFAULT_STAGES] + [s for s in DEFAULT_STAGES if s not in order]


def submit_defaults(stages: list[str] | None = None, only_missing: bool = True) -> list[Job]:
    """Queue the default stages (those not built yet, unless ``only_missing`` is False)."""
    out = []
    for s in stages or default_stages():
        if only_missing and stage_built(s):
            continue
        out.append(submit(s, {"stage": s}))
    return out


_register_stages()
load_builders()


def _main(argv: list[str]) -> int:
    """``python -m engine.core.jobs run|exec``: the runner and its children, without the CLI's imports."""
    import argparse

    from engine.core import jobs as module  # builders register in the module's registry, not __main__'s

    parser = argparse.ArgumentParser(prog="python -m engine.core.jobs")
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run", help="the job runner (what `geolens jobs run` runs)")
    r.add_argument("--idle-exit", type=float, default=None)
    r.add_argument("--max-jobs", type=int, default=None)
    r.add_argument("--submit-defaults", action="store_true", help="first queue the default stages not built yet")
    r.add_argument("--background", action="store_true", help="start the runner detached and return at once")
    e = sub.add_parser("exec", help="run one claimed job (the runner's child)")
    e.add_argument("id", type=int)
    e.add_argument("parent", type=int, nargs="?")
    args = parser.parse_args(argv)
    if args.what == "exec":
        return module.exec_job(args.id, args.parent)
    if args.background:
        pid = module.ensure_runner(args.idle_exit, args.submit_defaults)
        print(f"job runner started in the background (pid {pid}; log {module.jobs_dir() / 'runner.log'})" if pid
              else f"a job runner already runs (pid {module.runner_pid()})", flush=True)
        return 0

    def started(ids: list[int]) -> None:
        print(f"[runner] pid {os.getpid()} on {module.jobs_dir()}" + (f"; re-queued interrupted jobs {ids}" if ids else ""),
              flush=True)
        if args.submit_defaults:
            queued = module.submit_defaults()
            print(f"[runner] queued default stages: {[j.name for j in queued] or 'none (all built)'}", flush=True)

    try:
        n = module.run(idle_exit_s=args.idle_exit, max_jobs=args.max_jobs, on_start=started)
    except module.RunnerBusy as exc:
        print(f"geolens: {exc}", file=sys.stderr)
        return 1
    print(f"[runner] stopped after {n} job(s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
