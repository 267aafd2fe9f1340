"""Read the dvr caches: summary per model, per-class points, distance to humans, originality curve.

Everything the page shows and `geolens dvr report` prints comes from here, so both agree.
Diversity and recognizability are means over classes with their std over classes (ddof=1);
recognizability is a fraction in [0, 1].
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from engine import store
from engine.dvr import metrics
from engine.dvr.evaluate import read_meta

HUMAN = "human"
BUILT_IN = "built-in"
"""Run name of the built-in generators' samples folder (``build.build``)."""


def list_refs() -> list[Path]:
    """Reference caches, newest first."""
    return sorted(store.list_files("dvr-ref-*.duckdb"), key=lambda p: p.stat().st_mtime, reverse=True)


def runs_for(ref: Path) -> list[Path]:
    key = read_meta(ref)["ref_key"]
    return store.list_files(f"dvr-run-{key}-*.duckdb")


def _files(ref: Path) -> list[tuple[str, Path]]:
    out = [("reference", Path(ref))]
    seen: set[str] = {"reference"}
    for p in runs_for(ref):
        run = read_meta(p).get("run", p.stem)
        if run in seen:  # two folders with one name: tell them apart by their cache key
            run = f"{run}#{p.stem[-6:]}"
        seen.add(run)
        out.append((run, p))
    return out


def _union(ref: Path, sql: str) -> pd.DataFrame:
    frames = []
    for run, path in _files(ref):
        df = store.query_df(path, sql)
        df.insert(0, "run", run)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df.insert(0, "id", np.where(df["run"] == "reference", df["model"], df["run"] + "/" + df["model"]))
    return df


def models(ref: Path) -> pd.DataFrame:
    """One row per model configuration (human first): id, run, model, generator, family, sweep, ..."""
    return _union(ref, "SELECT * FROM models")


def per_class(ref: Path) -> pd.DataFrame:
    """(id, run, model, class, diversity, recognizability) for every model and class."""
    return _union(ref, "SELECT model, class, diversity, recognizability FROM per_class ORDER BY model, class")


def human_point(ref: Path) -> dict:
    pc = per_class(ref)
    h = pc[pc["id"] == HUMAN]
    return {"diversity": float(h["diversity"].mean()), "diversity_std": float(h["diversity"].std(ddof=1)),
            "recognizability": float(h["recognizability"].mean()),
            "recognizability_std": float(h["recognizability"].std(ddof=1)), "n_classes": int(len(h))}


def class_distances(ref: Path) -> pd.DataFrame:
    """Per model and class: distance to the human point of that class, diversity relative to the human mean.

    d = hypot((div_c − div_human_c) / mean_c div_human, rec_c − rec_human_c)
    """
    pc = per_class(ref)
    h = pc[pc["id"] == HUMAN].set_index("class")
    hd = float(h["diversity"].mean()) or 1.0
    m = pc[pc["id"] != HUMAN].merge(h[["diversity", "recognizability"]].add_suffix("_human"), left_on="class",
                                     right_index=True).dropna()
    m["distance"] = metrics.distance_to_human(m["diversity"].to_numpy() - m["diversity_human"].to_numpy(),
                                              m["recognizability"].to_numpy() - m["recognizability_human"].to_numpy(),
                                              (0.0, 0.0), (hd, 1.0))
    fam = models(ref).set_index("id")["family"]
    m["family"] = m["id"].map(fam)
    return m[["id", "family", "class", "distance"]].reset_index(drop=True)


def summary(ref: Path) -> pd.DataFrame:
    """Per model: diversity and recognizability mean and std over classes, distance to humans."""
    pc = per_class(ref)
    g = pc.groupby("id", sort=False)
    s = pd.DataFrame({"diversity": g["diversity"].mean(), "diversity_std": g["diversity"].std(ddof=1),
                      "recognizability": g["recognizability"].mean(),
                      "recognizability_std": g["recognizability"].std(ddof=1), "n_classes": g.size()})
    meta = models(ref).set_index("id")[["run", "model", "generator", "family", "sweep", "sweep_value", "params", "folder", "n_samples"]]
    s = meta.join(s).reset_index()
    hp = s[s["id"] == HUMAN].iloc[0]
    s["distance_to_human"] = metrics.distance_to_human(
        s["diversity"].to_numpy(), s["recognizability"].to_numpy(),
        (float(hp["diversity"]), float(hp["recognizability"])), (float(hp["diversity"]) or 1.0, 1.0))
    return s


def originality_curve(ref: Path, n_bins: int = 8) -> pd.DataFrame:
    """Recognizability of episodes binned by their query's originality, one shared axis for all models."""
    ep = _union(ref, "SELECT e.model, o.originality, e.correct FROM episodes e JOIN sample_orig o "
                     "ON e.model = o.model AND e.class = o.class AND e.sample = o.sample")
    edges = metrics.bin_edges(ep["originality"].to_numpy(), n_bins)
    rows = []
    for mid, grp in ep.groupby("id", sort=False):
        acc, cnt = metrics.recognizability_by_originality(grp["originality"].to_numpy(), grp["correct"].to_numpy(), edges)
        for b in range(n_bins):
            rows.append({"id": mid, "bin": b, "lo": float(edges[b]), "hi": float(edges[b + 1]),
                         "mid": float((edges[b] + edges[b + 1]) / 2), "recognizability": float(acc[b]), "count": int(cnt[b])})
    return pd.DataFrame(rows)


def drawings(ref: Path, cls: str) -> list[str]:
    """Paths of the real drawings of a test class (first = exemplar)."""
    df = store.query_df(ref, "SELECT path FROM drawings WHERE class = ? ORDER BY drawer", [cls])
    return [str(store.resolve_stored(p)) for p in df["path"]]


def _clean(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, (np.floating,)):
        return None if np.isnan(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


MAP_FAMILIES = ("vae", "gan", "diffusion")


def family_map(s: pd.DataFrame, human: dict) -> dict:
    """The paper's qualitative map, checked on a ``summary`` frame (built-in run only).

    Per family: mean diversity and recognizability over its configurations and its smallest
    distance to humans. Checks (Boutin et al. 2022/2024):
    ``gan_below_vae``: GAN-like at lower diversity and higher recognizability than VAE-like;
    ``vae_off_human``: VAE-like at higher diversity than humans or lower recognizability;
    ``diffusion_closest``: guided diffusion has the smallest distance to humans.
    A check is None when a family is missing.
    """
    fams = {}
    for fam in MAP_FAMILIES:
        g = s[(s["family"] == fam) & (s["run"] == BUILT_IN)]
        if len(g):
            fams[fam] = {"diversity": float(g["diversity"].mean()), "recognizability": float(g["recognizability"].mean()),
                         "min_distance_to_human": float(g["distance_to_human"].min()), "n_configs": int(len(g))}
    v, g, d = (fams.get(f) for f in MAP_FAMILIES)
    checks = {
        "gan_below_vae": None if not (v and g) else bool(g["diversity"] < v["diversity"]
                                                          and g["recognizability"] > v["recognizability"]),
        "vae_off_human": None if not v else bool(v["diversity"] > human["diversity"]
                                                 or v["recognizability"] < human["recognizability"]),
        "diffusion_closest": None if not (d and v and g) else bool(
            d["min_distance_to_human"] < min(v["min_distance_to_human"], g["min_distance_to_human"])),
    }
    return {"families": fams, "checks": checks}


def report(ref: Path | None = None) -> dict:
    """Every model's diversity and recognizability with spread over classes, plus the human point."""
    refs = [Path(ref)] if ref else list_refs()
    if not refs:
        raise FileNotFoundError("no dvr reference cache: run `geolens dvr build` (or `make app`) first")
    ref = refs[0]
    meta = read_meta(ref)
    s = summary(ref)
    cols = ["id", "family", "sweep", "sweep_value", "diversity", "diversity_std", "recognizability",
            "recognizability_std", "distance_to_human", "n_classes"]
    rows = [{k: _clean(r[k]) for k in cols} for r in s[cols].to_dict("records")]
    return {"reference": ref.name, "source": meta.get("source"), "data_root": str(store.resolve_stored(meta["data_root"])),
            "n_test_classes": meta.get("n_classes"), "train_seconds": meta.get("train_seconds"),
            "human": human_point(ref), "models": [r for r in rows if r["id"] != HUMAN],
            "family_map": family_map(s, human_point(ref))}

