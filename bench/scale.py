"""Benchmark: the modality-gap path end to end at scale, in one process, on the engine's device.

    .venv/bin/python bench/scale.py --n 100000 --d 512 [--device auto|cpu|cuda] [--json] [--thumbnails]
    .venv/bin/python bench/scale.py --exact-limit [--d 512] [--device auto|cpu|cuda]

Writes a synthetic cache of n pairs (engine.gap.synthetic; thumbnails optional) to a temporary
cache root, then times: writing and loading it; each part of the gap report (engine.gap.report,
torch); the layout (PCA, UMAP fit on a sample, k-NN interpolation of the rest); the page's first
open and a cached open (Streamlit AppTest, in this process); a lasso over all 2n points of the
stored UMAP, held in memory as the page holds it (median of 3); and, as the baseline, the NumPy
reference (engine.gap.reference) ranking the same full-gallery queries. Then the SAE half, on the same cache: one epoch of streamed MP-SAE training
(``--sae-atoms`` 4096, ``--sae-k`` 32, batches of 512 pairs read from the cache as ``geolens
train-sae`` reads them; with ``--sae-steps S`` only S steps are timed and the epoch is their time
× steps per epoch, marked ``extrapolated``); the per-atom tables of that model over every item
(``engine.sae.tables``) and an atom's top 64 items read back (p50 over 100 atoms); and our MP-SAE
against overcomplete's MpSAE (``bench/sae.py``'s ``compare``) on the cache's first
``--compare-pairs`` pairs for ``--compare-steps`` steps. ``--no-sae`` skips that half.
Prints one JSON object (``--json``: nothing else on stdout):

    n, d, device, seconds{write, load, report_gap, layout, page_first_open, page_cached_open, lasso_all,
    sae_epoch}, atom_top_items_ms_p50, full_recall{exact, queries},
    ratios{recall_vs_numpy, sae_vs_overcomplete}   (above 1: ours is faster)

plus report_parts, layout_parts, sae (steps, extrapolation, tables seconds, explained variance of
both models, the process's peak resident set while training and its growth over the start of
training: the page's cached points and galleries are still held then, so the growth is the
training's own), load average and BLAS details (numpy's OpenBLAS core type, which
``OPENBLAS_CORETYPE`` overrides).

``--exact-limit`` measures how many pairs this device ranks exactly (both directions) in about
60 s at width d: it times exact full-gallery recall at two sizes and scales by n².
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / "cache" / "numba"))


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def blas_info() -> dict:
    from threadpoolctl import threadpool_info

    info = [{"api": i.get("internal_api"), "arch": i.get("architecture"), "threads": i.get("num_threads")}
            for i in threadpool_info()]
    return {"OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"), "pools": info}


def exact_limit(d: int, device: str, budget_s: float = 60.0) -> dict:
    import numpy as np

    from engine.gap import metrics, synthetic

    dev = metrics.device_of(device)
    out = {"d": d, "device": str(dev), "budget_s": budget_s, "runs": []}
    for n in (5_000, 10_000):
        img, txt, _ = synthetic.random_pairs(n, d, noise=1.0, seed=0)
        t0 = time.perf_counter()
        metrics.recall_full(img, txt, max_exact=n, device=dev)
        out["runs"].append({"n": n, "seconds": round(time.perf_counter() - t0, 2)})
        log(f"  exact recall of {n:,} pairs at d={d}: {out['runs'][-1]['seconds']} s")
    n2, t2 = out["runs"][-1]["n"], out["runs"][-1]["seconds"]
    out["pairs_in_budget"] = int(n2 * math.sqrt(budget_s / t2))
    out["load_avg"] = os.getloadavg()
    out["blas"] = blas_info()
    del np
    return out


def star(sample, points: int = 20):
    """A concave star polygon over the bounding box of ``sample`` (outer radius beyond the box, inner
    a fifth of its diagonal), so it selects a large share of the points whatever their clusters."""
    import numpy as np

    lo, hi = sample.min(0), sample.max(0)
    centre, diag = (lo + hi) / 2, float(np.linalg.norm(hi - lo))
    ang = np.linspace(0, 2 * np.pi, 2 * points + 1)[:-1]
    rad = np.where(np.arange(2 * points) % 2 == 0, 0.75 * diag, 0.2 * diag)
    return centre[0] + rad * np.cos(ang), centre[1] + rad * np.sin(ang)


def sae_half(cache, dev, args, seconds: dict, timed) -> dict:
    """The SAE keys: sae_epoch, the tables, atom_top_items_ms_p50 and the ratio against overcomplete."""
    import numpy as np
    import torch

    from engine.sae.config import SAEConfig
    from engine.sae.pipeline import item_chunks
    from engine.sae.registry import make_learner
    from engine.sae.stream import CacheSource
    from engine.sae.tables import atom_top_items, encode_tables, write_tables
    from engine.sae.train import train_source

    sys.path.insert(0, str(ROOT / "bench"))
    import sae as sae_bench  # bench/sae.py: the comparison with overcomplete

    cfg = SAEConfig(atoms=args.sae_atoms, k=args.sae_k)
    source = CacheSource(cache, cfg.stream_block, cfg.stream_window)
    per_epoch, _ = cfg.schedule(source.n)
    steps = per_epoch if not args.sae_steps else min(args.sae_steps, per_epoch)
    model = make_learner(cfg.arch, source.d, cfg.atoms, cfg.k, **cfg.learner_kwargs())
    mem = sae_bench.MemorySampler()
    mem.enter("train")
    run = train_source(model, source, cfg, None, None, dev, False, max_steps=steps)
    mem.leave()
    seconds["sae_epoch"] = round(run["seconds"] * per_epoch / steps, 3)
    log(f"sae_epoch: {seconds['sae_epoch']} s ({steps} of {per_epoch} steps timed, {run['pairs_per_s']} pairs/s)")

    folder = Path(tempfile.mkdtemp(prefix="sae-tables-", dir=os.environ["GEOLENS_CACHE"]))
    t = timed("sae_tables", lambda: encode_tables(model, item_chunks(cache), device=dev))
    write_tables(folder, t)
    rng = np.random.default_rng(0)
    ms = []
    for a in rng.choice(cfg.atoms, size=min(100, cfg.atoms), replace=False):
        t0 = time.perf_counter()
        atom_top_items(folder, int(a), 64)
        ms.append((time.perf_counter() - t0) * 1e3)
    log(f"atom top items: p50 {np.median(ms):.2f} ms, p95 {np.percentile(ms, 95):.2f} ms over {len(ms)} atoms")

    m = min(args.compare_pairs, source.n)
    img, txt = source.fetch(torch.arange(m))
    x_ev = torch.cat([img, txt]).numpy()
    x_ev = x_ev[np.sort(rng.choice(len(x_ev), min(2048, len(x_ev)), replace=False))]
    cmp = sae_bench.compare(img.to(dev), txt.to(dev), x_ev, cfg.atoms, cfg.k, args.compare_steps, cfg.batch_pairs, log=log)
    mem.stop()
    return {"atom_top_items_ms_p50": round(float(np.median(ms)), 3), "sae_vs_overcomplete": round(cmp["ratio"], 3),
            "sae": {"atoms": cfg.atoms, "k": cfg.k, "batch_pairs": cfg.batch_pairs, "steps_per_epoch": per_epoch,
                    "steps_timed": steps, "extrapolated": steps < per_epoch, "pairs_per_s": run["pairs_per_s"],
                    "train_peak_rss_gb": round(mem.peak.get("train", 0) / 2**30, 2),
                    "train_extra_gb": round((mem.peak.get("train", 0) - mem.base.get("train", 0)) / 2**30, 2),
                    "atom_top_items_ms_p95": round(float(np.percentile(ms, 95)), 3),
                    "compare": {"pairs": m, "steps": args.compare_steps,
                                **{k: {kk: round(vv, 4) for kk, vv in v.items()} for k, v in cmp.items() if k != "ratio"}}}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--json", action="store_true", help="print only the JSON object on stdout")
    ap.add_argument("--thumbnails", action="store_true", help="write an 8 × 8 thumbnail per image")
    ap.add_argument("--keep", help="cache root to write into and keep (default: a temporary folder)")
    ap.add_argument("--exact-limit", action="store_true", help="measure the device's exact full-gallery size")
    ap.add_argument("--no-sae", action="store_true", help="skip the SAE half")
    ap.add_argument("--sae-atoms", type=int, default=4096)
    ap.add_argument("--sae-k", type=int, default=32)
    ap.add_argument("--sae-steps", type=int, default=0, help="time only this many training steps (0: the whole epoch)")
    ap.add_argument("--compare-pairs", type=int, default=4096, help="pairs for the overcomplete comparison")
    ap.add_argument("--compare-steps", type=int, default=4, help="steps of each model in the overcomplete comparison")
    args = ap.parse_args()

    if args.exact_limit:
        print(json.dumps(exact_limit(args.d, args.device), indent=None if args.json else 2))
        return 0

    tmp = None
    if args.keep:
        root = Path(args.keep)
        root.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="geolens-scale-")
        root = Path(tmp.name)
    os.environ["GEOLENS_CACHE"] = str(root)  # the cache, its artifacts and the page all use this root

    import numpy as np

    from engine.gap import layout, metrics, reference, report, synthetic

    dev = metrics.device_of(None if args.device == "auto" else args.device)
    if args.device != "auto":
        os.environ["GEOLENS_DEVICE"] = args.device  # the page's own device choice
    seconds: dict[str, float] = {}

    def timed(name, fn, *a, **kw):
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        seconds[name] = round(time.perf_counter() - t0, 3)
        log(f"{name}: {seconds[name]} s")
        return out

    log(f"scale bench: n={args.n:,} d={args.d} device={dev} root={root} load={os.getloadavg()}")
    cache = timed("write", synthetic.write_random_cache, args.n, args.d, folder=root, thumbnails=args.thumbnails)
    pts = timed("load", report.load_points, cache)
    cfg = report.GapConfig()

    def progress(p):
        if p.total and (p.done >= p.total or int(p.done) % 20_000 < 64):
            log(f"  {p.text()}")

    art = timed("report_gap", report.build_report, cache, cfg, pts, True, dev, progress)
    rep = json.loads(art.file("report.json").read_text())
    lay = timed("layout", layout.build_layout, cache, layout.LayoutConfig(), pts, True, dev, progress)

    # the page, first open (empty Streamlit caches in this process) and cached open (a new session)
    from streamlit.testing.v1 import AppTest

    def page_open():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=3600)
        at.query_params["cache"] = cache.name
        at.switch_page("pages/gap.py")
        at.run()
        if at.exception:
            raise RuntimeError([e.value for e in at.exception])
        if not at.metric or len(at.get("plotly_chart")) < 2:
            raise RuntimeError("the page did not show its numbers and map")
        return at

    timed("page_first_open", page_open)
    timed("page_cached_open", page_open)

    # one lasso over every point of the stored UMAP, as the page does it: coordinates in memory (the page
    # reads them once per server), the median of 3 lassos (the first one pages the arrays in)
    xy = np.load(lay.path / "umap.npy")
    xs, ys = star(xy[:: max(1, len(xy) // 10_000)])
    lasso_runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        rows = layout.select_lasso(xy, xs, ys)
        lasso_runs.append(round(time.perf_counter() - t0, 3))
    seconds["lasso_all"] = sorted(lasso_runs)[1]
    log(f"lasso_all: {seconds['lasso_all']} s (runs {lasso_runs}); selected {len(rows):,} of {len(xy):,} points")

    # the NumPy baseline ranks the same full-gallery queries (both directions)
    full = rep["retrieval"]["full_gallery"]
    q = metrics.query_sample(args.n, full["exact_limit"], cfg.seed)
    t0 = time.perf_counter()
    base = {}
    for key, (a, b) in {"image_to_text": (pts.img, pts.txt), "text_to_image": (pts.txt, pts.img)}.items():
        base[key] = reference.recall_from_counts(*reference.rank_counts(a[q], b, q), cfg.ks)
    t_np = time.perf_counter() - t0
    log(f"numpy full-gallery recall on the same {len(q):,} queries: {t_np:.1f} s")
    for key in base:
        for k, v in base[key].items():
            if abs(v - full[key][k]) > 1e-4:
                raise AssertionError(f"torch and numpy recall differ: {key} {k} {full[key][k]} vs {v}")

    del pts, base  # the SAE half reads the cache itself (its peak memory should not count the gap's arrays)
    __import__("gc").collect()
    sae = {} if args.no_sae else sae_half(cache, dev, args, seconds, timed)

    out = {
        "n": args.n, "d": args.d, "device": str(dev),
        "seconds": seconds,
        "atom_top_items_ms_p50": sae.get("atom_top_items_ms_p50"),
        "full_recall": {"exact": full["exact"], "queries": full["queries"], "exact_limit": full["exact_limit"]},
        "ratios": {"recall_vs_numpy": round(t_np / rep["seconds"]["recall_full"], 3),
                   "sae_vs_overcomplete": sae.get("sae_vs_overcomplete")},
        "sae": sae.get("sae"),
        "numpy_recall_seconds": round(t_np, 3),
        "report_parts": rep["seconds"],
        "layout_parts": lay.meta["seconds"], "umap_fitted": lay.meta["umap_fitted"],
        "lasso_selected": int(len(rows)), "points": int(len(xy)), "lasso_runs": lasso_runs,
        "load_avg_end": [round(v, 2) for v in os.getloadavg()],
        "torch_threads": __import__("torch").get_num_threads(),
        "blas": blas_info(),
    }
    print(json.dumps(out, indent=None if args.json else 2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
