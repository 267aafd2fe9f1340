"""`geolens gap build` and `geolens report gap`: the modality-gap page's stored numbers and layouts."""
from __future__ import annotations

import sys


def _config_args(p) -> None:
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
    _config_args(r)
    r.add_argument("--fresh", action="store_true", help="recompute (and store) instead of reading the stored report")
    r.set_defaults(func=_report)

    g = commands.add_parser("gap", help="modality gap: build the page's report and joint-map layouts")
    sub = g.add_subparsers(dest="gap_command", required=True, metavar="ACTION")
    b = sub.add_parser("build", help="compute and store the gap report and the PCA/UMAP layout of every point")
    _config_args(b)
    b.add_argument("--umap-sample", type=int, default=None, help="points UMAP is fitted on (others are interpolated)")
    b.add_argument("--fresh", action="store_true", help="rebuild even if stored")
    b.set_defaults(func=_build)


def _cfg(args):
    from engine.gap.report import GapConfig

    return GapConfig(w_max=args.w_max, probe_max=args.probe_max, batch=args.batch, seed=args.seed,
                     full_exact_max=args.full_exact_max)


def show_progress(p) -> None:
    """Progress on stderr, one updating line (``engine.core.progress.Progress``)."""
    end = "\n" if p.total and p.done >= p.total else ""
    print(f"\r  {p.text()}\033[K", end=end, file=sys.stderr, flush=True)


def _report(args) -> dict:
    from engine.embcache import open_cache
    from engine.gap.report import find_report, gap_report

    cache = open_cache(args.cache)
    if not args.fresh and (rep := find_report(cache, _cfg(args))) is not None:
        return rep
    print(f"no stored gap report of {cache.name}: computing it ({cache.manifest['n_pairs']:,} pairs; "
          f"`geolens gap build --cache {cache.name}` also builds the map)…", file=sys.stderr)
    return gap_report(cache, _cfg(args), fresh=args.fresh, device=args.device, progress=show_progress)


def _build(args) -> int:
    import time

    from engine.embcache import open_cache
    from engine.gap.layout import LayoutConfig, build_layout, find_layout
    from engine.gap.report import build_report, find, load_points

    cache = open_cache(args.cache)
    cfg = _cfg(args)
    lcfg = LayoutConfig(seed=args.seed, **({"umap_sample": args.umap_sample} if args.umap_sample else {}))
    need_report = args.fresh or find(cache, cfg) is None
    need_layout = args.fresh or find_layout(cache, lcfg) is None
    points = None
    if need_report or need_layout:
        t0 = time.perf_counter()
        print(f"loading {cache.name} ({cache.manifest['n_pairs']:,} pairs)…", file=sys.stderr, flush=True)
        points = load_points(cache)
        print(f"  loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if need_report:
        print("gap report (W, probe, cosines, recall)…", file=sys.stderr, flush=True)
    art = build_report(cache, cfg, points, args.fresh, args.device, show_progress)
    print(f"report: {art.path} ({'built' if need_report else 'already stored'}; "
          f"parts in s: {art.meta.get('seconds')})")
    if need_layout:
        print("layout (PCA, UMAP fit, interpolation)…", file=sys.stderr, flush=True)
    lay = build_layout(cache, lcfg, points, args.fresh, args.device, show_progress)
    print(f"layout: {lay.path} ({'built' if need_layout else 'already stored'}; {lay.meta['n_points']:,} points, "
          f"UMAP fitted on {lay.meta['umap_fitted']:,}; stages in s: {lay.meta['seconds']})")
    return 0
