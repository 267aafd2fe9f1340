"""The job runner: progress, resume after `kill -9` of the runner, cancel, the per-artifact lock.

The runner tests use a tiny builder, ``count``, registered below: it counts to ``steps`` with a
checkpoint file, so a re-run resumes where the killed one stopped. The runner's child processes
import this module through ``$GEOLENS_JOB_MODULES`` to find it.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.config import atomic_write_text
from engine.core import jobs
from engine.core.jobs import stages
from engine.core.progress import Progress, Tracker

ROOT = Path(__file__).resolve().parent.parent


def _count(config: dict, ctx: jobs.JobContext) -> dict:
    """Count to ``steps``, ``sleep`` seconds a step, checkpointing the count after each step."""
    from engine.store import cache_root

    ckpt = cache_root() / "count" / f"{config.get('tag', 'x')}.json"
    start = json.loads(ckpt.read_text())["done"] if ckpt.exists() else 0
    print(f"count: resuming at {start}" if start else "count: starting", f"(nice {os.nice(0)})", flush=True)
    ctx.step(0, 1, "count")
    with Tracker(total=config["steps"], unit="step", stage="count", sink=ctx.progress, start=start, min_interval=0) as t:
        for i in range(start, config["steps"]):
            time.sleep(config.get("sleep", 0.0))
            atomic_write_text(ckpt, json.dumps({"done": i + 1}))
            t.update(i + 1)
    if config.get("fail"):
        raise RuntimeError("count: asked to fail")
    return {"counted": config["steps"], "resumed_from": start}


if "count" not in jobs.BUILDERS:
    jobs.BUILDERS.add("count", jobs.Builder(run=_count, title=lambda c: f"count to {c['steps']}"))
    jobs.BUILDERS.add("count_after", jobs.Builder(run=_count, title=lambda c: f"count to {c['steps']} after {c['after']}",
                                                  after=lambda c: [c["after"]]))


@pytest.fixture
def jobs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOLENS_CACHE", str(tmp_path))
    monkeypatch.setenv("GEOLENS_JOB_MODULES", "tests.test_jobs")
    return tmp_path


def _runner(*extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "engine.core.jobs", "run", *extra], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait(pred, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = pred()
        if out:
            return out
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


# ----------------------------------------------------------------------------- pure parts
def test_fraction_eta_and_status_by_hand():
    base = dict(id=1, name="count", config={}, artifact="a", title="t", priority=0, step_label="", submitted=0.0,
                finished=None, attempts=1, pid=None, cancel=False, error=None, result=None)
    # step 2 of 4 (index 1), its bar at 50/100: overall (1 + 0.5) / 4 = 0.375
    j = jobs.Job(state="running", progress=Progress(50, 100, "it", 10.0), step=1, steps=4, started=time.time() - 30, **base)
    assert j.fraction == pytest.approx(0.375)
    # not on the last step: elapsed 30 s at 37.5 % -> 30 * 0.625 / 0.375 = 50 s left
    assert j.eta_s == pytest.approx(50.0, abs=0.5)
    assert j.status_text() == "building (38 % · 50 s left)"
    # last step: its bar's own ETA, (100 - 50) / 10 = 5 s
    last = jobs.Job(state="running", progress=Progress(50, 100, "it", 10.0), step=3, steps=4, started=time.time(), **base)
    assert last.fraction == pytest.approx(0.875) and last.eta_s == pytest.approx(5.0)
    assert jobs.Job(state="done", progress=None, step=0, steps=1, started=None, **base).status_text() == "ready"
    assert jobs.Job(state="queued", progress=None, step=0, steps=1, started=None, **base).fraction is None
    failed = jobs.Job(state="failed", progress=None, step=0, steps=1, started=None, **{**base, "error": "exit 1\nboom"})
    assert failed.status_text() == "failed: boom"


def test_lock_one_active_job_per_artifact(jobs_root):
    a = jobs.submit("count", {"steps": 3})
    assert jobs.submit("count", {"steps": 3}).id == a.id  # same artifact: the existing job
    b = jobs.submit("count", {"steps": 4})
    assert b.id != a.id
    assert jobs.submit("count", {"steps": 3}, priority=5).priority == 5  # re-submitting can raise the priority
    # the database itself refuses a second active row for one artifact
    with jobs.connect() as con, pytest.raises(sqlite3.IntegrityError):
        con.execute("INSERT INTO jobs(name, config, artifact, title, state, submitted) VALUES (?, ?, ?, ?, 'queued', ?)",
                    ("count", "{}", a.artifact, "dup", time.time()))
    assert jobs.cancel(a.id).state == "cancelled"  # a queued job is cancelled at once
    c = jobs.submit("count", {"steps": 3})  # the lock is free again
    assert c.id not in (a.id, b.id) and c.state == "queued"
    assert [j.id for j in jobs.list_jobs(("queued",))] == [c.id, b.id]
    with pytest.raises(ValueError, match="unknown job builder 'nope'"):
        jobs.submit("nope")


def test_tqdm_bars_become_job_progress(jobs_root):
    from tqdm import tqdm

    job = jobs.submit("count", {"steps": 1, "tag": "tqdm"})
    ctx = jobs.JobContext(job)
    undo = jobs.hook_tqdm(ctx)
    try:
        for _ in tqdm(range(40), desc="encode", unit="pair", mininterval=0, file=open(os.devnull, "w")):
            pass
    finally:
        undo()  # the rest of the suite draws plain bars again
    p = jobs.get(job.id).progress
    assert (p.done, p.total, p.unit, p.stage) == (40, 40, "pair", "encode")


# ----------------------------------------------------------------------------- the runner
def test_runner_reports_progress_and_result(jobs_root):
    job = jobs.submit("count", {"steps": 20, "sleep": 0.1, "tag": "progress"})
    runner = _runner("--idle-exit", "2")
    try:
        mid = _wait(lambda: (j := jobs.get(job.id)).progress is not None and 0 < j.progress.done < 20 and j, what="progress")
        assert mid.state == "running" and mid.progress.total == 20 and mid.progress.unit == "step"
        assert mid.progress.rate and mid.progress.rate > 0 and mid.eta_s is not None
        assert 0 < mid.fraction < 1 and mid.status_text().startswith("building (")
        assert jobs.runner_pid() == runner.pid
        done = _wait(lambda: (j := jobs.get(job.id)).state == "done" and j, what="job done")
        assert done.result == {"counted": 20, "resumed_from": 0} and done.fraction == 1.0
        assert done.progress.done == 20
        assert runner.wait(timeout=30) == 0  # idle exit
    finally:
        _stop(runner)
    log = jobs.log_path(job.id).read_text()
    assert "count: starting" in log and "finished in" in log


def test_two_slots_run_side_by_side_and_a_job_waits_for_what_it_needs(jobs_root, monkeypatch):
    monkeypatch.setenv(jobs.SLOTS_ENV, "2")
    a = jobs.submit("count", {"steps": 12, "sleep": 0.15, "tag": "a"})
    after_a = jobs.submit("count_after", {"steps": 2, "tag": "c", "after": a.artifact})  # queued before b
    b = jobs.submit("count", {"steps": 12, "sleep": 0.15, "tag": "b"})
    runner = _runner("--idle-exit", "1")
    try:
        _wait(lambda: all(jobs.get(j.id).state == "done" for j in (a, after_a, b)), what="three jobs done")
        assert runner.wait(timeout=30) == 0
    finally:
        _stop(runner)
    a, after_a, b = (jobs.get(j.id) for j in (a, after_a, b))
    assert b.started < a.finished and a.started < b.finished  # side by side, though b was queued last
    assert after_a.started >= a.finished  # it waited for the job it needs
    base = os.nice(0)  # the runner's niceness (the suite may itself run under `nice`)
    assert f"(nice {base})" in jobs.log_path(a.id).read_text()  # the first job keeps the CPU, the one behind yields
    assert f"(nice {min(19, base + jobs.runner.BEHIND_NICE)})" in jobs.log_path(b.id).read_text()


def test_job_slots_setting(monkeypatch):
    monkeypatch.setenv(jobs.SLOTS_ENV, "3")
    assert jobs.job_slots() == 3
    for bad in ("0", "two"):
        monkeypatch.setenv(jobs.SLOTS_ENV, bad)
        with pytest.raises(ValueError, match=jobs.SLOTS_ENV):
            jobs.job_slots()
    monkeypatch.delenv(jobs.SLOTS_ENV)
    assert jobs.job_slots() == max(1, min(2, os.cpu_count() or 1))


def test_resume_after_kill_9_of_the_runner(jobs_root):
    job = jobs.submit("count", {"steps": 30, "sleep": 0.1, "tag": "resume"})
    runner = _runner()
    try:
        _wait(lambda: (j := jobs.get(job.id)).progress is not None and j.progress.done >= 8, what="8 steps")
        child = jobs.get(job.id).pid
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
        _wait(lambda: not _alive(child), timeout=10, what="the orphaned child to die")
        killed_at = jobs.get(job.id)
        assert killed_at.state == "running"  # nobody marked it: the next runner must notice
        runner = _runner("--idle-exit", "1")
        done = _wait(lambda: (j := jobs.get(job.id)).state == "done" and j, what="resumed job done")
        assert done.attempts == 2
        assert done.result["resumed_from"] >= 8  # resumed from the checkpoint, not from 0
    finally:
        _stop(runner)
    assert "re-queued" in jobs.log_path(job.id).read_text()


def test_cancel_a_running_job_and_failures(jobs_root):
    long = jobs.submit("count", {"steps": 1000, "sleep": 0.05, "tag": "cancel"})
    failing = jobs.submit("count", {"steps": 2, "fail": True, "tag": "fail"})
    runner = _runner("--idle-exit", "1")
    try:
        _wait(lambda: (j := jobs.get(long.id)).progress is not None and j.progress.done > 2, what="running")
        child = jobs.get(long.id).pid
        assert jobs.cancel(long.id).cancel
        j = _wait(lambda: (j := jobs.get(long.id)).state == "cancelled" and j, timeout=jobs.CANCEL_GRACE_S + 10, what="cancelled")
        assert j.progress.done < 1000 and not _alive(child)
        f = _wait(lambda: (j := jobs.get(failing.id)).state == "failed" and j, what="failed")
        assert "count: asked to fail" in f.error
        with pytest.raises(jobs.RunnerBusy, match="already runs"):  # one runner per cache folder
            jobs.run(idle_exit_s=0)
    finally:
        _stop(runner)


def test_cli_list_submit_cancel_logs(jobs_root, capsys):
    from engine.cli import main

    assert main(["jobs", "submit", "count", "--config", '{"steps": 2}']) == 0
    assert "job 1: count — count to 2 (queued)" in capsys.readouterr().out
    assert main(["jobs", "submit", "count", "--config", "[1]"]) == 2
    assert "--config must be a JSON object" in capsys.readouterr().err
    assert main(["jobs", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["state"], r["title"]) for r in rows] == [(1, "queued", "count to 2")]
    assert main(["jobs", "cancel", "1"]) == 0 and "cancelled" in capsys.readouterr().out
    assert main(["jobs", "logs", "1"]) == 0 and "no log yet" in capsys.readouterr().out
    assert main(["jobs", "cancel", "9"]) == 2 and "no job 9" in capsys.readouterr().err


def test_default_stages_are_registered_builders(jobs_root):
    from engine.commands import DEFAULT_STAGES

    assert set(jobs.default_stages()) == set(DEFAULT_STAGES)
    for s in DEFAULT_STAGES:
        assert s in jobs.BUILDERS
        assert jobs.BUILDERS.get(s).built({"stage": s}) == []  # an empty cache folder has nothing built
    queued = jobs.submit_defaults()
    assert [j.name for j in queued] == jobs.default_stages()
    assert [j.id for j in jobs.submit_defaults()] == [j.id for j in queued]  # the lock: no duplicates


def test_stage_job_builds_its_needs_first_and_counts_its_steps(jobs_root, monkeypatch):
    """A stage's job builds the stages it needs that are not built yet, then its own; ``ctx.step``
    says which build of how many runs (the job's done/total)."""
    from tests.test_cli import fake_stages

    built, state = fake_stages(monkeypatch)
    done: set[str] = set()
    monkeypatch.setattr(stages, "stage_built", lambda s: ["built"] if s in done else [])

    class Ctx:
        def __init__(self):
            self.steps: list = []

        def step(self, i, n, label=""):
            self.steps.append((i, n, label))

    ctx = Ctx()
    assert stages.run_stage({"stage": "second", "device": "cpu"}, ctx) == {"stage": "second", "built": []}
    assert state["prepared"] == "cpu" and [b[:2] for b in built] == [("one", "x"), ("one", "y"), ("one", "x"), ("one", "y"),
                                                                       ("two", "z")]
    assert [s[:2] for s in ctx.steps] == [(0, 2), (1, 6), (2, 6), (3, 6), (4, 6), (5, 6)]
    built.clear()
    done.add("first")
    ctx = Ctx()
    stages.run_stage({"stage": "second"}, ctx)  # first is built: not again
    assert [b[:2] for b in built] == [("one", "x"), ("one", "y"), ("two", "z")]
    assert ctx.steps == [(0, 3, "geolens one build name=x"), (1, 3, "geolens one build name=y"), (2, 3, "geolens two build")]
