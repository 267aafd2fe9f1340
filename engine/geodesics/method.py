"""Geodesics as a geolens method (``engine.core.method``): build = precompute a run, report = its scores."""
from __future__ import annotations

from engine.core.method import Method
from engine.core.progress import ProgressFn, staged
from engine.geodesics import cli
from engine.geodesics.runconfig import RunConfig


def _build(cfg: RunConfig, progress: ProgressFn | None = None, force: bool = False):
    from engine.geodesics import pipeline

    return pipeline.build(cfg, staged(progress), force=force)


def _find(cfg: RunConfig):
    from engine.geodesics import pipeline

    return pipeline.find(cfg)


def _report(art) -> dict:
    from engine.geodesics import pipeline

    return pipeline.report_from_cache(art.file(pipeline.RUN_FILE))


def _defaults() -> list[RunConfig]:
    """What the page opens on: UCG and URC from the straight line, URC from the graph start too."""
    return [RunConfig.preset("ucg"), RunConfig.preset("urc"), RunConfig.preset("urc", solver_init="graph")]


def _extra(sub) -> None:
    cli.add_points_parser(sub)


METHOD = Method(name="geodesics", title="Geodesics (EBM metrics)", page="pages/geodesics.py", kind="geodesics",
                config=RunConfig, add_arguments=cli.add_run_args, config_from_args=cli.config_from_args,
                build=_build, find=_find, report=_report, defaults=_defaults, extra_cli=_extra)
