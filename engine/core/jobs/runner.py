"""The runner: one process per cache folder that runs queued jobs, each in a child, up to
``job_slots()`` side by side (one per CPU core, at most two by default; ``$GEOLENS_JOB_SLOTS``).

``runner.lock`` under the jobs folder is an ``flock`` held by the one runner (released by the
kernel when it dies, even on ``kill -9``); ``runner.pid`` says which process holds it. A runner
that starts re-queues the ``running`` rows a dead runner left. A child is
``python -m engine.core.jobs exec ID RUNNER_PID`` (``child.exec_job``) in its own process group,
so a cancel stops it and its workers together.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Callable

from engine.core.jobs.job import Job
from engine.core.jobs.queue import claim, connect, folder, get, jobs_dir, log_path, log_tail, update

LOCK_NAME = "runner.lock"
PID_NAME = "runner.pid"
CANCEL_GRACE_S = 5.0
MAIN = "engine.core.jobs"
"""``python -m MAIN run|exec``: this package's ``__main__``, for the runner and its children."""
ROOT = Path(__file__).resolve().parents[3]
"""The repository root: the processes' working folder, put on their ``PYTHONPATH``."""


SLOTS_ENV = "GEOLENS_JOB_SLOTS"


def job_slots() -> int:
    """How many jobs run at once: ``$GEOLENS_JOB_SLOTS``, else one per core up to two. The default
    builds are single-threaded for most of their time (solvers, UMAP, samplers), so on 2 cores two
    of them finish in about the time of the longer one."""
    env = os.environ.get(SLOTS_ENV, "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"${SLOTS_ENV} must be a whole number ≥ 1, got {env!r}")
        return int(env)
    return max(1, min(2, os.cpu_count() or 1))


def _child_threads(slots: int) -> dict[str, str]:
    """Thread settings for a child when ``slots`` jobs share the cores (values the user set are kept)."""
    n = str(max(1, (os.cpu_count() or 1) // slots))
    return {k: os.environ.get(k, n) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


class RunnerBusy(RuntimeError):
    """Another runner holds the lock."""


def runner_pid() -> int | None:
    """The pid of the live runner, or None if no runner holds the lock. Never writes."""
    import fcntl

    lock = folder() / LOCK_NAME
    if not lock.exists():
        return None
    with open(lock, "r") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return int((folder() / PID_NAME).read_text().strip())
            except (OSError, ValueError):
                return -1
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def _spawn(args: list[str], out: IO[bytes], env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """``python -m engine.core.jobs ARGS`` in the repository root, stdout and stderr to ``out``."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.Popen([sys.executable, "-m", MAIN, *args], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=ROOT, env={**os.environ, **(env or {}), "PYTHONPATH": path}, **popen)


def ensure_runner(idle_exit_s: float | None = 600, submit_defaults: bool = False) -> int | None:
    """Start a runner in the background unless one is running; returns the new process's pid or None.

    The runner lives in its own session (it outlives the caller, e.g. the Streamlit server) and
    exits after ``idle_exit_s`` seconds with nothing to do; its output goes to ``jobs/runner.log``.
    With ``submit_defaults`` it first queues the default stages not built yet (in the background,
    so the caller does not wait for the imports that check them).
    """
    if runner_pid() is not None:
        return None
    args = ["run"] + ([] if idle_exit_s is None else ["--idle-exit", str(idle_exit_s)]) \
        + (["--submit-defaults"] if submit_defaults else [])
    with open(jobs_dir() / "runner.log", "ab") as out:
        return _spawn(args, out, start_new_session=True).pid


BEHIND_NICE = 10
"""niceness of a job started while another runs: the job queued first (the first page) keeps the CPU"""


def _die_with_parent(nice: int = 0) -> None:
    """preexec_fn of a job's child: the kernel kills it when the runner dies (Linux)."""
    os.setsid()
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
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
    return MAIN.encode() in cmd and str(job_id).encode() in cmd


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
            update(r["id"], state="cancelled", finished=time.time(), pid=None)
        else:
            update(r["id"], state="queued", pid=None)
            requeued.append(r["id"])
            with open(log_path(r["id"]), "a") as f:
                f.write(f"\n[runner] the previous runner stopped during this job; re-queued at {time.ctime()}\n")
    return requeued


def _execute(job: Job, poll_s: float, slots: int = 1, nice: int = 0) -> str:
    """Run one claimed job in a child process; returns its final state."""
    log = log_path(job.id)
    with open(log, "ab") as out:
        out.write(f"[runner] attempt {job.attempts} of job {job.id} ({job.name} {json.dumps(job.config)}) "
                  f"started {time.ctime()}\n".encode())
        out.flush()
        child = _spawn(["exec", str(job.id), str(os.getpid())], out,
                       {"TQDM_MININTERVAL": "1", "PYTHONUNBUFFERED": "1", **_child_threads(slots)},
                       preexec_fn=functools.partial(_die_with_parent, nice))
    update(job.id, pid=child.pid)
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
        state, err = "failed", f"exit code {rc}\n{log_tail(job.id)}"
    update(job.id, state=state, finished=time.time(), pid=None, error=err)
    with open(log, "a") as f:
        f.write(f"[runner] job {job.id} {state} at {time.ctime()}\n")
    return state


def run(*, poll_s: float = 0.5, idle_exit_s: float | None = None, max_jobs: int | None = None,
        on_start: Callable[[list[int]], None] | None = None, slots: int | None = None) -> int:
    """The runner loop: hold the lock, recover stale jobs, then run queued jobs, up to ``slots``
    (default ``job_slots()``) at once, each watched by a thread of this process.

    Returns the number of jobs run when it stops: after ``idle_exit_s`` seconds with an empty
    queue and nothing running, or after ``max_jobs`` jobs; never otherwise. Raises ``RunnerBusy``
    if another runner holds the lock.
    """
    import fcntl

    slots = slots or job_slots()
    d = jobs_dir()
    lock = open(d / LOCK_NAME, "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise RunnerBusy(f"a job runner already runs (pid {runner_pid()}; lock {d / LOCK_NAME})") from None
    running: dict[int, threading.Thread] = {}
    try:
        (d / PID_NAME).write_text(str(os.getpid()))
        requeued = _recover()
        if on_start:
            on_start(requeued)
        done, idle_since = 0, time.monotonic()
        while True:
            for jid, thread in list(running.items()):
                if not thread.is_alive():
                    del running[jid]
                    done += 1
                    idle_since = time.monotonic()
            more = max_jobs is None or done + len(running) < max_jobs
            job = claim() if more and len(running) < slots else None
            if job is not None:
                print(f"[runner] job {job.id} {job.name} {json.dumps(job.config)}", flush=True)
                nice = BEHIND_NICE if running else 0  # another job was claimed before this one: it goes first
                thread = threading.Thread(target=_watch, args=(job, poll_s, slots, nice), name=f"job-{job.id}", daemon=True)
                running[job.id] = thread
                thread.start()
                continue
            if not running and (not more or (idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s)):
                break
            time.sleep(poll_s)
        return done
    finally:  # children still running die with this process (PR_SET_PDEATHSIG); the next runner re-queues them
        with contextlib.suppress(OSError):
            (d / PID_NAME).unlink()
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _watch(job: Job, poll_s: float, slots: int, nice: int) -> None:
    state = _execute(job, poll_s, slots, nice)
    print(f"[runner] job {job.id} {state}", flush=True)
