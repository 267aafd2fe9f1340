"""Train an SAE on a cache and store everything a page needs as an ``engine.core.artifacts``
artifact of kind ``sae``: key = hash(SAEConfig, the cache's manifest key, ``SAE_VERSION``), written
atomically (a ``.partial`` folder renamed into place), with a human name in its manifest:

  config.json         the SAEConfig
  meta.json           provenance (cache, d, n_pairs, engine version), training summary, metrics
  weights.safetensors the learner's state dict
  checkpoint.pt       only while training, in the partial folder (resume point); removed when done
  stats.duckdb        atom statistics, top items, histograms, item codes (``engine.sae.stats``)
  *.npy               per-atom top items and codes by atom / by item (``engine.sae.tables``)

Training streams the cache block by block (``engine.sae.stream.CacheSource``) and the statistics
are one chunked pass of the encoder over every item, so memory stays O(block), not O(N).
"""
from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from engine import ENGINE_VERSION, store
from engine.config import atomic_write_text
from engine.core import artifacts
from engine.embcache import EmbCache, image_id, text_id
from engine.paths import disk_full, is_disk_full
from engine.sae.config import SAEConfig
from engine.sae.learners import DictionaryLearner
from engine.sae.registry import make_learner
from engine.sae.metrics import evaluate_source
from engine.sae.stats import DEFAULT_EPS, tables_from, write_stats

WEIGHTS, CONFIG, META, CHECKPOINT, STATS = "weights.safetensors", "config.json", "meta.json", "checkpoint.pt", "stats.duckdb"
KIND = "sae"
SAE_VERSION = "2"
"""Bumped when training or the stored tables change (part of every SAE's key)."""
ITEM_CHUNK = 8192


def default_config(cache: EmbCache, **overrides) -> SAEConfig:
    """Defaults sized to the cache: atoms = 8·d (the paper's ratio)."""
    d = int(cache.manifest["dim"])
    cfg = {"atoms": 8 * d, **{k: v for k, v in overrides.items() if v is not None}}
    return SAEConfig(**cfg)


def cache_key(cache: EmbCache) -> str:
    """The cache's identity as an artifact input: its manifest key (content, not path)."""
    return str(cache.manifest["key"])


def key_config(cfg: SAEConfig, name: str | None = None) -> dict:
    """What an SAE's key hashes besides the cache: the config, and a name given by hand (``--name``),
    so the same settings trained under two names are two SAEs."""
    return {**cfg.to_dict(), **({"name": name} if name else {})}


def sae_key(cache: EmbCache, cfg: SAEConfig, name: str | None = None) -> str:
    return artifacts.artifact_key(KIND, key_config(cfg, name), [cache_key(cache)], SAE_VERSION)


def sae_name(cache: EmbCache, cfg: SAEConfig) -> str:
    """Readable name plus the start of the artifact key (which hashes the cache, config and version)."""
    return f"{cfg.arch}-m{cfg.atoms}-k{cfg.k}-b{cfg.beta:g}-s{cfg.seed}-{sae_key(cache, cfg)[:8]}"


def list_artifacts(cache: EmbCache) -> list[artifacts.Artifact]:
    """The finished SAE artifacts trained on ``cache``, oldest first (reads manifests only)."""
    return artifacts.list(KIND, of=cache_key(cache))


def find_sae(cache: EmbCache, name: str) -> artifacts.Artifact | None:
    """The SAE artifact of ``cache`` with this name or key, or None. Never writes."""
    for art in reversed(list_artifacts(cache)):
        if name in (art.name, art.key):
            return art
    return None


def sae_dir(cache: EmbCache, name: str) -> Path:
    """The folder of a finished SAE; a clear error names the SAEs that exist."""
    art = find_sae(cache, name)
    if art is None:
        have = ", ".join(a.name for a in list_artifacts(cache)) or "none"
        raise FileNotFoundError(f"no SAE {name!r} on cache {cache.name} (SAEs: {have}); "
                                f"train one with `geolens train-sae --cache {cache.name}`")
    return art.path


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


def item_chunks(cache: EmbCache, chunk: int = ITEM_CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every item of the cache, ``chunk`` ids at a time, ascending: (ids, embeddings, is_image)."""
    with contextlib.closing(store.connect_ro(cache.path)) as con:
        lo, hi = con.execute("SELECT min(id), max(id) FROM embeddings").fetchone()
    if lo is None:
        return
    d = int(cache.manifest["dim"])
    for a in range(int(lo), int(hi) + 1, chunk):
        with contextlib.closing(store.connect_ro(cache.path)) as con:
            tbl = con.sql("SELECT e.id, i.modality = 'image' AS img, e.emb FROM embeddings e JOIN items i USING (id) "
                          "WHERE e.id BETWEEN ? AND ? ORDER BY e.id", params=[a, a + chunk - 1]).to_arrow_table()
        if tbl.num_rows == 0:
            continue
        col = tbl.column(2).combine_chunks()
        x = col.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(tbl.num_rows, d)
        yield tbl.column(0).to_numpy().astype(np.int64), x, tbl.column(1).to_numpy(zero_copy_only=False).astype(bool)


def write_artifact_stats(cache: EmbCache, model: DictionaryLearner, folder: Path, meta: dict,
                         pair_ids: np.ndarray, eps: float = DEFAULT_EPS, progress=None) -> dict:
    """Encode every item (chunked, on the model's device) and write stats.duckdb and the atom tables."""
    from engine.core.progress import Tracker
    from engine.sae.tables import encode_tables, write_tables

    with contextlib.closing(store.connect_ro(cache.path)) as con:
        n_items = int(con.execute("SELECT count(*) FROM embeddings").fetchone()[0])
    sink = progress if progress is not None else None
    with Tracker(total=n_items, unit="item", stage="sae stats", sink=sink) as track:
        t = encode_tables(model, item_chunks(cache), progress=track.update)
    tables = tables_from(model, t, eps)
    counts = tables["atoms"]["class"].value_counts().to_dict()
    meta = {**meta, "eps": eps, "class_counts": {c: int(counts.get(c, 0)) for c in ("bimodal", "image", "text", "dead")}}
    write_tables(folder, t)
    write_stats(folder / STATS, tables, meta, anchor_table(model, pair_ids))
    return meta


def train_on_cache(cache: EmbCache, cfg: SAEConfig, name: str | None = None, force: bool = False,
                   progress=None, device: str | None = None, show_bar: bool = True) -> tuple[str, dict]:
    """Train (or resume, or reuse) an SAE on ``cache``; returns (name, meta).

    The pairs are streamed from the cache (``cfg.stream_block`` pairs at a time); an interrupted
    run resumes from the checkpoint in the artifact's partial folder; ``force`` retrains.
    """
    from engine.sae.stream import CacheSource

    explicit = name if name and name != sae_name(cache, cfg) else None
    key = sae_key(cache, cfg, explicit)
    found = artifacts.find(KIND, key)
    if found is not None and not force:
        return found.name, json.loads(found.file(META).read_text())
    name = explicit or sae_name(cache, cfg)
    source = CacheSource(cache, cfg.stream_block, cfg.stream_window)
    if source.n < 2:
        raise ValueError(f"cache {cache.name} has {source.n} complete pairs; an SAE needs more")
    writer = artifacts.writing(KIND, key_config(cfg, explicit), [cache_key(cache)], SAE_VERSION, name=name, resume=not force)
    folder = artifacts.folder(KIND, key).with_name(key + artifacts.PARTIAL)
    try:
        with writer as w:
            folder = w.path
            cfg.save_json(folder / CONFIG)
            meta = None if force else _install_and_write(cache, cfg, name, w, source, progress)
            if meta is None:
                _resume_note(folder / CHECKPOINT, cfg, source.n)
                meta = _train_and_write(cache, cfg, name, w, source, progress, device, show_bar)
    except Exception as exc:
        if is_disk_full(exc):  # everything is written inside the partial folder: the finished SAE stays whole
            raise disk_full(f"{folder} (SAE {name})", exc) from exc
        raise
    return name, meta


def _install_and_write(cache, cfg: SAEConfig, name: str, w, source, progress) -> dict | None:
    """The shipped SAE whose asset key is this artifact's (``assets/manifest.json``), or None.

    Only the weights ship; the codes, statistics and metrics are computed here on this cache, as
    after a training (encoding only). Training time and history come from the asset's record.
    """
    from engine.core import assets
    from engine.shipped import shipped_weights

    if (found := shipped_weights(w.key)) is None:
        return None
    asset, fname = found
    tmp = w.file(WEIGHTS + ".asset")
    if not assets.install(asset, w.key, {fname: tmp}):
        return None
    model = make_learner(cfg.arch, source.d, cfg.atoms, cfg.k, **cfg.learner_kwargs())
    model.load_state_dict(load_file(str(tmp)))
    tmp.unlink()
    rec = assets.entry(asset).get("meta", {})
    return _write_sae(cache, cfg, name, w, source, model.eval(), time.perf_counter(), rec.get("train", {}),
                      rec.get("history", []), progress, from_asset=fname)


def _train_and_write(cache, cfg: SAEConfig, name: str, w, source, progress, device, show_bar) -> dict:
    from engine.sae.train import train_source

    model = make_learner(cfg.arch, source.d, cfg.atoms, cfg.k, **cfg.learner_kwargs())
    t0 = time.perf_counter()
    summary = train_source(model, source, cfg, w.file(CHECKPOINT), progress, device, show_bar)
    return _write_sae(cache, cfg, name, w, source, model, t0, {k: v for k, v in summary.items() if k != "history"},
                      summary["history"])


def _write_sae(cache, cfg: SAEConfig, name: str, w, source, model: DictionaryLearner, t0: float, train: dict,
               history: list, progress=None, **extra) -> dict:
    """Evaluate a trained (or shipped) SAE, encode every item into its statistics, and write the
    weights and meta.json into the artifact; an interrupted training's checkpoint goes last."""
    metrics = evaluate_source(model, source)
    meta = {"name": name, "key": w.key, "cache": cache.name, "cache_key": cache_key(cache), "d": int(source.d),
            "n_pairs": int(source.n), "engine_version": ENGINE_VERSION, "config": cfg.to_dict(), "metrics": metrics,
            "train": train, "history": history, **extra}
    meta = write_artifact_stats(cache, model, w.path, meta, source.pair_ids, progress=progress)
    save_weights(model, w.path)
    meta["seconds_total"] = round(time.perf_counter() - t0, 2)
    atomic_write_text(w.file(META), json.dumps(meta, indent=1, default=float))
    w.file(CHECKPOINT).unlink(missing_ok=True)
    w.meta.update({"cache": cache.name, "metrics": metrics, "class_counts": meta["class_counts"],
                   "seconds_total": meta["seconds_total"], "pairs_per_s": train.get("pairs_per_s"), **extra})
    return meta
