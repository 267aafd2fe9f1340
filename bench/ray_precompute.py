"""`geolens precompute --engine ray` against the single process, and Parquet-in-place against the import.

Part 1 (``--n`` Shapes pairs, one model, one process): pairs/s of
- bare: the model's forward pass alone on pre-rendered, pre-processed batches (the ceiling);
- single: ``engine.precompute.precompute`` (the whole pipeline, one process);
- ray-W: ``engine.ray_precompute.ray_precompute`` on a local Ray cluster with W encoder actors
  (``--workers 1,2``; ``--gpus`` gives each actor one GPU), including the import into DuckDB;
  the job alone (without the import) is reported too.
Ratios are against ``single`` measured in the same process.

Part 2 (``--layout-pairs`` synthetic pairs, d = ``--layout-dim``): the same shards imported into
the DuckDB cache (import seconds) against DuckDB reading the Parquet shards in place, timing the
queries the pages make: every pair's embeddings (``EmbCache.pairs``), the item table, 200 thumbnails.

    .venv/bin/python bench/ray_precompute.py --n 2000 --json
    .venv/bin/python bench/ray_precompute.py --arch ViT-B-32 --n 20000 --workers 8 --gpus --json   # 8-GPU node
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def speed(args) -> dict:
    import torch

    from engine.datasets.sources import resolve
    from engine.encoders import Encoder, ModelSpec
    from engine.precompute import precompute
    from engine.ray_precompute import RayConfig, connect, ray_precompute

    device = "cuda" if args.gpus else "cpu"
    enc = Encoder(ModelSpec(args.arch, args.pretrained), device=device)
    src = resolve("shapes", n=args.n, seed=0)
    B = args.batch_size
    pairs = [src[i] for i in range(min(args.n, 4 * B))]
    pix = torch.stack([enc.preprocess(p.image) for p in pairs])
    caps = [p.caption for p in pairs]

    def bare() -> float:
        t = time.perf_counter()
        for i in range(0, len(pairs), B):
            enc.encode_images(pix[i:i + B])
            enc.encode_texts(caps[i:i + B])
        if device == "cuda":
            torch.cuda.synchronize()
        return len(pairs) / (time.perf_counter() - t)

    bare()
    out = {"arch": args.arch, "n": args.n, "batch_size": B, "device": device, "cpus": os.cpu_count(),
           "bare_pairs_per_s": round(bare(), 1)}
    res = precompute(src, enc, batch_size=B, force=True)
    out["single_pairs_per_s"] = round(res.n_pairs / res.seconds, 1)
    ray = connect(None, num_cpus=os.cpu_count())
    cpus = ray.cluster_resources().get("CPU", 1)
    for w in [int(x) for x in args.workers.split(",")]:
        cfg = RayConfig(workers=w, batch_size=B, gpus_per_worker=1.0 if args.gpus else 0.0,
                        cpus_per_worker=1.0 if args.gpus else min(1.0, (cpus - 1) / w))
        r = ray_precompute(src, enc, cfg, force=True)
        job = r.cache.manifest["seconds_job"]
        out[f"ray{w}_pairs_per_s"] = round(r.n_pairs / r.seconds, 1)
        out[f"ray{w}_job_only_pairs_per_s"] = round(r.n_pairs / job, 1)
        out[f"ray{w}_vs_single"] = round(out[f"ray{w}_pairs_per_s"] / out["single_pairs_per_s"], 3)
        if args.gpus:
            out[f"ray{w}_pairs_per_s_per_gpu"] = round(out[f"ray{w}_pairs_per_s"] / w, 1)
            out[f"ray{w}_per_gpu_vs_bare"] = round(out[f"ray{w}_pairs_per_s_per_gpu"] / out["bare_pairs_per_s"], 3)
    ray.shutdown()
    return out


def layout(args) -> dict:
    """Import vs Parquet in place, on synthetic shards of ``--layout-pairs`` pairs."""
    import duckdb
    import numpy as np

    from engine import store
    from engine.embcache import EmbCache
    from engine.ray_precompute import import_shards, shard_table, write_shard

    n, d, B = args.layout_pairs, args.layout_dim, 4096
    root = Path(tempfile.mkdtemp(prefix="bench-ray-layout-"))
    folder = root / "shards"
    folder.mkdir()
    rng = np.random.default_rng(0)
    thumb = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()  # a typical 96 px PNG thumbnail's size
    t = time.perf_counter()
    for lo in range(0, n, B):
        ids = np.arange(lo, min(n, lo + B))
        x = rng.normal(size=(2, len(ids), d)).astype(np.float32)
        x /= np.linalg.norm(x, axis=2, keepdims=True)
        write_shard(folder, shard_table(ids, np.ones(len(ids), bool), [f"img/{i}.jpg" for i in ids],
                                        [f"caption {i}" for i in ids], ['{"label": "x"}'] * len(ids),
                                        [thumb] * len(ids), [""] * len(ids), x[0], x[1]))
    write_s = time.perf_counter() - t

    class Src:  # what import_shards reads of a source
        factor_kinds = {"label": "shared"}

        def __len__(self):
            return n

        def identity(self):
            return {"source": "synthetic", "n": n}

    class Enc:
        dim = d

        def identity(self):
            return {"arch": "synthetic"}

    path = root / "c.duckdb"
    t = time.perf_counter()
    import_shards(path, folder, Src(), Enc(), {})
    import_s = time.perf_counter() - t
    cache = EmbCache(path)
    some = list(range(0, 2 * n, max(1, 2 * n // 200)))[:200]
    some = [i - i % 2 for i in some]
    glob = str(folder / "pairs-*.parquet")
    pq_sql = {
        "pairs": (f"SELECT CAST(emb AS FLOAT[{d}]) FROM read_parquet(?) WHERE modality = ? ORDER BY pair_id", None),
        "items": ("SELECT id, modality, pair_id, path, text FROM read_parquet(?) WHERE modality <> 'skipped' ORDER BY id", None),
        "thumbs": ("SELECT id, thumb FROM read_parquet(?) WHERE list_contains(?, id)", None),
    }

    def best(fn, reps=3) -> float:
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return min(ts)

    db = {"pairs": best(cache.pairs), "items": best(cache.items), "thumbs": best(lambda: cache.thumbnails(some))}
    with contextlib.closing(duckdb.connect()) as con:  # in place needs external file access enabled
        def pq_pairs():
            store.fetch_array(con, pq_sql["pairs"][0], [glob, "image"])
            store.fetch_array(con, pq_sql["pairs"][0], [glob, "text"])

        inplace = {"pairs": best(pq_pairs), "items": best(lambda: con.execute(pq_sql["items"][0], [glob]).df()),
                   "thumbs": best(lambda: con.execute(pq_sql["thumbs"][0], [glob, some]).df())}
    size = {"duckdb_mb": round(path.stat().st_size / 2**20, 1),
            "parquet_mb": round(sum(f.stat().st_size for f in folder.iterdir()) / 2**20, 1)}
    return {"pairs": n, "dim": d, "shards": len(list(folder.iterdir())), "write_shards_s": round(write_s, 2),
            "import_s": round(import_s, 2), "import_pairs_per_s": round(n / import_s, 0), **size,
            **{f"duckdb_{k}_ms": round(v * 1e3, 1) for k, v in db.items()},
            **{f"parquet_{k}_ms": round(v * 1e3, 1) for k, v in inplace.items()},
            **{f"parquet_vs_duckdb_{k}": round(inplace[k] / db[k], 2) for k in db}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="geolens-tiny", help="open_clip architecture (random init unless --pretrained)")
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--n", type=int, default=2000, help="Shapes pairs for the speed comparison (0 skips it)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", default="1,2", help="comma list of Ray encoder-actor counts")
    ap.add_argument("--gpus", action="store_true", help="one GPU per actor, model on CUDA")
    ap.add_argument("--layout-pairs", type=int, default=100_000, help="synthetic pairs for import vs in place (0 skips)")
    ap.add_argument("--layout-dim", type=int, default=512)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ["GEOLENS_CACHE"] = tempfile.mkdtemp(prefix="bench-ray-")
    # the local cluster's memory monitor kills workers when the whole machine is above 95% memory
    # (on a shared box: other people's processes), which turns into endless retries; the kernel's
    # OOM killer still applies
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    out = {}
    if args.n:
        out["speed"] = speed(args)
        print(json.dumps(out["speed"]), file=sys.stderr, flush=True)  # kept even if the layout part fails
    if args.layout_pairs:
        out["layout"] = layout(args)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for part, d in out.items():
            print(f"[{part}]")
            for k, v in d.items():
                print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
