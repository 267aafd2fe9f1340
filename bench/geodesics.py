"""Batched vs one-at-a-time geodesic solving on the UCG toy (same process, same metric, same settings).

    .venv/bin/python bench/geodesics.py [--n 1000] [--iters 500] [--metric "G_1/p true"]

Prints seconds for both ways and their ratio. The metric is the toy benchmark's: tabulated on a
grid (RunConfig.grid_res) and interpolated, so the solver's own overhead is what is compared.
"""
from __future__ import annotations

import argparse
import time

import torch

from engine.geodesics import data as D
from engine.geodesics.metrics import GridMetric, MetricContext, build_metric
from engine.geodesics.pipeline import TOY_SOLVE_BOUNDS
from engine.geodesics.runconfig import RunConfig
from engine.geodesics.solver import solve
from engine.geodesics.threads import cpu_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--iters", type=int, default=500, help="iteration cap per geodesic")
    ap.add_argument("--metric", default="G_1/p true", choices=["G_1/p true", "G_E true", "LAND", "RBF"])
    args = ap.parse_args()
    cfg = RunConfig.preset("ucg", solver_iters=args.iters, batch_size=args.n)
    mix = D.toy_mixture("ucg")
    gen = torch.Generator().manual_seed(0)
    data = mix.sample(1000, gen)
    _, _, grid = D.grid()
    metric = GridMetric(build_metric(args.metric, MetricContext(data, grid, true_energy=mix.energy)),
                        TOY_SOLVE_BOUNDS, cfg.grid_res)
    x0, x1 = mix.sample(args.n, gen), mix.sample(args.n, gen)
    scfg = cfg.solver_config()
    with cpu_threads():
        t0 = time.perf_counter()
        batched = solve(metric, x0, x1, scfg)
        t_batch = time.perf_counter() - t0
        t0 = time.perf_counter()
        single = [solve(metric, x0[i:i + 1], x1[i:i + 1], scfg) for i in range(args.n)]
        t_single = time.perf_counter() - t0
    e_single = torch.cat([s.energy for s in single])
    print(f"{args.n} geodesics, metric {args.metric}, T={scfg.steps}, cap {args.iters} iterations, "
          f"mean iterations {batched.iters.float().mean():.0f}")
    print(f"batched:        {t_batch:8.2f} s")
    print(f"one at a time:  {t_single:8.2f} s")
    print(f"speed-up (one at a time / batched): {t_single / t_batch:.1f}x")
    print(f"max |energy difference| between the two: {(batched.energy - e_single).abs().max():.2e}")


if __name__ == "__main__":
    main()
