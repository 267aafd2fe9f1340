"""Inside a job's child process: ``JobContext`` (what a builder gets), the tqdm hook, ``exec_job``.

Everything the builder prints goes to the job's log (the runner points the child's stdout
there); its progress goes to the job's row, through ``JobContext.progress`` or any tqdm bar.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from typing import Callable

from engine.core.jobs.builders import BUILDERS
from engine.core.jobs.job import Job
from engine.core.jobs.queue import get, update
from engine.core.progress import Progress, format_seconds

PROGRESS_EVERY_S = 1.0


class JobContext:
    """What a builder gets: its job id and config, a progress sink and step markers.

    ``progress(Progress)`` stores a snapshot (at most every ``PROGRESS_EVERY_S``, always the
    last of a bar); ``step(i, n, label)`` says which of ``n`` steps runs now.
    """

    def __init__(self, job: Job):
        self.job, self.id, self.config = job, job.id, job.config
        self._last = 0.0

    def progress(self, p: Progress, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= PROGRESS_EVERY_S or (p.total and p.done >= p.total):
            self._last = now
            update(self.id, progress=json.dumps(dataclasses.asdict(p), default=float))

    def step(self, i: int, n: int, label: str = "") -> None:
        update(self.id, step=int(i), steps=max(int(n), 1), step_label=label, progress=None)


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
    """Exit when the runner ``parent`` dies (where the kernel's ``PR_SET_PDEATHSIG`` is missing)."""
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
    update(job_id, state="done", finished=time.time(), pid=None, error=None, result=json.dumps(result, default=str))
    return 0
