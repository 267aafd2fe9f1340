"""``Job``: one row of the jobs table, and how it reads (fraction done, time left, status line)."""
from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from typing import Any

from engine.core.progress import Progress, format_seconds

ACTIVE = ("queued", "running")  # the states of a job not finished (then: done, failed or cancelled)


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
