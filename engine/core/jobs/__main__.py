"""``python -m engine.core.jobs run|exec``: the runner and its children, without the CLI's imports."""
from __future__ import annotations

import argparse
import os
import sys

from engine.core.jobs.child import exec_job
from engine.core.jobs.queue import jobs_dir
from engine.core.jobs.runner import RunnerBusy, ensure_runner, run, runner_pid
from engine.core.jobs.stages import submit_defaults


def main(argv: list[str]) -> int:
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
        return exec_job(args.id, args.parent)
    if args.background:
        pid = ensure_runner(args.idle_exit, args.submit_defaults)
        print(f"job runner started in the background (pid {pid}; log {jobs_dir() / 'runner.log'})" if pid
              else f"a job runner already runs (pid {runner_pid()})", flush=True)
        return 0

    def started(ids: list[int]) -> None:
        print(f"[runner] pid {os.getpid()} on {jobs_dir()}" + (f"; re-queued interrupted jobs {ids}" if ids else ""),
              flush=True)
        if args.submit_defaults:
            queued = submit_defaults()
            print(f"[runner] queued default stages: {[j.name for j in queued] or 'none (all built)'}", flush=True)

    try:
        n = run(idle_exit_s=args.idle_exit, max_jobs=args.max_jobs, on_start=started)
    except RunnerBusy as exc:
        print(f"geolens: {exc}", file=sys.stderr)
        return 1
    print(f"[runner] stopped after {n} job(s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
