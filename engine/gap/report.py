"""Every number the modality-gap page shows for one cache, computed once and kept on disk.

``gap_numbers(img, txt, cfg)`` is the pure computation on arrays; ``gap_report(cache)`` adds the
cache's identity and stores the result in ``<artifact_dir>/gap-report-<key>.duckdb``, keyed by
the cache key, the config and the engine version (W on 10k points takes minutes).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from engine import ENGINE_VERSION, store
from engine.config import Config, check_positive, stable_hash
from engine.embcache import image_id, text_id
from engine.gap import metrics


@dataclasses.dataclass
class GapConfig(Config):
    w_max: int = metrics.MAX_W
    """largest sample per modality for the exact OT cost W"""
    probe_max: int = metrics.MAX_W
    """largest number of pairs used by the linear probe"""
    probe_test_fraction: float = 0.3
    """share of pairs held out to score the probe"""
    batch: int = metrics.BATCH
    """pairs per random batch for the authors' batched recall"""
    ks: tuple = metrics.KS
    """recall@k cut-offs"""
    seed: int = 0
    """seed of every subsample, split and shuffle"""

    def validate(self) -> None:
        for name in ("w_max", "probe_max", "batch"):
            check_positive(name, getattr(self, name))
        if not 0 < self.probe_test_fraction < 1:
            raise ValueError(f"probe_test_fraction must be in (0, 1), got {self.probe_test_fraction}")
        if not self.ks or any(int(k) != k or k < 1 for k in self.ks):
            raise ValueError(f"ks must be positive integers, got {self.ks}")
        self.ks = tuple(int(k) for k in self.ks)


@dataclasses.dataclass(frozen=True)
class Points:
    """The page's data: aligned pairs and the per-point table of the joint map."""
    img: np.ndarray
    """(n, d) image embeddings"""
    txt: np.ndarray
    """(n, d) caption embeddings, row i the caption of image i"""
    pair_ids: np.ndarray
    """(n,) pair id of row i"""
    table: pd.DataFrame
    """2n rows, images then captions: id, modality, pair_id, text, and one column per factor"""


def load_points(cache) -> Points:
    """Aligned pairs of an ``EmbCache`` and the per-point table (ids, captions, factors)."""
    img, txt, pair_ids = cache.pairs()
    if len(pair_ids) == 0:
        raise ValueError(f"cache {cache.name!r} holds no complete image-caption pair; rebuild it with `geolens precompute`")
    items = cache.items().set_index("id")
    ids = np.concatenate([image_id(pair_ids), text_id(pair_ids)])
    table = pd.DataFrame({"id": ids, "modality": ["image"] * len(pair_ids) + ["text"] * len(pair_ids),
                          "pair_id": np.concatenate([pair_ids, pair_ids])})
    table["text"] = items["text"].reindex(ids).to_numpy()
    fac = cache.factors()
    if len(fac.columns) > 1:
        table = table.merge(fac, on="pair_id", how="left")
    return Points(img, txt, pair_ids, table)


def factor_columns(points: Points) -> list[str]:
    return [c for c in points.table.columns if c not in ("id", "modality", "pair_id", "text")]


def gap_numbers(img: np.ndarray, txt: np.ndarray, cfg: GapConfig | None = None) -> dict:
    """Gap measures, cosines, probe, retrieval and gap-direction summary of aligned pairs."""
    cfg = cfg or GapConfig()
    w = metrics.wasserstein(img, txt, cfg.w_max, cfg.seed)
    probe = metrics.probe_accuracy(img, txt, cfg.probe_test_fraction, cfg.probe_max, cfg.seed)
    u = metrics.gap_direction(img, txt)
    pi, pt = metrics.gap_projection(img, u), metrics.gap_projection(txt, u)
    return {
        "gap": {"DiM": metrics.centroid_distance(img, txt), "W": w.value,
                "W_points": [w.n_img, w.n_txt], "W_subsampled": w.subsampled},
        "cosine": {"true_pairs": metrics.mean_pair_cosine(img, txt),
                   "intra_image": metrics.mean_intra_cosine(img), "intra_text": metrics.mean_intra_cosine(txt)},
        "probe": {"accuracy": probe.accuracy, "n_train": probe.n_train, "n_test": probe.n_test,
                  "subsampled": probe.subsampled},
        "retrieval": {"batch_size": cfg.batch,
                      "batched": metrics.recall_batched(img, txt, cfg.ks, cfg.batch, cfg.seed),
                      "full_gallery": metrics.recall_full(img, txt, cfg.ks)},
        "gap_projection": {"image_mean": float(pi.mean()), "image_std": float(pi.std()),
                           "text_mean": float(pt.mean()), "text_std": float(pt.std())},
    }


def report_path(cache, cfg: GapConfig) -> Path:
    key = stable_hash({"cache": cache.manifest["key"], "gap": cfg.to_dict(), "engine": ENGINE_VERSION})
    return cache.artifact_dir / f"gap-report-{key}{store.SUFFIX}"


def _read(path: Path) -> dict | None:
    if not path.exists():
        return None
    df = store.query_df(path, "SELECT value FROM report")
    return json.loads(df["value"].iloc[0]) if len(df) else None


def gap_report(cache, cfg: GapConfig | None = None, fresh: bool = False, points: Points | None = None) -> dict:
    """Every number the page shows for an ``EmbCache``: read back if stored, else computed and stored.

    ``fresh`` recomputes (and overwrites). ``points`` skips reloading when the caller has them.
    """
    cfg = cfg or GapConfig()
    path = report_path(cache, cfg)
    if not fresh and (stored := _read(path)) is not None:
        return stored
    t0 = time.perf_counter()
    points = points or load_points(cache)
    rep = {"cache": cache.name, "n_pairs": int(len(points.pair_ids)), "dim": int(points.img.shape[1]),
           **gap_numbers(points.img, points.txt, cfg), "config": cfg.to_dict()}
    rep["config"]["ks"] = list(cfg.ks)
    seconds = time.perf_counter() - t0
    with contextlib.suppress(OSError):  # read-only cache folder: still return the numbers
        with store.writing(path) as con:
            con.execute("CREATE OR REPLACE TABLE report(value VARCHAR, seconds DOUBLE, engine_version VARCHAR)")
            con.execute("INSERT INTO report VALUES (?, ?, ?)", [json.dumps(rep), seconds, ENGINE_VERSION])
    return json.loads(json.dumps(rep))
