"""Lasso over every point of a large map: ``layout.select_lasso`` against testing every point.

The baseline, in the same process, is matplotlib's ``Path.contains_points`` on every point inside
the polygon's bounding box (what ``select_lasso`` did before its cell grid). Both must return the
same rows. Points: two Gaussian clouds (a modality gap's two cones in 2-D); lassos: stars of 40 and
400 vertices (a hand-drawn lasso sends a few hundred) covering most of the points::

    python bench/lasso.py [--n 2000000] [--repeat 3] [--json]

``OPENBLAS_CORETYPE`` is left as the machine sets it (it slows NumPy here).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.gap import layout  # noqa: E402


def baseline(xy: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    from matplotlib.path import Path as MplPath

    cand = layout.select_box(xy, (xs.min(), xs.max()), (ys.min(), ys.max()))
    return cand[MplPath(np.column_stack([xs, ys])).contains_points(np.asarray(xy[cand], dtype=np.float64))]


def star(vertices: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    r = np.where(np.arange(vertices) % 2 == 0, 6.0, 3.0) * rng.uniform(0.8, 1.2, vertices)
    return 1.0 + r * np.cos(a), r * np.sin(a)


def best_of(fn, repeat: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2_000_000, help="points on the map")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing (the best is kept)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    half = args.n // 2
    xy = np.vstack([rng.normal((-1.5, 0), 1.2, (half, 2)), rng.normal((2.5, 0), 1.2, (args.n - half, 2))]).astype(np.float32)
    rows = []
    for vertices in (40, 400):
        xs, ys = star(vertices, vertices)
        t_ours, ours = best_of(lambda: layout.select_lasso(xy, xs, ys), args.repeat)
        t_base, base = best_of(lambda: baseline(xy, xs, ys), args.repeat)
        if not np.array_equal(ours, base):
            raise SystemExit(f"select_lasso and the baseline disagree on {np.setxor1d(ours, base).size} rows")
        rows.append({"vertices": vertices, "selected": int(len(ours)), "points": int(len(xy)),
                     "seconds": round(t_ours, 4), "baseline_seconds": round(t_base, 4),
                     "speedup": round(t_base / t_ours, 2)})
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['vertices']:>4} vertices: {r['selected']:,} of {r['points']:,} points in {r['seconds']:.3f} s; "
                  f"testing every point {r['baseline_seconds']:.3f} s ({r['speedup']}× faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
