"""`geolens report gap` and `geolens gap-map`: the modality-gap page's numbers and its UMAP."""
from __future__ import annotations


def _config_args(p) -> None:
    from engine.gap import metrics

    p.add_argument("--cache", required=True, help="cache name or unique prefix (see `geolens caches`)")
    p.add_argument("--w-max", type=int, default=metrics.MAX_W, help="largest sample per modality for W")
    p.add_argument("--probe-max", type=int, default=metrics.MAX_W, help="largest number of pairs for the probe")
    p.add_argument("--batch", type=int, default=metrics.BATCH, help="pairs per batch for batched recall")
    p.add_argument("--seed", type=int, default=0)


def register(commands, reports) -> None:
    r = reports.add_parser("gap", help="modality gap: DiM, W, cosines, probe, recall@k batched and full")
    _config_args(r)
    r.add_argument("--fresh", action="store_true", help="recompute instead of reading the stored report")
    r.set_defaults(func=_report)

    p = commands.add_parser("gap-map", help="compute (or read back) the joint UMAP of a cache's pairs")
    _config_args(p)
    p.add_argument("--n-neighbors", type=int, default=15)
    p.add_argument("--min-dist", type=float, default=0.1)
    p.set_defaults(func=_map)


def _cfg(args):
    from engine.gap.report import GapConfig

    return GapConfig(w_max=args.w_max, probe_max=args.probe_max, batch=args.batch, seed=args.seed)


def _report(args) -> dict:
    import sys

    from engine.embcache import open_cache
    from engine.gap.report import gap_report

    cache = open_cache(args.cache)
    print(f"gap report of {cache.name} ({cache.manifest['n_pairs']} pairs)…", file=sys.stderr)
    return gap_report(cache, _cfg(args), fresh=args.fresh)


def _map(args) -> int:
    from tqdm import tqdm

    from engine.embcache import open_cache
    from engine.gap.projection import UMAPConfig, cached_umap, stack
    from engine.gap.report import load_points

    cache = open_cache(args.cache)
    pts = load_points(cache)
    cfg = UMAPConfig(n_neighbors=args.n_neighbors, min_dist=args.min_dist, seed=args.seed)
    with tqdm(total=len(pts.table), desc="umap", unit="point") as bar:
        m = cached_umap(cache, pts.table["id"].to_numpy(), stack(pts.img, pts.txt), cfg)
        bar.update(len(pts.table))
    how = "read back" if m.cached else "computed"
    print(f"{how} UMAP of {len(pts.table)} points in {m.seconds:.1f}s "
          f"({len(pts.table) / max(m.seconds, 1e-9):.0f} points/s): {m.path}")
    return 0
