"""Benchmark: the modality-gap page's data path vs a plain numpy baseline, and first vs cached UMAP.

    .venv/bin/python bench/gap.py [--n 100000] [--d 64] [--umap-pairs 100000]

Writes a cache of n random unit-vector pairs (engine.gap.synthetic) to a temporary folder, then
times, in this process:
  engine   : EmbCache.pairs via Arrow, engine.gap.metrics (O(nd) intra cosine, chunked rank
             counting for recall), PCA by scikit-learn;
  baseline : rows fetched as Python tuples, intra cosine from the Gram matrix (in blocks),
             recall by arg-partitioned top-k per query, PCA by a full SVD.
W (POT ot.emd2 on the same 10k subsample) and the probe (the same scikit-learn fit) have no
cheaper plain form: they are run once and counted in both columns. Values are cross-checked.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / "cache" / "numba"))

from engine import store
from engine.gap import metrics as M
from engine.gap import projection, synthetic
from engine.gap.report import GapConfig, load_points


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


# ----------------------------------------------------------------------------- plain numpy baseline
def base_load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with contextlib.closing(store.connect_ro(path)) as con:
        rows = con.execute("SELECT i.modality, e.emb FROM embeddings e JOIN items i USING (id) ORDER BY i.pair_id, i.id").fetchall()
    img = np.array([r[1] for r in rows if r[0] == "image"], dtype=np.float32)
    txt = np.array([r[1] for r in rows if r[0] == "text"], dtype=np.float32)
    return img, txt


def base_intra(x: np.ndarray, block: int = 4096) -> float:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    total = 0.0
    for s in range(0, len(x), block):
        total += float((x[s:s + block] @ x.T).sum())
    return (total - len(x)) / (len(x) * (len(x) - 1))


def base_recall(q: np.ndarray, g: np.ndarray, ks=M.KS, block: int = 512) -> dict:
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    kmax = max(ks)
    hits = {k: 0 for k in ks}
    for s in range(0, len(q), block):
        sims = q[s:s + block] @ g.T
        top = np.argpartition(-sims, kmax - 1, axis=1)[:, :kmax]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, 1), axis=1), 1)
        truth = np.arange(s, s + len(sims))[:, None]
        for k in ks:
            hits[k] += int((top[:, :k] == truth).any(axis=1).sum())
    return {f"R@{k}": hits[k] / len(q) for k in ks}


def base_batched(img, txt, batch=M.BATCH, seed=0) -> dict:
    perm = np.random.default_rng(seed).permutation(len(img))
    hits = {k: 0 for k in M.KS}
    for s in range(0, len(perm), batch):
        r = perm[s:s + batch]
        for k, v in base_recall(img[r], txt[r]).items():
            hits[int(k[2:])] += v * len(r)
    return {f"R@{k}": hits[k] / len(img) for k in M.KS}


def base_pca(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    return xc @ vt[:2].T


# ----------------------------------------------------------------------------- run
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--umap-pairs", type=int, default=100_000, help="pairs in the UMAP timing (0 skips it)")
    args = ap.parse_args()
    cfg = GapConfig()
    with tempfile.TemporaryDirectory(prefix="gap-bench-") as tmp:
        cache, t_write = timed(synthetic.write_random_cache, args.n, args.d, folder=Path(tmp))
        print(f"{args.n:,} random pairs, d={args.d}: cache written in {t_write:.1f}s "
              f"({cache.size_bytes() / 2**20:.0f} MB)", flush=True)
        rows: list[tuple[str, float, float]] = []

        def row(name, eng, base):
            rows.append((name, eng, base))
            print(f"  {name:<24} engine {eng:8.2f}s   baseline {base:8.2f}s   ratio {base / max(eng, 1e-9):6.2f}x", flush=True)

        pts, te = timed(load_points, cache)
        (bimg, btxt), tb = timed(base_load, cache.path)
        assert np.array_equal(pts.img, bimg) and np.array_equal(pts.txt, btxt)
        row("load", te, tb)
        img, txt = pts.img, pts.txt
        v, te = timed(M.centroid_distance, img, txt)
        bv, tb = timed(lambda: float(np.sqrt(((img.mean(0) - txt.mean(0)) ** 2).sum())))
        assert abs(v - bv) < 1e-4
        row("DiM", te, tb)
        w, tw = timed(M.wasserstein, img, txt, cfg.w_max, cfg.seed)
        row(f"W (ot.emd2, {w.n_img:,}/side)", tw, tw)
        v, te = timed(M.mean_pair_cosine, img, txt)
        bv, tb = timed(lambda: float(np.mean(np.einsum("ij,ij->i", img, txt))))
        assert abs(v - bv) < 1e-4
        row("true-pair cosine", te, tb)
        v, te = timed(lambda: (M.mean_intra_cosine(img), M.mean_intra_cosine(txt)))
        bv, tb = timed(lambda: (base_intra(img), base_intra(txt)))
        assert np.allclose(v, bv, atol=1e-4)
        row("intra cosines", te, tb)
        p, tp = timed(M.probe_accuracy, img, txt, cfg.probe_test_fraction, cfg.probe_max, cfg.seed)
        row("probe (sklearn)", tp, tp)
        v, te = timed(M.recall_batched, img, txt)
        bv, tb = timed(lambda: (base_batched(img, txt), base_batched(txt, img)))
        assert all(abs(v["image_to_text"][k] - bv[0][k]) < 1e-3 for k in bv[0])
        row("recall batched-256", te, tb)
        v, te = timed(M.recall_full, img, txt)
        bv, tb = timed(lambda: (base_recall(img, txt), base_recall(txt, img)))
        assert all(abs(v["image_to_text"][k] - bv[0][k]) < 1e-3 for k in bv[0])
        row("recall full gallery", te, tb)
        u, te = timed(lambda: M.gap_projection(img, M.gap_direction(img, txt)))
        row("gap projection", te, te)
        x = projection.stack(img, txt)
        xy, te = timed(projection.pca_2d, x)
        bxy, tb = timed(base_pca, x)
        assert np.allclose(np.abs(xy), np.abs(bxy), atol=1e-2)
        row("PCA 2-D", te, tb)
        eng, base = sum(r[1] for r in rows), sum(r[2] for r in rows)
        print(f"  {'TOTAL page data path':<24} engine {eng:8.2f}s   baseline {base:8.2f}s   ratio {base / eng:6.2f}x")
        print(f"  values: DiM {M.centroid_distance(img, txt):.4f}  W {w.value:.4f}  probe {p.accuracy:.4f}  "
              f"R@1 full {v['mean']['R@1']:.4f}")
        if args.umap_pairs:
            m = min(args.umap_pairs, args.n)
            ids = np.concatenate([pts.table["id"].to_numpy()[:m], pts.table["id"].to_numpy()[args.n:args.n + m]])
            xu = projection.stack(img[:m], txt[:m])
            first = projection.cached_umap(cache, ids, xu)
            again = projection.cached_umap(cache, ids, xu)
            assert not first.cached and again.cached and np.array_equal(first.xy, again.xy)
            print(f"  UMAP of {2 * m:,} points: first {first.seconds:.1f}s ({2 * m / first.seconds:,.0f} points/s), "
                  f"cached {again.seconds:.3f}s, ratio {first.seconds / again.seconds:,.0f}x")


if __name__ == "__main__":
    main()
