"""`geolens precompute --engine ray`: the dataset -> encoder -> cache pipeline as a Ray Data job.

The job, for the pairs not done yet:

  captions table (pair_id, image, caption, labels)          ray.data.from_pandas, one block per batch
    -> decode       (tasks)   load + preprocess + thumbnail each pair, exactly as the single
                              process does (``engine.precompute._Prepared``); unreadable files
                              come through with their reason
    -> encode+write (actors)  an actor pool of ``Encoder``s (one per GPU, or CPU actors) encodes
                              each batch and writes it as one Parquet shard, atomically
    -> driver                 counts the shards' pairs (progress), then imports every shard into
                              the ordinary DuckDB cache that every page reads.

Shards live in ``<cache root>/<cache name>/shards/``; a shard is named by the first and last pair
it holds (``pairs-<first>-<last>.parquet``) and has one row per item plus one per skipped pair:

  id INT32, modality ('image' | 'text' | 'skipped'), pair_id INT32, path, text, emb FLOAT[d],
  thumb BLOB, factors (JSON, image rows), error (reason, skipped rows)

Faults: Ray restarts a killed actor and retries its task (Ray Data's actor pools default to
``max_restarts=-1, max_task_retries=-1``); a retried batch rewrites its shard under the same name
(temp file + rename), and the import keeps the first copy of every pair, so a kill loses and
duplicates nothing. A rerun skips every pair already in a shard. The import itself rebuilds the
cache's tables from the shards, so an interrupted import is simply redone.
"""
from __future__ import annotations

import copy
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import ENGINE_VERSION, store
from engine.config import Config, check_positive
from engine.datasets.sources import PairSource
from engine.embcache import EmbCache, image_id, text_id
from engine.encoders import Encoder
from engine.paths import disk_full, is_disk_full
from engine.precompute import PrecomputeResult, _init_schema, _Prepared, cache_path

SHARD_GLOB = "pairs-*.parquet"
IMPORT_ROWS = 200_000
"""rows read from shards per DuckDB insert during the import"""


def require_ray():
    """The ``ray`` module, or an error that names the install command."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("--engine ray needs Ray: pip install -e '.[ray]' (the `ray[data]` package)") from exc
    return ray


@dataclass
class RayConfig(Config):
    address: str | None = None
    """Ray cluster address (``ray start --head`` prints it; 'auto' = the cluster on this node);
    None starts a local cluster, or reuses the one this process already joined"""
    workers: int = 1
    """encoder actors (one per GPU on a GPU cluster)"""
    gpus_per_worker: float = 0.0
    """GPUs each encoder actor holds; 0 = CPU actors"""
    cpus_per_worker: float = 1.0
    """CPUs each encoder actor holds (keep some free for the decode tasks)"""
    batch_size: int = 256
    """pairs per decode task, encoder call and shard"""
    keep_shards: bool = False
    """keep the Parquet shards after the import (they are removed by default)"""

    def validate(self) -> None:
        check_positive("workers", self.workers)
        check_positive("batch_size", self.batch_size)
        check_positive("gpus_per_worker", self.gpus_per_worker, allow_zero=True)
        check_positive("cpus_per_worker", self.cpus_per_worker, allow_zero=True)


def connect(address: str | None = None, num_cpus: int | None = None):
    """Join the Ray cluster at ``address``, or start a local one (reuses an existing connection)."""
    ray = require_ray()
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own tqdm bar counts pairs
    ctx.print_on_execution_start = False
    return ray


def shard_dir(path: Path) -> Path:
    """The shards of cache file ``path``: ``<root>/<cache name>/shards/``."""
    return path.with_name(path.name[: -len(store.SUFFIX)]) / "shards"


# ---- the job's stages (run on Ray workers) ----------------------------------------------------

PID = "__geolens_pair_id"


def _pair_table(source: PairSource) -> tuple[pd.DataFrame, object]:
    """(pair ids + what a worker needs to load each pair, the small object every decode task gets).

    A table source ships its rows through the dataset and an empty copy of itself to the tasks
    (same loader, same checks); any other source (the Shapes world: a config) ships whole.
    """
    rows = getattr(source, "rows", None)
    if isinstance(rows, pd.DataFrame):
        template = copy.copy(source)
        template.rows = rows.iloc[:0]
        return rows.assign(**{PID: np.arange(len(rows), dtype=np.int64)}), ("rows", template)
    return pd.DataFrame({PID: np.arange(len(source), dtype=np.int64)}), ("source", source)


def _decode(batch: pd.DataFrame, recipe, preprocess, pixel_shape) -> dict:
    """Decode one batch of pairs in a task: pixels (zeros for unreadable files), thumbnail, labels."""
    kind, src = recipe
    if kind == "rows":
        src = copy.copy(src)
        src.rows = batch.drop(columns=PID).reset_index(drop=True)
        local = range(len(batch))
    else:
        local = [int(i) for i in batch[PID]]
    prep = _Prepared(src, preprocess)
    rows = [prep[i] for i in local]
    pix = np.zeros((len(rows), *pixel_shape), dtype=np.float32)
    for j, r in enumerate(rows):
        if r["error"] is None:
            pix[j] = r["pixels"].numpy()
    ok = [r["error"] is None for r in rows]
    return {"pair_id": batch[PID].to_numpy(np.int64), "pixels": pix,
            "caption": np.array([r["caption"] for r in rows], dtype=object),
            "path": np.array([r["path"] for r in rows], dtype=object),
            "factors": np.array([json.dumps(r["factors"]) for r in rows], dtype=object),
            "thumb": np.array([r["thumb"] if o else b"" for r, o in zip(rows, ok)], dtype=object),
            "error": np.array(["" if o else r["error"] for r, o in zip(rows, ok)], dtype=object)}


def shard_table(pair_id, ok, paths, captions, factors, thumbs, errors, img: np.ndarray, txt: np.ndarray) -> pa.Table:
    """One shard: an image and a text row per readable pair, one 'skipped' row per unreadable one."""
    pair_id, ok = np.asarray(pair_id, dtype=np.int64), np.asarray(ok, dtype=bool)
    good, bad = pair_id[ok], pair_id[~ok]
    n, k = len(good), len(bad)
    d = img.shape[1]
    emb = np.concatenate([img, txt, np.zeros((k, d), np.float32)]).astype(np.float32)
    emb_arr = store.array_to_arrow(emb)
    valid = np.r_[np.ones(2 * n, bool), np.zeros(k, bool)]
    emb_arr = pa.FixedSizeListArray.from_arrays(emb_arr.values, d, mask=pa.array(~valid))
    sel = lambda a, m: [x for x, keep in zip(a, m) if keep]  # noqa: E731
    return pa.table({
        "id": pa.array(np.r_[image_id(good), text_id(good), np.zeros(k, np.int64)].astype(np.int32),
                       mask=np.r_[np.zeros(2 * n, bool), np.ones(k, bool)]),
        "modality": pa.array(["image"] * n + ["text"] * n + ["skipped"] * k),
        "pair_id": pa.array(np.r_[good, good, bad].astype(np.int32)),
        "path": pa.array(sel(paths, ok) + [None] * n + sel(paths, ~ok), pa.string()),
        "text": pa.array([None] * n + sel(captions, ok) + [None] * k, pa.string()),
        "emb": emb_arr,
        "thumb": pa.array(sel(thumbs, ok) + [None] * (n + k), pa.binary()),
        "factors": pa.array(sel(factors, ok) + [None] * (n + k), pa.string()),
        "error": pa.array([None] * (2 * n) + sel(errors, ~ok), pa.string()),
    })


def write_shard(folder: Path, table: pa.Table) -> Path:
    """Write a shard atomically under its content name; rewriting the same pairs replaces it."""
    pid = table.column("pair_id").to_numpy()
    path = Path(folder) / f"pairs-{int(pid.min()):010d}-{int(pid.max()):010d}.parquet"
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


class _EncodeAndWrite:
    """Actor: one Encoder, loaded once; encodes each batch and writes it as a shard."""

    def __init__(self, spec: dict, device: str, identity: dict, folder: str, threads: int,
                 fault: Callable[[np.ndarray, str], None] | None = None):
        import torch

        from engine.encoders import ModelSpec

        torch.set_num_threads(max(1, threads))
        self.enc = Encoder(ModelSpec(**spec), device=device)
        if self.enc.identity() != identity:
            raise RuntimeError(f"worker {os.uname().nodename} loaded a different model than the driver "
                               f"({self.enc.identity()} != {identity}): every worker needs the same weights file")
        self.folder, self.fault = Path(folder), fault

    def __call__(self, batch: dict) -> dict:
        import torch

        pid = np.asarray(batch["pair_id"], dtype=np.int64)
        ok = np.array([not e for e in batch["error"]], dtype=bool)
        caps = [str(c) for c in batch["caption"]]
        d = self.enc.dim
        if ok.any():
            img = self.enc.encode_images(torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok])))
            txt = self.enc.encode_texts([c for c, o in zip(caps, ok) if o])
        else:
            img = txt = np.zeros((0, d), np.float32)
        table = shard_table(pid, ok, [str(p) for p in batch["path"]], caps, [str(f) for f in batch["factors"]],
                            [bytes(t) for t in batch["thumb"]], [str(e) for e in batch["error"]], img, txt)
        if self.fault:
            self.fault(pid, "before_write")
        path = write_shard(self.folder, table)
        if self.fault:
            self.fault(pid, "after_write")
        return {"shard": np.array([path.name]), "n_pairs": np.array([int(ok.sum())]),
                "n_skipped": np.array([int((~ok).sum())])}


# ---- driver --------------------------------------------------------------------------------------

def done_pairs(folder: Path) -> np.ndarray:
    """Pair ids already in a shard (encoded or skipped), unique and sorted."""
    files = sorted(Path(folder).glob(SHARD_GLOB))
    if not files:
        return np.zeros(0, np.int64)
    parts = [pq.read_table(f, columns=["pair_id"]).column(0).to_numpy() for f in files]
    return np.unique(np.concatenate(parts).astype(np.int64))


def check_resources(have: dict, cfg: RayConfig) -> None:
    """Fail fast, naming the fix, when the actor pool would leave the decode tasks (or itself) no room."""
    cpus, gpus = float(have.get("CPU", 0)), float(have.get("GPU", 0))
    if cfg.gpus_per_worker and cfg.workers * cfg.gpus_per_worker > gpus:
        raise ValueError(f"{cfg.workers} workers x {cfg.gpus_per_worker:g} GPU need {cfg.workers * cfg.gpus_per_worker:g} "
                         f"GPUs; the Ray cluster has {gpus:g}: use --workers {int(gpus // cfg.gpus_per_worker)}")
    if cfg.workers * cfg.cpus_per_worker + 1 > cpus:
        fit = (cpus - 1) / cfg.workers
        fix = f"--cpus-per-worker {fit:g} or fewer --workers" if fit > 0 else "a cluster with more CPUs"
        raise ValueError(f"{cfg.workers} workers x {cfg.cpus_per_worker:g} CPU leave no CPU for the decode tasks on "
                         f"this Ray cluster ({cpus:g} CPUs): use {fix}")


def run_job(source: PairSource, encoder: Encoder, folder: Path, cfg: RayConfig,
            fault: Callable | None = None, progress: Callable[[int, int, float], None] | None = None) -> int:
    """Encode every pair not in a shard yet into ``folder``; returns how many pairs this run did."""
    from PIL import Image
    from tqdm import tqdm

    ray = connect(cfg.address)
    check_resources(ray.cluster_resources(), cfg)
    folder.mkdir(parents=True, exist_ok=True)
    table, recipe = _pair_table(source)
    n = len(table)
    done = done_pairs(folder)
    todo = table[~table[PID].isin(done)]
    if todo.empty:
        return 0
    device = "cuda" if cfg.gpus_per_worker > 0 else "cpu"
    pixel_shape = tuple(encoder.preprocess(Image.new("RGB", (8, 8))).shape)
    todo = todo.reset_index(drop=True)
    B = cfg.batch_size
    ds = ray.data.from_pandas([todo.iloc[i:i + B] for i in range(0, len(todo), B)])  # one block per batch
    # Decode runs as its own pool of tasks. Its memory request (the batch's pixels) also keeps Ray
    # Data from fusing it into the encoder actors (it fuses only equal resource requests), which
    # would serialise decoding inside each actor.
    batch_bytes = int(B * np.prod(pixel_shape) * 4)
    ds = ds.map_batches(_decode, batch_size=B, batch_format="pandas", num_cpus=1, memory=batch_bytes,
                        fn_kwargs={"recipe": recipe, "preprocess": encoder.preprocess, "pixel_shape": pixel_shape})
    ds = ds.map_batches(
        _EncodeAndWrite, batch_size=cfg.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.workers), num_gpus=cfg.gpus_per_worker or None,
        num_cpus=cfg.cpus_per_worker,
        fn_constructor_kwargs={"spec": encoder.spec.to_dict(), "device": device, "identity": encoder.identity(),
                               "folder": str(folder), "threads": int(max(1, cfg.cpus_per_worker)), "fault": fault})
    t0 = time.time()
    bar = tqdm(total=n, initial=len(done), desc="precompute[ray]", unit="pair")
    new = 0
    for row in ds.iter_rows():
        k = int(row["n_pairs"]) + int(row["n_skipped"])
        new += k
        bar.update(k)
        if progress:
            progress(bar.n, n, new / max(time.time() - t0, 1e-9))
    bar.close()
    return new


def import_shards(path: Path, folder: Path, source: PairSource, encoder: Encoder, manifest_extra: dict,
                  t0: float | None = None) -> tuple[int, int]:
    """Build the DuckDB cache at ``path`` from every shard in ``folder``; returns (pairs, skipped).

    Keeps the first copy of each pair (shards never overlap, but a retried batch could in
    principle be cut differently) and fails if any pair of the dataset is in no shard.
    ``t0`` (time.time() when the run began) gives the manifest's ``seconds_last_run``.
    """
    n = len(source)
    files = sorted(Path(folder).glob(SHARD_GLOB))
    seen = np.zeros(n, dtype=bool)
    with store.writing(path) as con:
        for t in ("items", "embeddings", "factors", "factor_kinds", "thumbs", "skipped", "done_batches", "manifest"):
            con.execute(f"DROP TABLE IF EXISTS {store.ident(t)}")  # an interrupted import starts over
        _init_schema(con, encoder.dim)
        for k, v in source.factor_kinds.items():
            con.execute("INSERT INTO factor_kinds VALUES (?, ?)", [k, v])
        pending, rows = [], 0
        for i, f in enumerate(files):
            t = pq.read_table(f)
            pid = t.column("pair_id").to_numpy().astype(np.int64)
            if pid.size and pid.max() >= n:
                raise ValueError(f"shard {f} holds pair {pid.max()} but the dataset has {n} pairs: "
                                 f"it belongs to another run; delete {folder} and rerun")
            fresh = ~seen[pid]
            seen[pid] = True
            if not fresh.all():
                t = t.filter(pa.array(fresh))
            pending.append(t)
            rows += t.num_rows
            if rows >= IMPORT_ROWS or i == len(files) - 1:
                _insert(con, pa.concat_tables(pending))
                pending, rows = [], 0
        missing = np.flatnonzero(~seen)
        if missing.size:
            raise RuntimeError(f"{missing.size} pairs are in no shard (first: {missing[:10].tolist()}); "
                               f"rerun the same command to encode them")
        n_ok = con.execute("SELECT count(*) FROM items WHERE modality = 'image'").fetchone()[0]
        n_skip = con.execute("SELECT count(*) FROM skipped").fetchone()[0]
        manifest = {"key": path.stem.rsplit("-", 1)[-1], "dataset": source.identity(), "model": encoder.provenance(),
                    "n_pairs": int(n_ok), "n_skipped": int(n_skip), "dim": int(encoder.dim),
                    "engine_version": ENGINE_VERSION, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                    **manifest_extra, "seconds_last_run": round(time.time() - (t0 or time.time()), 2)}
        for k, v in manifest.items():
            con.execute("INSERT INTO manifest VALUES (?, ?)", [k, json.dumps(v)])
    return int(n_ok), int(n_skip)


def _insert(con, t: pa.Table) -> None:
    con.register("_shard", t)
    try:
        con.execute("INSERT INTO items SELECT id, modality, pair_id, CASE WHEN modality = 'image' THEN path END, text "
                    "FROM _shard WHERE modality <> 'skipped' ORDER BY id")
        con.execute("INSERT INTO embeddings SELECT id, emb FROM _shard WHERE modality <> 'skipped' ORDER BY id")
        con.execute("INSERT INTO thumbs SELECT id, thumb FROM _shard WHERE modality = 'image' ORDER BY id")
        con.execute("INSERT INTO skipped SELECT path, error FROM _shard WHERE modality = 'skipped' ORDER BY pair_id")
    finally:
        con.unregister("_shard")
    img = t.filter(pc.equal(t.column("modality"), "image"))
    fac = [(int(p), k, v) for p, js in zip(img.column("pair_id").to_numpy(), img.column("factors").to_pylist())
           for k, v in json.loads(js).items()]
    if fac:
        store.insert_rows(con, "factors", {"pair_id": np.array([f[0] for f in fac], dtype=np.int32),
                                           "name": [f[1] for f in fac], "value": [f[2] for f in fac]})


def ray_precompute(source: PairSource, encoder: Encoder, cfg: RayConfig | None = None, force: bool = False,
                   progress: Callable[[int, int, float], None] | None = None,
                   fault: Callable[[np.ndarray, str], None] | None = None) -> PrecomputeResult:
    """``engine.precompute.precompute`` as a Ray Data job: same cache, same name, same contents.

    ``fault(pair_ids, stage)`` is called in the actor before and after each shard write (tests
    use it to kill an actor mid-run).
    """
    import shutil

    cfg = cfg or RayConfig()
    path = cache_path(source, encoder)
    if path.exists() and not force:
        c = EmbCache(path)
        return PrecomputeResult(c, 0.0, int(c.manifest["n_pairs"]), int(c.manifest["n_skipped"]), 0)
    if len(source) == 0:
        raise ValueError("the dataset has no pairs: add rows to the captions file")
    folder = shard_dir(path)
    if force and folder.exists():
        shutil.rmtree(folder)
    resumed = len(list(folder.glob(SHARD_GLOB))) if folder.exists() else 0
    if resumed:
        print(f"precompute[ray]: {resumed} shards already in {folder}; encoding the pairs they lack", file=sys.stderr)
    t0 = time.time()
    try:
        run_job(source, encoder, folder, cfg, fault=fault, progress=progress)
        t_job = time.time() - t0
        extra = {"device": "cuda" if cfg.gpus_per_worker > 0 else "cpu", "resumed_batches": resumed, "engine": "ray",
                 "ray": {k: v for k, v in cfg.to_dict().items() if k != "keep_shards"}, "seconds_job": round(t_job, 2)}
        n_ok, n_skip = import_shards(path, folder, source, encoder, extra, t0)
    except Exception as exc:
        if is_disk_full(exc):  # finished shards stay; a rerun encodes only what is missing
            raise disk_full(path, exc) from exc
        raise
    seconds = time.time() - t0
    if not cfg.keep_shards:
        shutil.rmtree(folder, ignore_errors=True)
    return PrecomputeResult(EmbCache(path), seconds, n_ok, n_skip, resumed)
