"""Precompute geodesics for every metric into a run artifact, and read the score summary back.

A run is the artifact ``geodesics/<key>`` (``engine.core.artifacts``; key = hash of the run config,
the drawn characters' pixels and the engine and metrics versions). Its manifest holds the run config
and, in ``meta``, the models' keys and p_max; its ``run.duckdb`` the tables:
- ``pairs(pair_id, x0, x1, label, a0, a1)``: endpoints (FLOAT[d]), character and angles;
- ``paths(metric, pair_id, path, energy, iters, converged)``: path as FLOAT[T·d];
- ``scores(metric, pair_id, score, value)``; ``timing(metric, seconds, geodesics)``;
- ``summary(metric, score, mean, std, reference)`` with the paper's reference values.
A run interrupted between metrics resumes from its partial folder (the metrics already solved are kept).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from engine import ENGINE_VERSION, store
from engine.core import artifacts
from engine.geodesics.metrics import GridMetric, build_metric
from engine.geodesics.runconfig import RunConfig
from engine.geodesics.scores import (DEFAULT_RMSE_REFERENCE, RMSE_REFERENCE, SCORES, data_rmse, mean_density, path_rmse,
                                     reference_value)
from engine.geodesics.solver import solve
from engine.geodesics.spaces import Pairs, Space, build_space, make_pairs
from engine.geodesics.threads import cpu_threads

Progress = Callable[[str, int, int], None]
TOY_SOLVE_BOUNDS = (-12.0, 12.0, -4.0, 12.0)  # the toy window widened: mixture samples lie inside it
METRICS_VERSION = "metrics-2"  # bumped when a metric's definition changes (2: RBF bandwidth of Arvanitidis et al.)


KIND = "geodesics"
RUN_FILE = "run.duckdb"


def version() -> str:
    return f"{ENGINE_VERSION}+{METRICS_VERSION}"


def data_inputs(cfg: RunConfig) -> list[str]:
    """Content keys of the run's generated data: the characters' pixels, so Pillow's font is an input."""
    if cfg.is_toy:
        return []
    from engine.config import array_hash
    from engine.geodesics.data import rotated_characters

    return ["pixels:" + array_hash(rotated_characters("urc", 14, seed=0)[0])]


def find(cfg: RunConfig) -> artifacts.Artifact | None:
    """The finished run for ``cfg``, or None (never builds)."""
    return artifacts.find(KIND, artifacts.artifact_key(KIND, cfg.to_dict(), data_inputs(cfg), version()))


def solve_order(cfg: RunConfig) -> list[str]:
    """True-density metrics first: the others' RMSE is measured against their geodesics."""
    return sorted(cfg.metrics, key=lambda m: (0 if m.endswith("true") else 1, cfg.metrics.index(m)))


def score_paths(space: Space, metric: str, paths: torch.Tensor, pairs: Pairs, solved: dict) -> dict[str, np.ndarray]:
    if space.kind == "toy":
        out = {"p_M": mean_density(paths, space.mixture.prob, space.p_max).numpy()}
        ref = RMSE_REFERENCE.get(metric, DEFAULT_RMSE_REFERENCE)
        if ref in solved and ref != metric:  # a reference geodesic is not scored against itself
            out["RMSE"] = path_rmse(paths, solved[ref]).numpy()
        return out
    return {"D-RMSE": data_rmse(paths, space.data).numpy(), "γ*-RMSE": path_rmse(paths, pairs.truth).numpy()}


def _has(con, table: str) -> bool:
    """store.has_table on its own cursor (it leaves a pending result on the connection it is given)."""
    return store.has_table(con.cursor(), table)


def _write_pairs(con, pairs: Pairs) -> None:
    store.insert_rows(con, "pairs", {"pair_id": np.arange(len(pairs.x0)), "x0": pairs.x0.numpy(),
                                     "x1": pairs.x1.numpy(), "label": pairs.label.astype(np.int64),
                                     "a0": pairs.a0.astype(np.float64), "a1": pairs.a1.astype(np.float64)})
    if pairs.truth is not None:
        store.insert_rows(con, "truth", {"pair_id": np.arange(len(pairs.x0)),
                                         "path": pairs.truth.reshape(len(pairs.x0), -1).numpy()})


def _done_metrics(con) -> dict[str, torch.Tensor]:
    if not _has(con, "paths"):
        return {}
    names = [r[0] for r in con.execute("SELECT DISTINCT metric FROM paths").fetchall()]
    return {m: torch.from_numpy(np.array(store.fetch_array(con, "SELECT path FROM paths WHERE metric = ? ORDER BY pair_id", [m])))
            for m in names}  # (n, T·d): the caller reshapes


def _summary(con, dataset: str) -> None:
    df = con.execute("SELECT metric, score, avg(value) AS mean, stddev_samp(value) AS std FROM scores "
                     "GROUP BY metric, score").df()
    df["reference"] = [reference_value(dataset, m, s) for m, s in zip(df.metric, df.score)]
    con.execute("DROP TABLE IF EXISTS summary")
    store.insert_rows(con, "summary", {c: df[c].to_numpy() for c in ("metric", "score", "mean", "std")} |
                      {"reference": pd.array(df["reference"], dtype="Float64").to_numpy(dtype=float, na_value=np.nan)})


def precompute(cfg: RunConfig, progress: Progress | None = None, force: bool = False) -> Path:
    """The run's ``run.duckdb``, built first when missing (``build``)."""
    return build(cfg, progress, force).file(RUN_FILE)


def build(cfg: RunConfig, progress: Progress | None = None, force: bool = False) -> artifacts.Artifact:
    """Train/load the models, solve every metric's geodesics for the run's pairs, write the run."""
    found = find(cfg)
    if found is not None and not force:
        return found
    label = f"{cfg.dataset} · {cfg.n_pairs} pairs · {cfg.solver_init} start"
    with cpu_threads(), artifacts.writing(KIND, cfg.to_dict(), data_inputs(cfg), version(), name=label,
                                          resume=not force) as w:
        space = build_space(cfg, progress)
        ctx = space.context(cfg)
        pairs = make_pairs(space, cfg.n_pairs, cfg.steps, cfg.seed)
        scfg = cfg.solver_config()
        w.meta.update(models=space.keys, p_max=float(space.p_max))
        with store.writing(w.file(RUN_FILE)) as con:
            if not (_has(con, "pairs") and (pairs.truth is None or _has(con, "truth"))):
                con.execute("DROP TABLE IF EXISTS pairs")   # a run killed between the two tables
                con.execute("DROP TABLE IF EXISTS truth")
                _write_pairs(con, pairs)
            solved = {m: p.reshape(len(p), cfg.steps, -1) for m, p in _done_metrics(con).items()}  # (n, T, d)
            if solved:  # a killed run's finished metrics are kept; say where this run picks up
                import sys

                done = [m for m in solve_order(cfg) if m in solved]
                print(f"geodesics: resuming at metric {len(done) + 1} of {len(cfg.metrics)} ({', '.join(done)} already solved)",
                      file=sys.stderr, flush=True)
            for name in solve_order(cfg):
                if name in solved:
                    continue
                metric = build_metric(name, ctx)
                if space.kind == "toy" and cfg.grid_res > 0:
                    metric = GridMetric(metric, TOY_SOLVE_BOUNDS, cfg.grid_res)
                total = [0]

                def tick(n: int, name=name) -> None:
                    total[0] += n
                    if progress is not None:
                        progress(f"geodesics {name}", total[0], scfg.max_iters * -(-cfg.n_pairs // scfg.batch_size))

                t0 = time.perf_counter()
                res = solve(metric, pairs.x0, pairs.x1, scfg, nodes=space.data, progress=tick)
                seconds = time.perf_counter() - t0
                solved[name] = res.paths
                n = len(res.paths)
                store.insert_rows(con, "paths", {"metric": [name] * n, "pair_id": np.arange(n),
                                                 "path": res.paths.reshape(n, -1).numpy(), "energy": res.energy.numpy(),
                                                 "iters": res.iters.numpy(), "converged": res.converged.numpy()})
                for score, vals in score_paths(space, name, res.paths, pairs, solved).items():
                    store.insert_rows(con, "scores", {"metric": [name] * n, "pair_id": np.arange(n),
                                                      "score": [score] * n, "value": vals.astype(np.float64)})
                store.insert_rows(con, "timing", {"metric": [name], "seconds": [seconds], "geodesics": [n]})
            _summary(con, cfg.dataset)
        w.file(RUN_FILE + ".lock").unlink(missing_ok=True)
    return find(cfg)


def summary(path: Path) -> pd.DataFrame:
    """The summary table of a finished cache: metric, score, mean, std, reference."""
    return store.query_df(path, "SELECT metric, score, mean, std, reference FROM summary ORDER BY metric, score")


def run_config(path: Path) -> RunConfig:
    """The run config a cache was built with."""
    return RunConfig.from_dict(json.loads((Path(path).parent / artifacts.MANIFEST).read_text())["config"])


def list_runs(dataset: str) -> list[Path]:
    """The ``run.duckdb`` of every finished run of a dataset, newest first."""
    runs = [a for a in artifacts.list(KIND) if a.config.get("dataset") == dataset]
    return [a.file(RUN_FILE) for a in reversed(runs)]


def ebm_summary(cfg: RunConfig) -> dict:
    """How the run's EBM was trained, for the report and the page."""
    out = {"objective": cfg.ebm_objective, "iterations": cfg.ebm_iters, "batch": cfg.ebm_batch, "lr": cfg.ebm_lr}
    if cfg.ebm_objective == "dsm":
        return out | {"sigma": [cfg.ebm_sigma_min, cfg.ebm_sigma_max]}
    return out | {"langevin_steps": cfg.ebm_langevin, "langevin_step": cfg.ebm_step, "reg": cfg.ebm_reg}


def report_from_cache(path: Path) -> dict:
    """JSON-able scores per metric beside the paper's: exactly what the page's score table shows."""
    cfg = run_config(path)
    space_kind = "toy" if cfg.is_toy else "chars"
    df = summary(path)
    timing = store.query_df(path, "SELECT metric, seconds FROM timing")
    out: dict = {"dataset": cfg.dataset, "n_pairs": cfg.n_pairs, "run": path.parent.name, "ebm": ebm_summary(cfg),
                 "solver_init": cfg.solver_init, "metrics": {}}
    for metric in cfg.metrics:
        entry: dict = {}
        rows = df[df.metric == metric].set_index("score")
        for score in SCORES[space_kind]:  # None where a score is not measured (a reference against itself)
            entry[score] = round(float(rows.loc[score, "mean"]), 4) if score in rows.index else None
            ref = reference_value(cfg.dataset, metric, score)
            entry[f"{score} (paper)"] = None if ref is None else float(ref)
        sec = timing[timing.metric == metric].seconds
        entry["seconds"] = round(float(sec.iloc[0]), 2) if len(sec) else None
        out["metrics"][metric] = entry
    return out


def report(cfg: RunConfig, progress: Progress | None = None) -> dict:
    """The report of a run (computes its cache first if missing)."""
    return report_from_cache(precompute(cfg, progress))


def load_paths(path: Path, metric: str, pair_ids: list[int]) -> np.ndarray:
    """Cached paths (len(pair_ids), T, d) of one metric, in the order asked."""
    cfg = run_config(path)
    if not pair_ids:
        return np.zeros((0, cfg.steps, 0), np.float32)
    with store.connect_ro(path) as con:
        flat = store.fetch_array(con, "SELECT path FROM paths WHERE metric = ? AND list_contains(?, pair_id) "
                                      "ORDER BY pair_id", [metric, list(map(int, pair_ids))])
    order = np.argsort(np.argsort(pair_ids))
    return flat.reshape(len(pair_ids), cfg.steps, -1)[order]


def load_pairs(path: Path) -> pd.DataFrame:
    return store.query_df(path, "SELECT pair_id, label, a0, a1 FROM pairs ORDER BY pair_id")


def load_truth(path: Path, pair_ids: list[int]) -> np.ndarray:
    """Encoded true rotation paths (len(pair_ids), T, d) of a character run."""
    cfg = run_config(path)
    with store.connect_ro(path) as con:
        flat = store.fetch_array(con, "SELECT path FROM truth WHERE list_contains(?, pair_id) ORDER BY pair_id",
                                 [list(map(int, pair_ids))])
    order = np.argsort(np.argsort(pair_ids))
    return flat.reshape(len(pair_ids), cfg.steps, -1)[order]
