"""Every number the modality-gap page shows for one cache, computed once by a build and kept on disk.

``gap_numbers(img, txt, cfg)`` is the pure computation on arrays (each part timed);
``build_report(cache)`` (run by ``geolens gap build``) adds the cache's identity and stores it as
the artifact ``gap-report/<key>`` beside the cache (``engine.core.artifacts``): ``report.json``
and ``gap_projection.npy`` (every point's coordinate on the gap direction, images then captions,
float32, memory-mapped by the page). The key hashes the cache key, the config and the version.
``find_report`` only reads, so pages can call it; ``gap_report`` reads or builds (the CLI).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from engine import ENGINE_VERSION
from engine.config import Config, check_positive
from engine.core import artifacts
from engine.core.progress import ProgressFn
from engine.embcache import image_id, text_id
from engine.gap import metrics

KIND = "gap-report"
VERSION = f"{ENGINE_VERSION}/gap-report-2"
"""bump when the report's numbers or files change: older reports are then rebuilt"""


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
    full_exact_max: int = 0
    """largest number of pairs whose full-gallery recall is exact; beyond it a seeded sample of
    queries is ranked against the whole gallery. 0: the device's limit (``metrics.exact_limit``)"""

    def validate(self) -> None:
        for name in ("w_max", "probe_max", "batch"):
            check_positive(name, getattr(self, name))
        check_positive("full_exact_max", self.full_exact_max, allow_zero=True)
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


def gap_numbers(img: np.ndarray, txt: np.ndarray, cfg: GapConfig | None = None, device=None,
                progress: ProgressFn | None = None) -> dict:
    """Gap measures, cosines, probe, retrieval and gap-direction summary of aligned pairs.

    Each part is timed into ``seconds``; ``progress`` follows the full-gallery recall (the long part).
    """
    cfg = cfg or GapConfig()
    dev = metrics.device_of(device)
    seconds: dict[str, float] = {}

    def timed(name, fn, *a, **kw):
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        seconds[name] = round(time.perf_counter() - t0, 3)
        return out

    dim = timed("DiM", metrics.centroid_distance, img, txt, device=dev)
    w = timed("W", metrics.wasserstein, img, txt, cfg.w_max, cfg.seed, device=dev)
    probe = timed("probe", metrics.probe_accuracy, img, txt, cfg.probe_test_fraction, cfg.probe_max, cfg.seed)
    cos = timed("cosines", lambda: {"true_pairs": metrics.mean_pair_cosine(img, txt, device=dev),
                                    "intra_image": metrics.mean_intra_cosine(img, device=dev),
                                    "intra_text": metrics.mean_intra_cosine(txt, device=dev)})
    batched = timed("recall_batched", metrics.recall_batched, img, txt, cfg.ks, cfg.batch, cfg.seed, device=dev)
    limit = cfg.full_exact_max or metrics.exact_limit(img.shape[1], dev)
    full = timed("recall_full", metrics.recall_full, img, txt, cfg.ks, limit, cfg.seed, device=dev, progress=progress)
    full["exact_limit"] = int(limit)
    u = timed("gap_direction", metrics.gap_direction, img, txt, device=dev)
    pi, pt = timed("gap_projection", lambda: (metrics.gap_projection(img, u, device=dev),
                                              metrics.gap_projection(txt, u, device=dev)))
    return {
        "gap": {"DiM": dim, "W": w.value, "W_points": [w.n_img, w.n_txt], "W_subsampled": w.subsampled},
        "cosine": cos,
        "probe": {"accuracy": probe.accuracy, "n_train": probe.n_train, "n_test": probe.n_test,
                  "subsampled": probe.subsampled},
        "retrieval": {"batch_size": cfg.batch, "batched": batched, "full_gallery": full},
        "gap_projection": {"image_mean": float(pi.mean()), "image_std": float(pi.std()),
                           "text_mean": float(pt.mean()), "text_std": float(pt.std())},
        "device": str(dev), "seconds": seconds,
        "_projection": (pi, pt),
    }


def _key_parts(cache, cfg: GapConfig) -> tuple[dict, list[str]]:
    return cfg.to_dict(), [str(cache.manifest["key"])]


def find(cache, cfg: GapConfig | None = None) -> artifacts.Artifact | None:
    """The stored report artifact of ``cache`` for ``cfg``, or None. Never writes."""
    config, inputs = _key_parts(cache, cfg or GapConfig())
    return artifacts.find(KIND, artifacts.artifact_key(KIND, config, inputs, VERSION))


def find_report(cache, cfg: GapConfig | None = None) -> dict | None:
    """The stored report of ``cache`` (a dict), or None when it has not been built. Never writes."""
    art = find(cache, cfg)
    return None if art is None else json.loads(art.file("report.json").read_text())


def read_projection(art: artifacts.Artifact | str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(image (n,), caption (n,)) coordinates on the gap direction, memory-mapped float32.
    ``art``: the report artifact or its folder."""
    path = art.file("gap_projection.npy") if isinstance(art, artifacts.Artifact) else Path(art) / "gap_projection.npy"
    proj = np.load(path, mmap_mode="r")
    n = len(proj) // 2
    return proj[:n], proj[n:]


def build_report(cache, cfg: GapConfig | None = None, points: Points | None = None, fresh: bool = False,
                 device=None, progress: ProgressFn | None = None) -> artifacts.Artifact:
    """Compute the report of ``cache`` and store it as the artifact ``gap-report/<key>`` (or find it).

    ``fresh`` recomputes a stored report. ``points`` skips reloading when the caller has them.
    """
    cfg = cfg or GapConfig()
    if not fresh and (art := find(cache, cfg)) is not None:
        return art
    config, inputs = _key_parts(cache, cfg)
    t0 = time.perf_counter()
    points = points or load_points(cache)
    nums = gap_numbers(points.img, points.txt, cfg, device=device, progress=progress)
    pi, pt = nums.pop("_projection")
    rep = {"cache": cache.name, "n_pairs": int(len(points.pair_ids)), "dim": int(points.img.shape[1]),
           **nums, "config": {**cfg.to_dict(), "ks": list(cfg.ks)}}
    rep["seconds"]["total"] = round(time.perf_counter() - t0, 3)
    with artifacts.writing(KIND, config, inputs, VERSION, name=cache.name, resume=False) as w:
        np.save(w.file("gap_projection.npy"), np.concatenate([pi, pt]).astype(np.float32))
        tmp = w.file("report.json.tmp")
        tmp.write_text(json.dumps(rep, default=float))
        os.replace(tmp, w.file("report.json"))
        w.meta = {"n_pairs": rep["n_pairs"], "dim": rep["dim"], "seconds": rep["seconds"], "device": rep["device"]}
    return find(cache, cfg)


def gap_report(cache, cfg: GapConfig | None = None, fresh: bool = False, points: Points | None = None,
               device=None, progress: ProgressFn | None = None) -> dict:
    """Every number the page shows for an ``EmbCache``: read back if stored, else built and stored.

    For the CLI and builds; pages call ``find_report``, which never writes.
    """
    art = build_report(cache, cfg, points, fresh, device, progress)
    return json.loads(art.file("report.json").read_text())
