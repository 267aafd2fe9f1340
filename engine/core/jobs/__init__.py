"""Background jobs: a queue in SQLite, one runner process, progress, logs, cancel, resume.

A job is ``(builder name, config dict)``. The builder is looked up in ``BUILDERS`` (a
``Registry``); the runner claims queued jobs, up to ``job_slots()`` at once (a job waits for
the active jobs its builder's ``after`` names), and runs each in a child process
(``python -m engine.core.jobs exec ID``) whose stdout/stderr go to the job's log. The child
reports ``Progress`` snapshots (``engine.core.progress``) into the job's row, and every tqdm bar
a builder draws is reported the same way, so today's commands show progress with no change.

One job per module:

- ``builders``: ``Builder`` (what a job runs) and the registry ``BUILDERS``.
- ``job``: ``Job``, one row of the table, and how it reads (fraction, time left, status).
- ``queue``: the files and the database: submit, get, list, cancel, claim, the per-artifact lock.
- ``runner``: the runner process: its lock, its children, resume after a killed runner, cancel.
- ``child``: inside a job's child: ``JobContext`` (progress, steps) and the tqdm hook.
- ``stages``: the build-defaults stages (``engine.commands.DEFAULT_STAGES``) as builders.
- ``__main__``: ``python -m engine.core.jobs run|exec``.

Files, all under ``<cache root>/jobs/``:

- ``jobs.sqlite``: one row per job (state, progress, result, error); every statement takes
  parameters. SQLite's default rollback journal (not WAL), which pages open read-only without
  writing a file (``queue.connect``).
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

So the queue is this package on the standard library's ``sqlite3``; the rest (progress,
registries, artifacts) is the shared core's.
"""
from engine.core.jobs.builders import BUILDERS, Builder, load_builders
from engine.core.jobs.child import JobContext, hook_tqdm
from engine.core.jobs.job import ACTIVE, Job
from engine.core.jobs.queue import cancel, connect, get, latest, list_jobs, log_path, log_tail, submit
from engine.core.jobs.runner import CANCEL_GRACE_S, SLOTS_ENV, RunnerBusy, ensure_runner, job_slots, run, runner_pid
from engine.core.jobs.stages import STAGE_TITLES, default_stages, register_stages, submit_defaults

__all__ = ["ACTIVE", "BUILDERS", "Builder", "CANCEL_GRACE_S", "Job", "JobContext", "RunnerBusy", "SLOTS_ENV", "STAGE_TITLES", "cancel",
           "connect", "default_stages", "ensure_runner", "get", "hook_tqdm", "job_slots", "latest", "list_jobs", "log_path", "log_tail",
           "run", "runner_pid", "submit", "submit_defaults"]

register_stages()
load_builders()  # last: the modules it imports may import this package
