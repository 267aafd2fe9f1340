"""Train an SAE on a cache and store everything a page needs, under ``cache.artifact_dir/sae/<name>/``:

  config.json         the SAEConfig
  meta.json           provenance (cache, d, n_pairs, engine version), training summary, metrics
  weights.safetensors the learner's state dict
  checkpoint.pt       only while training (resume point); removed when done
  stats.duckdb        atom statistics, top items, histograms, item codes (``engine.sae.stats``)

and linked from the cache's ``artifacts`` table as kind ``sae``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from engine import ENGINE_VERSION
from engine.config import atomic_write_text, stable_hash
from engine.embcache import EmbCache, image_id, text_id
from engine.paths import disk_full, is_disk_full
from engine.sae.config import SAEConfig
from engine.sae.learners import DictionaryLearner, make_learner
from engine.sae.metrics import evaluate
from engine.sae.stats import DEFAULT_EPS, compute_stats, write_stats

WEIGHTS, CONFIG, META, CHECKPOINT, STATS = "weights.safetensors", "config.json", "meta.json", "checkpoint.pt", "stats.duckdb"


def default_config(cache: EmbCache, **overrides) -> SAEConfig:
    """Defaults sized to the cache: atoms = 8·d (the paper's ratio)."""
    d = int(cache.manifest["dim"])
    cfg = {"atoms": 8 * d, **{k: v for k, v in overrides.items() if v is not None}}
    return SAEConfig(**cfg)


def sae_name(cache: EmbCache, cfg: SAEConfig) -> str:
    """Readable name plus a hash of every input (cache identity, config, engine version)."""
    key = stable_hash({"cache": cache.name, "n_pairs": cache.manifest["n_pairs"], "config": cfg.to_dict(),
                       "engine": ENGINE_VERSION})
    return f"{cfg.arch}-m{cfg.atoms}-k{cfg.k}-b{cfg.beta:g}-s{cfg.seed}-{key[:8]}"


def sae_dir(cache: EmbCache, name: str) -> Path:
    return cache.artifact_dir / "sae" / name


def save_weights(model: DictionaryLearner, folder: Path, replace: bool = True) -> Path:
    """Write the weights to a temp file, then (unless ``replace`` is False) rename it into place.

    Returns the temp file when not replaced; a failed write removes it and leaves the old weights."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / (WEIGHTS + ".tmp")
    try:
        save_file(state, str(tmp))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if replace:
        tmp.replace(folder / WEIGHTS)
    return tmp


def _resume_note(checkpoint: Path, cfg: SAEConfig, n_pairs: int) -> None:
    """Say where an interrupted training resumes (the checkpoint's step of the schedule's total)."""
    if not checkpoint.exists():
        return
    try:
        step = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["step"])
    except Exception:  # checkpoints are written atomically, so this is damage from outside: start over
        checkpoint.unlink(missing_ok=True)
        tqdm.write(f"train-sae: unreadable checkpoint {checkpoint} removed; starting over", file=sys.stderr)
        return
    tqdm.write(f"train-sae: resuming at step {step} of {cfg.schedule(n_pairs)[1]} from {checkpoint}", file=sys.stderr)


def row_item_ids(pair_ids: np.ndarray) -> np.ndarray:
    """Item id of each training row of X = [X_img; X_txt] built from ``pair_ids``, (2n,)."""
    return np.concatenate([image_id(pair_ids), text_id(pair_ids)])


def anchor_table(model: DictionaryLearner, pair_ids: np.ndarray, top: int = 5) -> pd.DataFrame | None:
    """Archetypal SAEs: the data items behind each atom's heaviest centroids."""
    if not hasattr(model, "anchors"):
        return None
    rows, w = (t.cpu().numpy() for t in model.anchors(top))
    ids = row_item_ids(pair_ids)[rows]  # (m, top)
    m, t = ids.shape
    return pd.DataFrame({"atom": np.repeat(np.arange(m, dtype=np.int32), t), "rank": np.tile(np.arange(t, dtype=np.int32), m),
                         "id": ids.reshape(-1).astype(np.int64), "weight": w.reshape(-1).astype(np.float32)})


def write_artifact_stats(cache: EmbCache, model: DictionaryLearner, folder: Path, meta: dict,
                         pair_ids: np.ndarray, eps: float = DEFAULT_EPS) -> dict:
    ids, x = cache.embeddings()
    modality = cache.items().set_index("id")["modality"].reindex(ids).to_numpy()
    tables = compute_stats(model, ids, x, modality, eps=eps)
    counts = tables["atoms"]["class"].value_counts().to_dict()
    meta = {**meta, "eps": eps, "class_counts": {c: int(counts.get(c, 0)) for c in ("bimodal", "image", "text", "dead")}}
    write_stats(folder / STATS, tables, meta, anchor_table(model, pair_ids))
    return meta


def train_on_cache(cache: EmbCache, cfg: SAEConfig, name: str | None = None, force: bool = False,
                   progress=None, device: str | None = None, show_bar: bool = True) -> tuple[str, dict]:
    """Train (or resume, or reuse) an SAE on ``cache``; returns (name, meta)."""
    name = name or sae_name(cache, cfg)
    folder = sae_dir(cache, name)
    folder.mkdir(parents=True, exist_ok=True)
    if not force and (folder / STATS).exists() and (folder / META).exists():
        return name, json.loads((folder / META).read_text())
    old = folder / CONFIG
    if old.exists() and SAEConfig.load_json(old) != cfg:
        (folder / CHECKPOINT).unlink(missing_ok=True)  # a different config under this name: start over
    if force:
        (folder / CHECKPOINT).unlink(missing_ok=True)
    cfg.save_json(folder / CONFIG)
    img, txt, pair_ids = cache.pairs()
    if len(pair_ids) < 2:
        raise ValueError(f"cache {cache.name} has {len(pair_ids)} complete pairs; an SAE needs more")
    model = make_learner(cfg.arch, img.shape[1], cfg.atoms, cfg.k, **cfg.learner_kwargs())
    _resume_note(folder / CHECKPOINT, cfg, len(pair_ids))
    try:
        return _train_and_write(cache, cfg, name, folder, model, img, txt, pair_ids, progress, device, show_bar)
    except Exception as exc:
        if is_disk_full(exc):  # every file below is written to a temp name first: the old SAE stays whole
            raise disk_full(folder, exc) from exc
        raise


def _train_and_write(cache, cfg, name, folder, model, img, txt, pair_ids, progress, device, show_bar) -> tuple[str, dict]:
    t0 = time.perf_counter()
    summary = train_loop_on(model, img, txt, cfg, folder / CHECKPOINT, progress, device, show_bar)
    new_weights = save_weights(model, folder, replace=False)  # renamed into place once stats and meta are written
    try:
        return _write_artifact(cache, cfg, name, folder, model, img, txt, pair_ids, summary, new_weights, t0)
    finally:
        new_weights.unlink(missing_ok=True)  # renamed into place on success; a failed write leaves no stray file


def _write_artifact(cache, cfg, name, folder, model, img, txt, pair_ids, summary, new_weights, t0) -> tuple[str, dict]:
    metrics = evaluate(model, img, txt)
    meta = {"name": name, "cache": cache.name, "d": int(img.shape[1]), "n_pairs": int(len(pair_ids)),
            "engine_version": ENGINE_VERSION, "config": cfg.to_dict(), "metrics": metrics,
            "train": {k: v for k, v in summary.items() if k != "history"}, "history": summary["history"]}
    meta = write_artifact_stats(cache, model, folder, meta, pair_ids)
    meta["seconds_total"] = round(time.perf_counter() - t0, 2)
    atomic_write_text(folder / META, json.dumps(meta, indent=1, default=float))
    new_weights.replace(folder / WEIGHTS)
    cache.register_artifact("sae", name, folder, {"config": cfg.to_dict(), "metrics": metrics,
                                                  "class_counts": meta["class_counts"]})
    (folder / CHECKPOINT).unlink(missing_ok=True)
    return name, meta


def train_loop_on(model, img, txt, cfg, checkpoint, progress, device, show_bar) -> dict:
    from engine.sae.train import train_loop

    return train_loop(model, torch.tensor(img), torch.tensor(txt), cfg, checkpoint=checkpoint,
                      progress=progress, device=device, show_bar=show_bar)
