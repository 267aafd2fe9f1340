"""The joint map's 2-D layouts, computed once by the build and stored beside the cache.

Points are stacked as ``X = [img; txt]`` (rows 0..n-1 images, n..2n-1 their captions), as in
docs/METHODS.md §1, and both modalities share one map. ``build_layout`` (run by ``geolens gap build``)
stores the artifact ``gap-layout/<key>`` (``engine.core.artifacts``) holding, as float32 ``.npy``
files the page memory-maps:

- ``pca.npy`` (2n, 2): the first two principal components. The axes are the top eigenvectors
  of the covariance of at most ``pca_fit_max`` rows (a seeded sample beyond), centred on the mean
  of all rows; every row is projected, in torch on the engine's device, chunk by chunk.
- ``umap.npy`` (2n, 2): UMAP fitted on at most ``umap_sample`` rows (a seeded sample; all rows
  when there are fewer, then nothing is interpolated). Every other row is placed by k-nearest-
  neighbour interpolation: its ``extend_k`` nearest fitted rows in the space of the top
  ``extend_dims`` principal components (Euclidean, which ranks unit rows as cosine does), weighted
  exp(−(dᵢ − d₁)/σ) with σ the mean of dᵢ − d₁ (the nearest gets weight 1). This is UMAP's own
  initialisation of ``transform`` without its optimisation epochs, which at 2M points cost more
  than the fit.
- ``ids.npy`` (2n,) int64: the item id of each row; ``umap_fitted.npy``: the rows UMAP was fitted on.

The manifest's ``meta`` records each stage's seconds. An interrupted build resumes: finished
stages are files in the partial folder, and the interpolation checkpoints its rows done.
``select_box`` / ``select_lasso`` are the page's server-side selection over every stored point.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from engine import ENGINE_VERSION
from engine.config import Config, check_choice, check_positive
from engine.core import artifacts
from engine.core.progress import ProgressFn, Tracker
from engine.gap import metrics
from engine.gap.projection import UMAP_INITS

KIND = "gap-layout"
VERSION = f"{ENGINE_VERSION}/gap-layout-1"
METHODS = ("pca", "umap")
"""layout names: URL values, dropdown options and CLI choices"""


@dataclasses.dataclass
class LayoutConfig(Config):
    umap_sample: int = 20_000
    """most rows UMAP is fitted on (a seeded sample of both modalities beyond)"""
    n_neighbors: int = 15
    """size of the local neighbourhood UMAP preserves"""
    min_dist: float = 0.1
    """how tightly UMAP packs neighbours in 2-D"""
    metric: str = "cosine"
    """UMAP's distance in embedding space"""
    init: str = "pca"
    """UMAP's starting layout (``projection.UMAPConfig.init``: 'spectral' fails on a modality gap)"""
    extend_k: int = 10
    """fitted neighbours each other row is interpolated from"""
    extend_dims: int = 32
    """principal components the interpolation's neighbour search runs in"""
    pca_fit_max: int = 200_000
    """most rows whose covariance gives the PCA axes (a seeded sample beyond)"""
    seed: int = 0
    """seed of the samples and of UMAP (a seeded UMAP runs single-threaded, reproducibly)"""

    def validate(self) -> None:
        for name in ("umap_sample", "n_neighbors", "extend_k", "extend_dims", "pca_fit_max"):
            check_positive(name, getattr(self, name))
        check_positive("min_dist", self.min_dist, allow_zero=True)
        check_choice("metric", self.metric, ("cosine", "euclidean"))
        check_choice("init", self.init, UMAP_INITS)
        if self.umap_sample <= self.n_neighbors:
            raise ValueError(f"umap_sample ({self.umap_sample}) must exceed n_neighbors ({self.n_neighbors})")


@dataclasses.dataclass(frozen=True)
class Layout:
    """A stored layout: memory-mapped coordinates of every point and how they were made."""

    ids: np.ndarray
    """(2n,) item ids, images then captions"""
    coords: dict
    """method -> (2n, 2) float32 memory map"""
    meta: dict
    """seconds per stage, sample sizes"""
    path: Path

    def xy(self, method: str) -> np.ndarray:
        check_choice("layout", method, METHODS)
        return self.coords[method]


def _rows(img: np.ndarray, txt: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of the virtual stack [img; txt], without building the stack. (m, d)"""
    n = len(img)
    idx = np.asarray(idx)
    out = np.empty((len(idx), img.shape[1]), dtype=np.float32)
    lo = idx < n
    out[lo] = img[idx[lo]]
    out[~lo] = txt[idx[~lo] - n]
    return out


def _chunks(total: int, size: int):
    for s in range(0, total, size):
        yield s, min(total, s + size)


def pca_axes(img: np.ndarray, txt: np.ndarray, k: int, fit_max: int, seed: int = 0, device=None):
    """(mean (d,), axes (k, d), fitted rows) of the stacked rows: top-k covariance eigenvectors.

    Signs follow scikit-learn's ``svd_flip``: each axis's largest-magnitude entry is positive.
    """
    dev = metrics.device_of(device)
    total = len(img) + len(txt)
    d = img.shape[1]
    k = min(k, d, total)
    mean = (metrics._column_sum(img, dev) + metrics._column_sum(txt, dev)) / total  # float64
    fit = np.arange(total) if total <= fit_max else np.sort(
        np.random.default_rng(seed).choice(total, size=fit_max, replace=False))
    cov = torch.zeros((d, d), dtype=torch.float64, device=dev)
    for s, e in _chunks(len(fit), metrics.ROWS):
        x = metrics._tensor(_rows(img, txt, fit[s:e]), dev, torch.float64) - mean
        cov += x.T @ x
    vals, vecs = torch.linalg.eigh(cov / max(1, len(fit) - 1))  # ascending
    axes = vecs[:, torch.argsort(vals, descending=True)[:k]].T  # (k, d)
    flip = torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))
    axes = axes * torch.where(flip == 0, torch.ones_like(flip), flip)
    return mean, axes, fit


def pca_features(img: np.ndarray, txt: np.ndarray, mean: torch.Tensor, axes: torch.Tensor,
                 out: np.ndarray | None = None) -> np.ndarray:
    """(x − mean) · axesᵀ for every stacked row, float32, chunk by chunk. (2n, k)"""
    n, total = len(img), len(img) + len(txt)
    out = np.empty((total, len(axes)), dtype=np.float32) if out is None else out
    m32, a32 = mean.float(), axes.float()
    for src, off in ((img, 0), (txt, n)):
        for s, e in _chunks(len(src), metrics.ROWS):
            x = metrics._tensor(src[s:e], mean.device, torch.float32)
            out[off + s:off + e] = ((x - m32) @ a32.T).cpu().numpy()
    return out


def pca_2d(img: np.ndarray, txt: np.ndarray, fit_max: int = 200_000, seed: int = 0, device=None) -> np.ndarray:
    """First two principal components of [img; txt] (torch, chunked). (2n, 2) float32"""
    mean, axes, _ = pca_axes(img, txt, 2, fit_max, seed, device)
    return pca_features(img, txt, mean, axes)


def interpolate(features: np.ndarray, fitted: np.ndarray, fitted_xy: np.ndarray, k: int, out: np.ndarray,
                start: int = 0, device=None, checkpoint=None, progress: ProgressFn | None = None) -> np.ndarray:
    """Place every row of ``features`` from its k nearest ``fitted`` rows' 2-D positions.

    features (N, K) float32, fitted (S,) rows of ``features`` with positions fitted_xy (S, 2).
    Weights exp(−(dᵢ − d₁)/σ), σ = mean(dᵢ − d₁) (d Euclidean in feature space); fitted rows keep
    their own positions. Writes rows ``start``.. into ``out`` (N, 2); ``checkpoint(done)`` is
    called after each block so a build can resume from ``done``.

    The exact k-NN search is faiss's ``IndexFlatL2`` on the CPU (5.6× torch's matmul + topk here,
    the same neighbours: 2M rows against 20k fitted ones took 552 s in torch) and torch on CUDA.
    """
    dev = metrics.device_of(device)
    f = metrics._tensor(features[fitted], dev, torch.float32)  # (S, K)
    pos = metrics._tensor(fitted_xy, dev, torch.float32)
    k = min(k, len(fitted))
    if dev.type == "cpu":
        import faiss

        index = faiss.IndexFlatL2(f.shape[1])
        index.add(np.ascontiguousarray(f.numpy()))
        block = 1 << 15  # faiss keeps only k distances per row: bigger blocks, fewer calls

        def nearest(s: int, e: int) -> tuple[torch.Tensor, torch.Tensor]:
            d2, idx = index.search(np.ascontiguousarray(features[s:e], dtype=np.float32), k)
            return torch.from_numpy(d2), torch.from_numpy(idx)
    else:
        f_sq = (f * f).sum(1)
        block = max(256, metrics.BLOCK // max(1, len(fitted)))

        def nearest(s: int, e: int) -> tuple[torch.Tensor, torch.Tensor]:
            q = metrics._tensor(features[s:e], dev, torch.float32)
            d2 = (q * q).sum(1, keepdim=True) + f_sq[None] - 2 * (q @ f.T)  # (c, S)
            return torch.topk(d2, k, dim=1, largest=False)
    total = len(features)
    track = Tracker(total, "point", "umap interpolate", sink=progress, start=start) if progress else None
    for s in range(start, total, block):
        e = min(total, s + block)
        near, idx = nearest(s, e)  # squared distances and rows of the k nearest fitted points
        dist = near.clamp_min(0).sqrt()
        rel = dist - dist[:, :1]
        sigma = rel.mean(1, keepdim=True).clamp_min(1e-12)
        w = torch.exp(-rel / sigma)
        out[s:e] = ((w[:, :, None] * pos[idx]).sum(1) / w.sum(1, keepdim=True)).cpu().numpy()
        if checkpoint:
            checkpoint(e)
        if track:
            track.update(e)
    out[fitted] = fitted_xy
    return out


def umap_fit(x: np.ndarray, cfg: LayoutConfig) -> np.ndarray:
    """UMAP of the rows with the layout's settings (``projection.umap_2d``). (S, d) -> (S, 2) float32"""
    from engine.gap.projection import UMAPConfig, umap_2d

    return umap_2d(x, UMAPConfig(n_neighbors=cfg.n_neighbors, min_dist=cfg.min_dist, metric=cfg.metric, seed=cfg.seed,
                                     init=cfg.init))


# ----------------------------------------------------------------------------- store
def _key_parts(cache, cfg: LayoutConfig) -> tuple[dict, list[str]]:
    return cfg.to_dict(), [str(cache.manifest["key"])]


def _save(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


def open_layout(art: artifacts.Artifact) -> Layout:
    mm = lambda name: np.load(art.file(name), mmap_mode="r")  # noqa: E731
    return Layout(mm("ids.npy"), {m: mm(f"{m}.npy") for m in METHODS}, art.meta, art.path)


def find_layout(cache, cfg: LayoutConfig | None = None) -> Layout | None:
    """The stored layout of ``cache`` for ``cfg`` (memory-mapped), or None. Never writes."""
    config, inputs = _key_parts(cache, cfg or LayoutConfig())
    art = artifacts.find(KIND, artifacts.artifact_key(KIND, config, inputs, VERSION))
    return None if art is None else open_layout(art)


def build_layout(cache, cfg: LayoutConfig | None = None, points=None, fresh: bool = False, device=None,
                 progress: ProgressFn | None = None) -> Layout:
    """Compute (or find) the PCA and UMAP layouts of every point of ``cache`` and store them.

    ``points`` (``report.Points``) skips reloading; ``fresh`` rebuilds a stored layout. Resumes an
    interrupted build of the same key.
    """
    from engine.gap.report import load_points

    cfg = cfg or LayoutConfig()
    if not fresh and (found := find_layout(cache, cfg)) is not None:
        return found
    dev = metrics.device_of(device)
    config, inputs = _key_parts(cache, cfg)
    points = points or load_points(cache)
    img, txt = points.img, points.txt
    total = 2 * len(img)
    with artifacts.writing(KIND, config, inputs, VERSION, name=cache.name, resume=not fresh) as w:
        state_file = w.file("state.json")
        state = json.loads(state_file.read_text()) if state_file.exists() else {"seconds": {}}

        def save_state():
            tmp = w.file("state.json.tmp")
            tmp.write_text(json.dumps(state))
            os.replace(tmp, state_file)

        if not w.file("pca.npy").exists() or not w.file("features.npy").exists():
            t0 = time.perf_counter()
            mean, axes, fit = pca_axes(img, txt, max(2, cfg.extend_dims), cfg.pca_fit_max, cfg.seed, dev)
            feats = pca_features(img, txt, mean, axes)
            _save(w.file("ids.npy"), np.asarray(points.table["id"].to_numpy(), dtype=np.int64))
            _save(w.file("features.npy"), feats)
            _save(w.file("pca.npy"), np.ascontiguousarray(feats[:, :2]))
            state["seconds"]["pca"] = round(time.perf_counter() - t0, 3)
            state["pca_fitted_rows"] = int(len(fit))
            save_state()
        feats = np.load(w.file("features.npy"), mmap_mode="r")

        if not w.file("umap_fitted.npy").exists():
            t0 = time.perf_counter()
            fitted = np.arange(total) if total <= cfg.umap_sample else np.sort(
                np.random.default_rng(cfg.seed).choice(total, size=cfg.umap_sample, replace=False))
            if progress:
                Tracker(1, "fit", f"umap fit on {len(fitted):,} points", sink=progress).update(0, force=True)
            xy = umap_fit(_rows(img, txt, fitted), cfg)
            _save(w.file("umap_fit_xy.npy"), xy)
            _save(w.file("umap_fitted.npy"), fitted)
            state["seconds"]["umap_fit"] = round(time.perf_counter() - t0, 3)
            save_state()
        fitted = np.load(w.file("umap_fitted.npy"))
        fitted_xy = np.load(w.file("umap_fit_xy.npy"))

        if not w.file("umap.npy").exists():
            t0 = time.perf_counter()
            part = w.file("umap.partial.npy")
            if len(fitted) == total:
                out = np.empty((total, 2), np.float32)
                out[fitted] = fitted_xy
            else:
                done = int(state.get("interpolated", 0)) if part.exists() else 0
                out = np.lib.format.open_memmap(part, mode="r+" if done else "w+", dtype=np.float32, shape=(total, 2))

                def checkpoint(e):
                    if e - state.get("interpolated", 0) >= 200_000 or e == total:
                        out.flush()
                        state["interpolated"] = int(e)
                        save_state()

                interpolate(feats, fitted, fitted_xy, cfg.extend_k, out, done, dev, checkpoint, progress)
                out.flush()
            _save(w.file("umap.npy"), np.asarray(out))
            del out
            part.unlink(missing_ok=True)
            state["seconds"]["umap_interpolate"] = round(time.perf_counter() - t0, 3)
            save_state()

        del feats
        w.file("features.npy").unlink()
        w.meta = {"n_points": total, "umap_fitted": int(len(fitted)), "interpolated": int(total - len(fitted)),
                  "pca_fitted_rows": state.get("pca_fitted_rows"), "seconds": state["seconds"], "device": str(dev)}
    return find_layout(cache, cfg)


# ----------------------------------------------------------------------------- selection
def select_box(xy: np.ndarray, x: tuple[float, float], y: tuple[float, float]) -> np.ndarray:
    """Rows whose point lies in the box [x0, x1] × [y0, y1] (edges included). -> sorted int64 rows"""
    x0, x1 = sorted(float(v) for v in x)
    y0, y1 = sorted(float(v) for v in y)
    px, py = xy[:, 0], xy[:, 1]
    return np.flatnonzero((px >= x0) & (px <= x1) & (py >= y0) & (py <= y1))


LASSO_GRID = 1024
"""cells per side of the lasso's bounding-box grid (``select_lasso``)"""


def _centres_inside(a: np.ndarray, b: np.ndarray, lo: np.ndarray, size: np.ndarray, g: int) -> np.ndarray:
    """Even-odd test of every cell centre against the polygon of edges a[i] → b[i]. -> (g, g) bool [ix, iy]"""
    cx = lo[0] + (np.arange(g) + 0.5) * size[0]
    cy = lo[1] + (np.arange(g) + 0.5) * size[1]
    ay, by = a[:, 1][None], b[:, 1][None]
    crosses = (ay > cy[:, None]) != (by > cy[:, None])  # (g rows, edges): the edge spans the row's y
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = a[:, 0][None] + (cy[:, None] - ay) * (b[:, 0] - a[:, 0])[None] / (by - ay)
    x_at = np.sort(np.where(crosses, x_at, np.inf), axis=1)
    left = np.stack([np.searchsorted(row, cx) for row in x_at], axis=1)  # crossings left of each centre
    return left % 2 == 1


def select_lasso(xy: np.ndarray, xs, ys) -> np.ndarray:
    """Rows whose point lies inside the polygon with vertices (xs, ys) -> sorted int64 rows.

    The polygon is closed implicitly; the test is matplotlib's ``Path.contains_points`` (even-odd
    ray casting in C). Its cost is points × vertices, 1.6 s for 2M points and a hand-drawn lasso,
    so it runs on few points: the polygon's bounding box is cut into ``LASSO_GRID``² cells, and a
    cell no edge crosses lies wholly on one side, the side of its centre. The centres are decided
    row by row by the same even-odd rule (edges crossing the row left of the centre, half-open in y
    as matplotlib counts them). Only points in cells an edge crosses, or next to one, are tested
    themselves.
    """
    from matplotlib.path import Path as MplPath
    from scipy.ndimage import binary_dilation

    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if xs.shape != ys.shape or len(xs) < 3:
        raise ValueError(f"a lasso needs at least 3 vertices with as many x as y, got {len(xs)} x and {len(ys)} y")
    cand = select_box(xy, (xs.min(), xs.max()), (ys.min(), ys.max()))
    if not len(cand):
        return cand
    path = MplPath(np.column_stack([xs, ys]))
    g = LASSO_GRID
    lo = np.array([xs.min(), ys.min()])
    size = np.maximum(np.array([xs.max(), ys.max()]) - lo, 1e-12) / g
    cell = lambda p: np.clip(((p - lo) / size).astype(np.int64), 0, g - 1)  # noqa: E731
    a = np.column_stack([xs, ys])
    b = np.roll(a, -1, axis=0)
    inside_cell = _centres_inside(a, b, lo, size, g)
    # cells the edges cross: points along every edge at most a quarter cell apart, then their neighbours
    steps = np.maximum(1, np.ceil((np.abs(b - a) / size).max(1) * 4)).astype(np.int64)
    t = np.concatenate([np.linspace(0, 1, n + 1) for n in steps])
    edge = np.repeat(np.arange(len(a)), steps + 1)
    on = cell(a[edge] + t[:, None] * (b[edge] - a[edge]))
    border = np.zeros((g, g), dtype=bool)
    border[on[:, 0], on[:, 1]] = True
    border = binary_dilation(border, np.ones((3, 3), dtype=bool))
    pts = np.asarray(xy[cand], dtype=np.float64)
    c = cell(pts)
    near = border[c[:, 0], c[:, 1]]
    inside = inside_cell[c[:, 0], c[:, 1]]
    inside[near] = path.contains_points(pts[near])
    return cand[inside]
