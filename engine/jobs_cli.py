"""`geolens jobs list|submit|cancel|logs|run`: the background job queue from the shell."""
from __future__ import annotations

import json
import sys
import time


def register(commands, reports) -> None:
    p = commands.add_parser("jobs", help="background jobs: list, submit, cancel, logs, run the runner")
    sub = p.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")

    q = sub.add_parser("list", help="jobs with state and progress, newest first")
    q.add_argument("--all", action="store_true", help="also finished jobs (default: active and the last 10)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_list)

    q = sub.add_parser("submit", help="queue a job: a build-defaults stage, `defaults` for every missing one, "
                                      "or any registered builder with --config JSON")
    q.add_argument("name", help="builder name (e.g. shapes, saes, concepts, geodesics, dvr) or `defaults`")
    q.add_argument("--config", default=None, help="config as a JSON object (default: the stage's)")
    q.add_argument("--device", default=None, help="for stages: auto | cpu | cuda | mps")
    q.add_argument("--all", action="store_true", help="with `defaults`: queue stages that are already built too")
    q.add_argument("--start-runner", action="store_true", help="start a runner in the background if none runs")
    q.set_defaults(func=_submit)

    q = sub.add_parser("cancel", help="cancel a queued or running job")
    q.add_argument("id", type=int)
    q.set_defaults(func=_cancel)

    q = sub.add_parser("logs", help="print a job's log")
    q.add_argument("id", type=int)
    q.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    q.set_defaults(func=_logs)

    q = sub.add_parser("run", help="run the job runner (one per cache folder; stale running jobs are re-queued)")
    q.add_argument("--background", action="store_true", help="start it detached and return (no-op if one runs)")
    q.add_argument("--idle-exit", type=float, default=None, help="stop after this many seconds with nothing queued")
    q.add_argument("--max-jobs", type=int, default=None, help="stop after this many jobs")
    q.add_argument("--submit-defaults", action="store_true", help="first queue the default stages not built yet")
    q.set_defaults(func=_run)


def _row(j) -> dict:
    return {"id": j.id, "name": j.name, "title": j.title, "state": j.state, "status": j.status_text(),
            "detail": j.detail_text() if j.state == "running" else "", "fraction": j.fraction, "eta_s": j.eta_s,
            "config": j.config, "artifact": j.artifact, "attempts": j.attempts, "result": j.result,
            "error": j.error, "submitted": j.submitted, "started": j.started, "finished": j.finished}


def _list(args) -> int:
    from engine.core import jobs

    rows = jobs.list_jobs(limit=1000 if args.all else 200)
    if not args.all:
        active = [j for j in rows if j.active]
        rows = active + [j for j in rows if not j.active][:10]
    if args.json:
        print(json.dumps([_row(j) for j in rows], indent=2, default=str))
        return 0
    pid = jobs.runner_pid()
    print(f"runner: {'pid ' + str(pid) if pid else 'not running (start it: geolens jobs run --background)'}")
    if not rows:
        print("no jobs (queue the defaults: geolens jobs submit defaults)")
    for j in rows:
        print(f"{j.id:>4}  {j.state:<9}  {j.name:<10}  {j.status_text()}")
        if j.state == "running":
            print(f"      {j.detail_text()}")
    return 0


def _submit(args) -> int:
    from engine.core import jobs

    if args.name == "defaults":
        if args.config:
            raise ValueError("`jobs submit defaults` takes no --config")
        submitted = jobs.submit_defaults(only_missing=not args.all)
        if not submitted:
            print("every default stage is built already (add --all to queue them anyway)")
    else:
        try:
            config = json.loads(args.config) if args.config else ({"stage": args.name} if args.name in jobs.default_stages() else {})
        except json.JSONDecodeError as exc:
            raise ValueError(f"--config is not valid JSON ({exc}); e.g. --config '{{\"steps\": 10}}'") from None
        if not isinstance(config, dict):
            raise ValueError("--config must be a JSON object, e.g. '{\"steps\": 10}'")
        if args.device:
            config["device"] = args.device
        submitted = [jobs.submit(args.name, config)]
    for j in submitted:
        print(f"job {j.id}: {j.name} — {j.title} ({j.state})")
    if args.start_runner:
        pid = jobs.ensure_runner(idle_exit_s=None)
        print(f"started the runner (pid {pid})" if pid else f"runner already running (pid {jobs.runner_pid()})")
    return 0


def _cancel(args) -> int:
    from engine.core import jobs

    j = jobs.cancel(args.id)
    print(f"job {j.id}: {'cancel requested (the runner stops it)' if j.state == 'running' else j.state}")
    return 0


def _logs(args) -> int:
    from engine.core import jobs

    job = jobs.get(args.id)
    path = jobs.log_path(job.id)
    pos = 0
    while True:
        if path.exists():
            with open(path, "rb") as f:
                f.seek(pos)
                chunk = f.read()
                pos += len(chunk)
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
        if not args.follow or not jobs.get(job.id).active:
            break
        time.sleep(1)
    if not path.exists():
        print(f"job {job.id} has no log yet ({job.state})")
    return 0


def _run(args) -> int:
    from engine.core.jobs.__main__ import main

    return main(["run"] + (["--idle-exit", str(args.idle_exit)] if args.idle_exit is not None else [])
                + (["--max-jobs", str(args.max_jobs)] if args.max_jobs is not None else [])
                + (["--submit-defaults"] if args.submit_defaults else []) + (["--background"] if args.background else []))
