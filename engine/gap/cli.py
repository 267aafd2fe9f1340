"""CLI options of the modality-gap method (``engine/gap/method.py``: `geolens gap build|report|list`);
`geolens report gap` stays as an alias that computes a missing report."""
from __future__ import annotations

import sys

from engine.core.progress import print_progress


def config_args(p) -> None:
    from engine.gap import metrics

    p.add_argument("--cache", required=True, help="cache name or unique prefix (see `geolens caches`)")
    p.add_argument("--w-max", type=int, default=metrics.MAX_W, help="largest sample per modality for W")
    p.add_argument("--probe-max", type=int, default=metrics.MAX_W, help="largest number of pairs for the probe")
    p.add_argument("--batch", type=int, default=metrics.BATCH, help="pairs per batch for batched recall")
    p.add_argument("--full-exact-max", type=int, default=0,
                   help="largest gallery (pairs) ranked exactly; beyond, a seeded sample of queries (0: the device's limit)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="auto | cpu | cuda (default: CUDA when present)")


def register(commands, reports) -> None:
    r = reports.add_parser("gap", help="modality gap: DiM, W, cosines, probe, recall@k batched and full")
    config_args(r)
    r.add_argument("--fresh", action="store_true", help="recompute (and store) instead of reading the stored report")
    r.set_defaults(func=_report)


def _cfg(args):
    from engine.gap.report import GapConfig

    return GapConfig(w_max=args.w_max, probe_max=args.probe_max, batch=args.batch, seed=args.seed,
                     full_exact_max=args.full_exact_max)


def _report(args) -> dict:
    from engine.embcache import open_cache
    from engine.gap.report import find_report, gap_report

    cache = open_cache(args.cache)
    if not args.fresh and (rep := find_report(cache, _cfg(args))) is not None:
        return rep
    print(f"no stored gap report of {cache.name}: computing it ({cache.manifest['n_pairs']:,} pairs; "
          f"`geolens gap build --cache {cache.name}` also builds the map)…", file=sys.stderr)
    return gap_report(cache, _cfg(args), fresh=args.fresh, device=args.device, progress=print_progress)
