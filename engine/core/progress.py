"""One progress type for every long job: it feeds tqdm, ``st.progress`` and the job runner.

A builder takes ``progress: ProgressFn | None`` and calls it with a ``Progress`` snapshot; use
``Tracker`` to get rate and ETA computed for you::

    track = Tracker(total=steps, unit="step", sink=progress)
    for step in range(steps):
        ...
        track.update(step + 1)
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Progress:
    """A snapshot: ``done`` of ``total`` ``unit``s, at ``rate`` units/s; ``stage`` names the step."""

    done: float
    total: float | None
    unit: str = "it"
    rate: float | None = None
    stage: str = ""

    @property
    def fraction(self) -> float | None:
        return None if not self.total else min(1.0, self.done / self.total)

    @property
    def eta_s(self) -> float | None:
        if not self.total or not self.rate:
            return None
        return max(0.0, (self.total - self.done) / self.rate)

    def text(self) -> str:
        """e.g. ``'train · 450/1500 step · 12.3 step/s · 1 min 25 s left'``."""
        parts = [self.stage] if self.stage else []
        parts.append(f"{self.done:g}/{self.total:g} {self.unit}" if self.total else f"{self.done:g} {self.unit}")
        if self.rate:
            parts.append(f"{self.rate:.3g} {self.unit}/s")
        if self.eta_s is not None:
            parts.append(f"{format_seconds(self.eta_s)} left")
        return " · ".join(parts)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "fraction": self.fraction, "eta_s": self.eta_s}


ProgressFn = Callable[[Progress], None]


def print_progress(p: Progress) -> None:
    """A sink for the command line: one updating line on stderr (``Progress.text``)."""
    import sys

    end = "\n" if p.total and p.done >= p.total else ""
    print(f"\r  {p.text()}\033[K", end=end, file=sys.stderr, flush=True)


def format_seconds(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


class Tracker:
    """Turns ``update(done)`` calls into ``Progress`` snapshots with a smoothed rate.

    ``sink`` receives each snapshot (at most every ``min_interval`` seconds, and always the last).
    With no sink, a tqdm bar on stderr shows the same numbers.
    """

    def __init__(self, total: float | None, unit: str = "it", stage: str = "", sink: ProgressFn | None = None,
                 start: float = 0, min_interval: float = 0.2):
        self.total, self.unit, self.stage, self.sink = total, unit, stage, sink
        self.start_done, self.done = start, start
        self.t0 = self._last = time.monotonic()
        self.min_interval = min_interval
        self._bar = None
        if sink is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, unit=unit, desc=stage or None, dynamic_ncols=True)

    def snapshot(self) -> Progress:
        dt = time.monotonic() - self.t0
        rate = (self.done - self.start_done) / dt if dt > 0 and self.done > self.start_done else None
        return Progress(self.done, self.total, self.unit, rate, self.stage)

    def update(self, done: float, force: bool = False) -> None:
        if self._bar is not None:
            self._bar.update(done - self.done)
        self.done = done
        now = time.monotonic()
        last = self.total is not None and done >= self.total
        if self.sink is not None and (force or last or now - self._last >= self.min_interval):
            self._last = now
            self.sink(self.snapshot())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def legacy(progress: ProgressFn | None, unit: str = "it", stage: str = ""):
    """Adapter for older builders that call ``progress(done, total)``: returns such a callable."""
    if progress is None:
        return None
    state: dict = {}

    def call(done, total):
        if "t" not in state or state["t"].total != total:
            state["t"] = Tracker(total, unit, stage, sink=progress, min_interval=0)
        state["t"].update(done)

    return call


def staged(progress: ProgressFn | None, unit: str = "it"):
    """Adapter for builders that call ``progress(stage, done, total)``: a fresh ``Tracker`` per stage.

    With ``progress`` None the trackers draw tqdm bars, so CLI and jobs share one code path.
    """
    state: dict = {}

    def call(stage: str, done, total) -> None:
        t = state.get("t")
        if t is None or t.stage != stage or t.total != total:
            if t is not None:
                t.close()
            t = state["t"] = Tracker(total, unit, stage, sink=progress)
        t.update(done)

    return call
