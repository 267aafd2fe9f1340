"""Job progress where a page's figures will appear, and a button to start its missing defaults.

A page whose data is missing makes one call::

    if not pending_or_ready("shapes", bool(caches)):
        st.stop()

``pending_or_ready`` returns ``ready``; when it is False it draws, in a fragment that reruns
every ``POLL_S`` seconds, the state of the stage's job (queued, building with progress and
ETA, failed with its log) or a button that queues it. When the job finishes, or when anything
is added to the cache folder meanwhile (``names.store_stamp()``: a stage writes several artifacts,
and the page may need only its first), the fragment reruns the whole page, so the figures fill in.
"""
from __future__ import annotations

from typing import Callable

import streamlit as st

from engine.core import jobs, names
from engine.core.progress import format_seconds

POLL_S = 2.0
PENDING_MARK = "geolens-pending"
"""Text in the pending box; the first-run benchmark waits for pages to lose it."""


def stage_job(stage: str) -> jobs.Job | None:
    return jobs.latest(stage, {"stage": stage})


def start(stage: str) -> jobs.Job:
    """Queue ``stage`` at high priority (or raise the priority of its queued job) and make sure a runner runs."""
    job = jobs.submit(stage, {"stage": stage}, priority=10)
    jobs.ensure_runner()
    return job


def job_box(job: jobs.Job, key: str) -> None:
    """One job: title, progress bar with percentage and time left, current step, cancel."""
    st.markdown(f"**{job.title}** — {job.status_text()}")
    st.progress(job.fraction or 0.0)
    if job.state == "running":
        st.caption(job.detail_text())
    elif job.state == "queued":
        ahead = [j for j in jobs.list_jobs(("running", "queued")) if j.id != job.id and
                 (j.state == "running" or (j.priority, -j.id) > (job.priority, -job.id))]
        st.caption(f"waiting for {len(ahead)} job(s) ahead of it" if ahead else "starts next")
        if jobs.runner_pid() is None:
            st.warning("No job runner is running.")
            st.button("Start the job runner", key=f"{key}_runner", on_click=jobs.ensure_runner)


@st.fragment(run_every=POLL_S)
def _pending(stage: str, hint: str | None, recheck: Callable[[], bool] | None) -> None:
    job = stage_job(stage)
    key = f"_pending_{stage}"
    stamp = names.store_stamp()
    if stamp != st.session_state.get(f"{key}_stamp"):  # something was written since the page ran
        st.session_state[f"{key}_stamp"] = stamp
        if recheck is None or recheck():  # ... and it is what this page waits for
            st.rerun(scope="app")
    with st.container(border=True):
        st.markdown(f"##### Not built yet: {jobs.STAGE_TITLES.get(stage, stage)}")
        st.caption(f"{PENDING_MARK} · the figures appear here when the build finishes")
        if job is not None and job.active:
            job_box(job, key)
            c1, c2 = st.columns([1, 4])
            if job.state == "queued" and job.priority < 10:
                c1.button("Build this first", key=f"{key}_first", on_click=start, args=(stage,))
            c2.button("Cancel", key=f"{key}_cancel", on_click=jobs.cancel, args=(job.id,))
        elif job is not None and job.state == "done":
            seen = st.session_state.setdefault("_jobs_filled", set())
            if job.id not in seen:  # finished since this page last looked: reload the data listings
                seen.add(job.id)
                st.cache_data.clear()
                st.rerun(scope="app")
            st.warning(f"Job {job.id} finished, but this page finds no data: `geolens jobs logs {job.id}`.")
            st.button("Build again", key=f"{key}_again", on_click=start, args=(stage,))
        else:
            if job is not None and job.state == "failed":
                st.error(f"The last build {job.status_text()}")
                with st.expander("Its log"):
                    st.code(jobs.log_tail(job.id, 25) or "(empty)", language=None)
            elif job is not None and job.state == "cancelled":
                st.info(f"The last build (job {job.id}) was cancelled.")
            label = "Retry the build" if job is not None and job.state == "failed" else "Build the defaults"
            st.button(label, key=f"{key}_start", type="primary", on_click=start, args=(stage,),
                      help=f"queues `{stage}` as a background job; same as `geolens jobs submit {stage}`")
        if hint:
            st.caption(hint)


def pending_or_ready(stage: str, ready: bool, hint: str | None = None,
                     recheck: Callable[[], bool] | None = None) -> bool:
    """``ready``; if False, draws the stage's job progress (or a build button), refreshed every ``POLL_S``.

    ``recheck()`` says whether what the page waits for exists now (read only): called when the cache
    folder changes, it reruns the page when True (without it, any change reruns the page). A page
    rerun costs far more than a poll, and a stage writes many files before the one a page needs.
    """
    if ready:
        return True
    st.session_state[f"_pending_{stage}_stamp"] = names.store_stamp()
    _pending(stage, hint, recheck)
    return False


def building(stage: str) -> bool:
    """Is the default ``stage`` queued or being built now?"""
    job = stage_job(stage)
    return job is not None and job.active


def jobs_panel(limit: int = 8) -> None:
    """Every active job and the last finished ones, with cancel and logs.

Buttons act in ``on_click`` callbacks, so the rerun their click starts already shows the new state."""
    rows = jobs.list_jobs(limit=50)
    active = [j for j in rows if j.active]
    shown = active + [j for j in rows if not j.active][: max(0, limit - len(active))]
    pid = jobs.runner_pid()
    st.caption(f"Job runner: {'running (pid ' + str(pid) + ')' if pid else 'not running'} · "
               f"{len(active)} active job(s) · CLI: `geolens jobs list`")
    if not shown:
        st.caption("No jobs yet.")
    for j in shown:
        with st.container(border=True):
            job_box(j, f"_panel_{j.id}")
            took = (j.finished - j.started) if j.finished and j.started else None
            meta = f"job {j.id} · {j.name}" + (f" · took {format_seconds(took)}" if took else "") + \
                   (f" · attempt {j.attempts}" if j.attempts > 1 else "")
            c1, c2 = st.columns([4, 1])
            c1.caption(meta)
            if j.active:
                c2.button("Cancel", key=f"_panel_cancel_{j.id}", on_click=jobs.cancel, args=(j.id,))
            if j.state == "failed":
                with st.expander("Log"):
                    st.code(jobs.log_tail(j.id, 25) or "(empty)", language=None)
