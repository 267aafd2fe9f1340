"""The modality gap as a geolens method (``engine.core.method``): build = the stored report and the
joint map's layout of one cache; report = the report's JSON, exactly what the page shows."""
from __future__ import annotations

import dataclasses
import json

from engine.core.method import Method
from engine.gap.layout import LayoutConfig
from engine.gap.report import GapConfig


@dataclasses.dataclass
class GapBuild(GapConfig):
    cache: str = ""
    """cache name or unique prefix (see `geolens caches`)"""
    umap_sample: int = LayoutConfig.umap_sample
    """points the joint map's UMAP is fitted on (the others are interpolated)"""

    def gap_config(self) -> GapConfig:
        return GapConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(GapConfig)})

    def layout_config(self) -> LayoutConfig:
        return LayoutConfig(seed=self.seed, umap_sample=self.umap_sample)


def _add(p) -> None:
    from engine.gap import cli

    cli.config_args(p)
    p.add_argument("--umap-sample", type=int, default=LayoutConfig.umap_sample,
                   help="points UMAP is fitted on (others are interpolated)")


def _from_args(args) -> GapBuild:
    return GapBuild(cache=args.cache, w_max=args.w_max, probe_max=args.probe_max, batch=args.batch, seed=args.seed,
                    full_exact_max=args.full_exact_max, umap_sample=args.umap_sample)


def _cache(cfg: GapBuild):
    from engine.embcache import open_cache

    if not cfg.cache:
        raise ValueError("gap: give --cache NAME (see `geolens caches`)")
    return open_cache(cfg.cache)


def _build(cfg: GapBuild, progress=None, force: bool = False):
    from engine.gap.layout import build_layout, find_layout
    from engine.gap.report import build_report, find, load_points

    cache = _cache(cfg)
    need = force or find(cache, cfg.gap_config()) is None or find_layout(cache, cfg.layout_config()) is None
    points = load_points(cache) if need else None
    art = build_report(cache, cfg.gap_config(), points, force, None, progress)
    build_layout(cache, cfg.layout_config(), points, force, None, progress)
    return art


def _find(cfg: GapBuild):
    from engine.gap.report import find

    return find(_cache(cfg), cfg.gap_config()) if cfg.cache else None


def _report(art) -> dict:
    return json.loads(art.file("report.json").read_text())


def _defaults() -> list[GapBuild]:
    """The default Shapes cache's report and map, once that cache is precomputed."""
    from engine.core.names import default_shapes_cache

    cache = default_shapes_cache()
    return [GapBuild(cache=cache.name)] if cache else []


METHOD = Method(name="gap", title="Modality gap", page="pages/gap.py", kind="gap-report", config=GapBuild,
                add_arguments=_add, config_from_args=_from_args, build=_build, find=_find, report=_report,
                defaults=_defaults)
