"""The build-defaults stages (``engine.commands.DEFAULT_STAGES``) as job builders, one per stage."""
from __future__ import annotations

from engine.core.jobs.builders import BUILDERS, Builder
from engine.core.jobs.child import JobContext
from engine.core.jobs.job import Job
from engine.core.jobs.queue import submit

STAGE_TITLES = {"shapes": "Default Shapes cache (geolens-tiny, 4,000 pairs)", "saes": "Plain and aligned SAEs",
                "concepts": "CRAFT concepts of Sneaker and Bag (fmnist-cnn)",
                "geodesics": "EBM geodesics on UCG and URC", "dvr": "Diversity vs. recognizability models"}


def run_stage(config: dict, ctx: JobContext) -> dict:
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


def register_stages() -> None:
    """Add a builder for each default stage not registered yet (its artifact: ``defaults:<stage>``)."""
    from engine.commands import DEFAULT_STAGES

    for stage in DEFAULT_STAGES:
        if stage in BUILDERS:
            continue
        BUILDERS.add(stage, Builder(
            run=run_stage,
            title=lambda c, s=stage: STAGE_TITLES.get(s, f"build-defaults {s}"),
            artifact=lambda c, s=stage: f"defaults:{s}",
            built=lambda c, s=stage: stage_built(s),
            after=lambda c, s=stage: [f"defaults:{n}" for n in DEFAULT_STAGES[s].needs]))


def default_stages() -> list[str]:
    """The build-defaults stages in the order ``make app`` queues them (quickest pages first)."""
    from engine.commands import DEFAULT_STAGES

    order = ["shapes", "saes", "concepts", "dvr", "geodesics"]  # measured first run: 3, 1.5, 11, … min
    return [s for s in order if s in DEFAULT_STAGES] + [s for s in DEFAULT_STAGES if s not in order]


def submit_defaults(stages: list[str] | None = None, only_missing: bool = True) -> list[Job]:
    """Queue the default stages (those not built yet, unless ``only_missing`` is False)."""
    out = []
    for s in stages or default_stages():
        if only_missing and stage_built(s):
            continue
        out.append(submit(s, {"stage": s}))
    return out
