"""Reading concept runs (artifacts of kind ``concepts``): listing them, loading their tables, and the report the page shows."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from engine import store
from engine.concepts.precompute import KIND, METHODS, RUN_FILE
from engine.core import artifacts

ROUND = 4  # decimals of every number in the report (the page shows the same rounded values)


def important(concepts_df: pd.DataFrame, method: str, min_images: int) -> np.ndarray:
    """bool (k,): which concepts of a cache's ``concepts`` table are important for ``method``."""
    from engine.concepts.importance import is_important

    if method not in METHODS:
        raise ValueError(f"importance={method!r}; choose one of {METHODS}")
    return is_important(concepts_df[f"size_{method}"].to_numpy(), min_images)


def global_importance(concepts_df: pd.DataFrame, method: str) -> np.ndarray:
    """(k,) global importance: % of logit for gradient × input, mean Sobol total index for Sobol."""
    if method not in METHODS:
        raise ValueError(f"importance={method!r}; choose one of {METHODS}")
    return np.asarray(concepts_df["pct_logit" if method == "gradient_input" else "sobol"], dtype=float)


def lasso_summary(top: np.ndarray, rows: list[int], k: int) -> dict:
    """Selected image rows (valid, sorted) and the concept most of them share as their top concept."""
    rows = sorted({int(r) for r in rows if 0 <= int(r) < len(top)})
    shared = np.bincount(top[rows], minlength=k) if rows else np.zeros(k, int)
    c = int(shared.argmax())
    return {"rows": rows, "concept": c, "count": int(shared[c])}


def list_caches() -> list[dict]:
    """Every finished concept run with its model, class and settings (newest first). Never writes."""
    out = []
    for a in reversed(artifacts.list(KIND)):
        path = a.path / RUN_FILE
        if path.exists():
            out.append({"path": path, "model": a.config["model"], "class_name": a.config["class_name"],
                        "config": a.config, "mtime": path.stat().st_mtime})
    return out


def meta(path: str | Path) -> dict:
    """The run's meta (config, classifier, stats, grid, MACO), from its artifact's manifest."""
    return json.loads((Path(path).parent / artifacts.MANIFEST).read_text())["meta"]


def concepts(path: str | Path) -> pd.DataFrame:
    return store.query_df(path, "SELECT * EXCLUDE (vector) FROM concepts ORDER BY concept")


def concept_vectors(path: str | Path) -> np.ndarray:
    import contextlib

    with contextlib.closing(store.connect_ro(path)) as con:
        return store.fetch_array(con, "SELECT vector FROM concepts ORDER BY concept")


def images(path: str | Path) -> pd.DataFrame:
    """Per-image rows without the heavy columns (thumbnails, heatmaps)."""
    return store.query_df(path, "SELECT * EXCLUDE (thumb, heat) FROM images ORDER BY row")


def importance_matrix(path: str | Path, method: str) -> np.ndarray:
    """(n_images, k) local importances of ``method`` ('gradient_input' or 'sobol')."""
    import contextlib

    if method not in METHODS:
        raise ValueError(f"importance={method!r}; choose one of {METHODS}")
    with contextlib.closing(store.connect_ro(path)) as con:
        return store.fetch_array(con, f"SELECT {store.ident(method)} FROM images ORDER BY row")


def image_detail(path: str | Path, row: int) -> dict:
    """Thumbnail PNG and heatmap (gh, gw, k) of one image."""
    m = meta(path)
    df = store.query_df(path, "SELECT thumb, heat FROM images WHERE row = ?", [int(row)])
    if df.empty:
        raise ValueError(f"no image row {row} in {Path(path).name}")
    heat = np.asarray(df["heat"][0], dtype=np.float32).reshape(m["heat_shape"])
    return {"thumb": bytes(df["thumb"][0]), "heat": heat, "grid": m["grid"]}


def thumbs(path: str | Path, rows: list[int]) -> list[bytes]:
    df = store.query_df(path, "SELECT row, thumb FROM images WHERE list_contains(?, row) ORDER BY row",
                        [[int(r) for r in rows]])
    return [bytes(b) for b in df["thumb"]]


def layout(path: str | Path, method: str, algo: str) -> pd.DataFrame:
    return store.query_df(path, "SELECT row, x, y FROM layouts WHERE importance = ? AND algo = ? ORDER BY row",
                          [method, algo])


def layouts_available(path: str | Path) -> list[str]:
    return list(store.query_df(path, "SELECT DISTINCT algo FROM layouts ORDER BY algo")["algo"])


def crops(path: str | Path) -> pd.DataFrame:
    return store.query_df(path, "SELECT concept, rank, row, score, png FROM crops ORDER BY concept, rank")


def maco_images(path: str | Path) -> pd.DataFrame:
    """One row per concept: image and alpha (PNG bytes), objective (per step); empty for a cache
    built without MACO images (``maco_steps=0`` or before they existed)."""
    import contextlib

    with contextlib.closing(store.connect_ro(path)) as con:
        if not store.has_table(con, "maco"):
            return pd.DataFrame({"concept": [], "image": [], "alpha": [], "objective": []})
        return con.execute("SELECT concept, image, alpha, objective FROM maco ORDER BY concept").df()


def fidelity_curves(path: str | Path) -> pd.DataFrame:
    return store.query_df(path, "SELECT ordering, kind, step, value FROM fidelity ORDER BY ordering, kind, step")


def _auc(values: np.ndarray) -> float:
    from engine.concepts.fidelity import auc

    return auc(values)


def report(path: str | Path, min_images: int | None = None) -> dict:
    """Importances, cluster sizes and fidelity scores of one cache, rounded as the page shows them."""
    m = meta(path)
    cfg = m["config"]
    c = concepts(path)
    mi = cfg["min_images"] if min_images is None else min_images
    fid = fidelity_curves(path)
    scores: dict[str, dict[str, float]] = {}
    for (kind, ordering), g in fid.groupby(["kind", "ordering"]):
        scores.setdefault(kind, {})[ordering] = round(_auc(g["value"].to_numpy()), ROUND)
    r = lambda v: [round(float(x), ROUND) for x in v]  # noqa: E731
    mc = maco_images(path)
    images = None
    if len(mc):
        obj = [np.asarray(o, dtype=float) for o in mc["objective"]]
        tenth = max(1, len(obj[0]) // 10)
        images = {"spectrum": m["maco"]["spectrum"], "size": m["maco"]["size"], "steps": len(obj[0]),
                  "seconds_per_concept": round(m["maco"]["seconds_per_concept"], 2),
                  "objective_first": r([o[:tenth].mean() for o in obj]),
                  "objective_last": r([o[-tenth:].mean() for o in obj])}
    return {
        "model": cfg["model"], "class": cfg["class_name"], "cache": Path(path).parent.name,
        "n_images": m["stats"]["n_images"], "n_concepts": cfg["n_concepts"], "patch": m["stats"]["patch"],
        "reconstruction_error": {"crops": round(m["stats"]["recon_error_crops"], ROUND),
                                 "images": round(m["stats"]["recon_error_images"], ROUND)},
        "importance": {"gradient_input_pct_logit": r(c["pct_logit"]), "sobol_total": r(c["sobol"])},
        "cluster_sizes": {mth: [int(v) for v in c[f"size_{mth}"]] for mth in METHODS},
        "important_concepts": {mth: [int(i) for i in np.flatnonzero(important(c, mth, mi))] for mth in METHODS},
        "fidelity_auc": scores,
        "maco": images,
        "seconds": round(m["stats"]["seconds"], 1),
    }
