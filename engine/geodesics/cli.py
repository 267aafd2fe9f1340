"""CLI options of the geodesics method (``engine/geodesics/method.py``): `geolens geodesics build|report|list|points`.

`geolens geodesics precompute` and `geolens report geodesics` stay as aliases for one release."""
from __future__ import annotations

from engine.geodesics.data import DATASETS
from engine.geodesics.ebm import OBJECTIVES
from engine.geodesics.solver import INITS, METHODS


def add_run_args(p) -> None:
    p.add_argument("--dataset", choices=DATASETS, default="ucg", help="toy (ucg, wcg) or characters (urc, brc)")
    p.add_argument("--n", type=int, default=None, help="geodesics scored (default 1000 toy, 140 characters)")
    p.add_argument("--small", action="store_true", help="reduced sizes (what the tests use)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", choices=METHODS, default="discrete", help="solver")
    p.add_argument("--ebm", choices=OBJECTIVES, default=None,
                   help="EBM objective (default: dsm for toy sets, cd for characters)")
    p.add_argument("--init", choices=INITS, default="line",
                   help="solver start: the straight line (paper) or the metric's shortest path through a k-NN graph of the data")


def register(commands, reports) -> None:
    """Legacy alias `geolens report geodesics` (the method CLI adds `geolens geodesics ...`)."""
    r = reports.add_parser("geodesics", help="each metric's scores over N geodesics beside the paper's")
    add_run_args(r)
    r.set_defaults(func=_report)


def add_points_parser(sub) -> None:
    """`geolens geodesics points` (user latents) and the old `geolens geodesics precompute` alias."""
    p = sub.add_parser("precompute", help="alias of `geolens geodesics build` (kept for one release)")
    add_run_args(p)
    p.add_argument("--force", action="store_true", help="recompute even if the run exists")
    p.set_defaults(func=_precompute)
    p = sub.add_parser("energy", help="where the run's EBM puts its energy on the characters: data, true rotation "
                       "loops, straight chords, off the data (quantiles and Mann-Whitney AUCs)")
    add_run_args(p)
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    p.set_defaults(func=_energy)
    p = sub.add_parser("points", help="geodesics between chosen rows of your own latent vectors (.npy/.parquet)")
    p.add_argument("file", help=".npy or .parquet of shape (n, d)")
    p.add_argument("--pairs", required=True, help="row pairs, e.g. 0:5,3:9")
    p.add_argument("--metric", default="G_E", help="metric name (see `--metric list`)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--out", default="geodesics.npy", help="where to write the paths (n_pairs, steps, d)")
    p.add_argument("--init", choices=INITS, default="line",
                   help="solver start: the straight line or the metric's shortest path through a k-NN graph of the points")
    p.set_defaults(func=_points)


def config_from_args(args):
    from engine.geodesics.runconfig import RunConfig

    over = {"seed": args.seed, "method": args.method, "solver_init": args.init}
    if args.n is not None:
        over["n_pairs"] = args.n
    if args.ebm is not None:
        over["ebm_objective"] = args.ebm
    return RunConfig.preset(args.dataset, small=args.small, **over)


def _tqdm_progress():
    from tqdm import tqdm

    bars: dict = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            for b in bars.values():
                b.close()
            bars.clear()
            bars[stage] = tqdm(total=total, desc=stage, unit="it", leave=False, mininterval=2.0)
        bar = bars[stage]
        bar.update(done - bar.n)

    return progress


def _precompute(args) -> int:
    from engine.geodesics.pipeline import precompute

    path = precompute(config_from_args(args), _tqdm_progress(), force=args.force)
    print(path)
    return 0


def _report(args) -> dict:
    from engine.geodesics.pipeline import report

    return report(config_from_args(args), _tqdm_progress())


def _energy(args) -> int:
    import json

    from engine.geodesics.energy_profile import for_run

    cfg = config_from_args(args)
    if cfg.is_toy:
        raise ValueError(f"--dataset {args.dataset}: the energy profile needs a character set (urc or brc)")
    out = for_run(cfg, _tqdm_progress())
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{out['dataset']}: energy of the run's EBM ({out['pairs']} pairs)")
    for name in ("data", "loops", "chords", "off_data"):
        r = out[name]
        print(f"  {name:>9}: median {r['median']:9.3f}   q10 {r['q10']:9.3f}   q90 {r['q90']:9.3f}   ({r['n']} points)")
    print(f"  P(E loop < E chord) = {out['auc_loop_below_chord']:.3f}   P(E data < E off-data) = {out['auc_data_below_off']:.3f}"
          "   (0.5: no preference)")
    return 0


def _points(args) -> int:
    import numpy as np

    from engine.geodesics.metrics import METRICS
    from engine.geodesics.points import points_config, solve_points

    if args.metric == "list" or args.metric not in METRICS:
        print("metrics:", ", ".join(m for m in METRICS if not m.endswith("true")))
        return 0 if args.metric == "list" else 2
    try:
        pairs = [tuple(int(v) for v in s.split(":")) for s in args.pairs.split(",")]
    except ValueError:
        raise ValueError(f"--pairs {args.pairs!r}: write row pairs as i:j separated by commas, e.g. 0:5,3:9")
    paths, energy = solve_points(args.file, pairs, args.metric, args.steps, points_config(solver_init=args.init),
                                 progress=_tqdm_progress())
    np.save(args.out, paths)
    for (i, j), e in zip(pairs, energy):
        print(f"{i} -> {j}: energy {e:.4f}")
    print(f"paths {paths.shape} written to {args.out}")
    return 0
