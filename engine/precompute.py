"""Dataset + model -> embedding cache, batched, resumable, atomic.

Batch b covers pairs [b*B, (b+1)*B). Each finished batch is committed together with its row
in ``done_batches``; an interrupted run leaves ``<cache>.partial`` and the next run with the
same key skips the finished batches. The cache appears under its final name only when complete.
"""
from __future__ import annotations

import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from engine import ENGINE_VERSION, store
from engine.config import stable_hash
from engine.datasets.sources import PairSource
from engine.device import loader_kwargs
from engine.embcache import EmbCache, image_id, text_id
from engine.encoders import Encoder
from engine.paths import disk_full, is_disk_full

THUMB = 96


def thumbnail_png(im) -> bytes:
    """At most THUMB px on a side, PNG with fast compression."""
    if max(im.size) > THUMB:
        im = im.copy()
        im.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class _Prepared(Dataset):
    """Loads, preprocesses and thumbnails one pair; failures pass through as errors."""

    def __init__(self, source: PairSource, preprocess):
        self.source, self.preprocess = source, preprocess

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict:
        p = self.source[i]
        if p.image is None:
            return {"i": i, "pixels": None, "caption": p.caption, "factors": p.factors, "path": p.path, "error": p.error}
        return {"i": i, "pixels": self.preprocess(p.image), "thumb": thumbnail_png(p.image), "caption": p.caption,
                "factors": p.factors, "path": p.path, "error": None}


def _collate(rows: list[dict]) -> list[dict]:
    return rows


def cache_key(source: PairSource, encoder: Encoder) -> str:
    return stable_hash({"dataset": source.identity(), "model": encoder.identity(), "engine": ENGINE_VERSION})


def cache_path(source: PairSource, encoder: Encoder) -> Path:
    model = store.safe_name(encoder.spec.arch + ("-" + Path(encoder.spec.pretrained).stem if encoder.spec.pretrained else ""))
    return store.cache_root() / f"{source.slug()}__{model}-{cache_key(source, encoder)}{store.SUFFIX}"


def _init_schema(con, d: int) -> None:
    con.execute("CREATE TABLE IF NOT EXISTS items(id INTEGER, modality VARCHAR, pair_id INTEGER, path VARCHAR, text VARCHAR)")
    con.execute(f"CREATE TABLE IF NOT EXISTS embeddings(id INTEGER, emb FLOAT[{int(d)}])")
    con.execute("CREATE TABLE IF NOT EXISTS factors(pair_id INTEGER, name VARCHAR, value VARCHAR)")
    con.execute("CREATE TABLE IF NOT EXISTS factor_kinds(name VARCHAR, kind VARCHAR)")
    con.execute("CREATE TABLE IF NOT EXISTS thumbs(id INTEGER, png BLOB)")
    con.execute("CREATE TABLE IF NOT EXISTS skipped(path VARCHAR, reason VARCHAR)")
    con.execute("CREATE TABLE IF NOT EXISTS done_batches(batch INTEGER)")
    con.execute("CREATE TABLE IF NOT EXISTS manifest(key VARCHAR, value VARCHAR)")


def _write_batch(con, b: int, rows: list[dict], img: np.ndarray, txt: np.ndarray) -> None:
    ok = [r for r in rows if r["error"] is None]
    bad = [r for r in rows if r["error"] is not None]
    pid = np.array([r["i"] for r in ok], dtype=np.int64)
    con.begin()
    if len(ok):
        store.insert_rows(con, "items", {
            "id": np.concatenate([image_id(pid), text_id(pid)]).astype(np.int32),
            "modality": ["image"] * len(ok) + ["text"] * len(ok),
            "pair_id": np.concatenate([pid, pid]).astype(np.int32),
            "path": [r["path"] for r in ok] + [None] * len(ok),
            "text": [None] * len(ok) + [r["caption"] for r in ok]})
        store.insert_rows(con, "embeddings", {"id": np.concatenate([image_id(pid), text_id(pid)]).astype(np.int32),
                                              "emb": np.concatenate([img, txt])})
        store.insert_rows(con, "thumbs", {"id": image_id(pid).astype(np.int32), "png": [r["thumb"] for r in ok]})
        fac = [(int(r["i"]), k, v) for r in ok for k, v in r["factors"].items()]
        if fac:
            store.insert_rows(con, "factors", {"pair_id": np.array([f[0] for f in fac], dtype=np.int32),
                                               "name": [f[1] for f in fac], "value": [f[2] for f in fac]})
    for r in bad:
        con.execute("INSERT INTO skipped VALUES (?, ?)", [r["path"], r["error"]])
    con.execute("INSERT INTO done_batches VALUES (?)", [b])
    con.commit()


@dataclass
class PrecomputeResult:
    cache: EmbCache
    seconds: float
    n_pairs: int
    n_skipped: int
    resumed_batches: int


def precompute(source: PairSource, encoder: Encoder, batch_size: int = 256, num_workers: int | None = None,
               progress: Callable[[int, int, float], None] | None = None, stop_after: int | None = None,
               force: bool = False) -> PrecomputeResult:
    """Encode every pair of ``source`` into the cache for (source, encoder).

    ``progress(done_items, total_items, items_per_s)`` is called after each batch.
    ``stop_after`` stops after that many new batches (used to test resumption).
    """
    if int(batch_size) < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if num_workers is not None and int(num_workers) < 0:
        raise ValueError(f"--workers must be 0 or more, got {num_workers}")
    path = cache_path(source, encoder)
    if path.exists() and not force:
        c = EmbCache(path)
        return PrecomputeResult(c, 0.0, int(c.manifest["n_pairs"]), int(c.manifest["n_skipped"]), 0)
    n = len(source)
    if n == 0:
        raise ValueError("the dataset has no pairs: add rows to the captions file")
    try:
        return _precompute(source, encoder, path, n, batch_size, num_workers, progress, stop_after)
    except Exception as exc:
        if is_disk_full(exc):  # the finished cache (if any) is untouched; the partial file resumes
            raise disk_full(path, exc) from exc
        raise


def _precompute(source, encoder, path: Path, n: int, batch_size: int, num_workers, progress, stop_after) -> PrecomputeResult:
    t0 = time.time()
    with store.writing(path) as con:
        _init_schema(con, encoder.dim)
        # batch b covers pairs [b*B, (b+1)*B): a resumed run keeps the B its partial file was started with
        row = con.execute("SELECT value FROM manifest WHERE key = '_batch_size'").fetchall()
        if row and int(json.loads(row[0][0])) != batch_size:
            tqdm.write(f"precompute: keeping batch size {json.loads(row[0][0])} of the interrupted run "
                       f"(asked {batch_size})", file=sys.stderr)
            batch_size = int(json.loads(row[0][0]))
        elif not row:
            con.execute("INSERT INTO manifest VALUES ('_batch_size', ?)", [json.dumps(batch_size)])
        n_batches = (n + batch_size - 1) // batch_size
        if not con.execute("SELECT count(*) FROM factor_kinds").fetchone()[0]:
            for k, v in source.factor_kinds.items():
                con.execute("INSERT INTO factor_kinds VALUES (?, ?)", [k, v])
        done = {int(r[0]) for r in con.execute("SELECT batch FROM done_batches").fetchall()}
        todo = [b for b in range(n_batches) if b not in done]
        if done:
            first = todo[0] if todo else n_batches
            tqdm.write(f"precompute: resuming at batch {first} of {n_batches} ({len(done)} batches, "
                       f"{min(n, len(done) * batch_size)} of {n} pairs already encoded in {path.name}{store.PARTIAL})",
                       file=sys.stderr)
        sampler = [list(range(b * batch_size, min(n, (b + 1) * batch_size))) for b in todo]
        loader = DataLoader(_Prepared(source, encoder.preprocess), batch_sampler=sampler, collate_fn=_collate,
                            **loader_kwargs(encoder.device, num_workers))
        bar = tqdm(total=n, initial=min(n, len(done) * batch_size), desc="precompute", unit="pair")
        n_new = 0
        for rows in loader:
            b = rows[0]["i"] // batch_size
            ok = [r for r in rows if r["error"] is None]
            if ok:
                pix = torch.stack([r["pixels"] for r in ok])
                img, txt = encoder.encode_images(pix), encoder.encode_texts([r["caption"] for r in ok])
            else:
                img = txt = np.zeros((0, encoder.dim), dtype=np.float32)
            _write_batch(con, b, rows, img, txt)
            bar.update(len(rows))
            n_new += len(rows)
            rate = n_new / max(time.time() - t0, 1e-9)
            if progress:
                progress(bar.n, n, rate)
            if stop_after is not None and n_new >= stop_after * batch_size:
                bar.close()
                raise KeyboardInterrupt(f"stopped after {stop_after} batches (resume by running again)")
        bar.close()
        n_ok = con.execute("SELECT count(*) FROM items WHERE modality = 'image'").fetchone()[0]
        n_skip = con.execute("SELECT count(*) FROM skipped").fetchone()[0]
        seconds = time.time() - t0
        manifest = {"key": path.stem.rsplit("-", 1)[-1], "dataset": source.identity(), "model": encoder.provenance(),
                    "n_pairs": int(n_ok), "n_skipped": int(n_skip), "dim": int(encoder.dim),
                    "engine_version": ENGINE_VERSION, "device": str(encoder.device),
                    "created": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds_last_run": round(seconds, 2),
                    "resumed_batches": len(done)}
        con.execute("DELETE FROM manifest")
        for k, v in manifest.items():
            con.execute("INSERT INTO manifest VALUES (?, ?)", [k, json.dumps(v)])
    return PrecomputeResult(EmbCache(path), seconds, int(n_ok), int(n_skip), len(done))
