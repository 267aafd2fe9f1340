"""In-memory 2-D maps of small point sets: PCA and UMAP of an (N, d) array (scikit-learn, umap-learn).

The modality-gap page's joint map of a whole cache is built once and stored by
``engine.gap.layout`` (``geolens gap build``); these are the plain fits other pages use on a few
thousand points (e.g. the atoms page).
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from engine.config import Config, check_choice, check_positive

PROJECTIONS = ("pca", "umap")
"""projection names: URL values, dropdown options and CLI choices"""
UMAP_METRICS = ("cosine", "euclidean")
UMAP_INITS = ("pca", "spectral", "random")


@dataclasses.dataclass
class UMAPConfig(Config):
    n_neighbors: int = 15
    """size of the local neighbourhood UMAP preserves"""
    min_dist: float = 0.1
    """how tightly UMAP packs neighbours in 2-D"""
    metric: str = "cosine"
    """distance in embedding space"""
    seed: int = 0
    """random_state (a seeded UMAP runs single-threaded, but reproducibly)"""
    init: str = "pca"
    """starting layout. UMAP's default, 'spectral', fails on a cache with a modality gap: its
    eigensolver finds too small an eigengap on the two-cone graph and gives up after about 75 s of
    the default cache's 86 s fit, then starts from random. 'pca' fits the same 8,000 points in 9 s."""

    def validate(self) -> None:
        check_positive("n_neighbors", self.n_neighbors)
        check_positive("min_dist", self.min_dist, allow_zero=True)
        check_choice("metric", self.metric, UMAP_METRICS)
        check_choice("init", self.init, UMAP_INITS)


def stack(img: np.ndarray, txt: np.ndarray) -> np.ndarray:
    """[img; txt] as one float32 array. (n, d), (m, d) -> (n + m, d)"""
    return np.ascontiguousarray(np.vstack([img, txt]), dtype=np.float32)


def pca_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """First two principal components of the centred rows. (N, d) -> (N, 2) float32"""
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(x).astype(np.float32)


def knn_graph(x: np.ndarray, k: int, metric: str = "cosine", block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of every row (itself included, at distance 0), in torch block by block.

    Returns (indices (N, k) int64, distances (N, k) float32), nearest first: cosine distance
    1 − cos or Euclidean, as UMAP's ``precomputed_knn`` takes them.
    """
    import torch

    check_choice("metric", metric, UMAP_METRICS)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if metric == "cosine":
        t = torch.nn.functional.normalize(t, dim=1)
    sq = (t * t).sum(1)
    k = min(k, len(t))
    idx = np.empty((len(t), k), dtype=np.int64)
    dist = np.empty((len(t), k), dtype=np.float32)
    for s in range(0, len(t), block):
        q = t[s:s + block]
        d = (sq[s:s + block, None] + sq[None] - 2 * q @ t.T).clamp_min(0)  # squared Euclidean
        d[torch.arange(len(q)), torch.arange(s, s + len(q))] = -1.0  # each row its own nearest
        near, i = torch.topk(d, k, dim=1, largest=False)
        near = near.clamp_min(0)
        idx[s:s + len(q)] = i.numpy()
        dist[s:s + len(q)] = (near / 2 if metric == "cosine" else near.sqrt()).numpy()  # |a−b|² = 2 − 2cos
    return idx, dist


def _cache_umap_kernels() -> None:
    """Keep the compiled code of UMAP's own numba kernels on disk (``NUMBA_CACHE_DIR``).

    umap-learn compiles ``smooth_knn_dist``, ``compute_membership_strengths`` and the layout
    epoch without numba's ``cache=True``, so each new process paid about 13 s for them. numba's
    ``Dispatcher.enable_caching`` turns its file cache on for a kernel not compiled yet.
    """
    from umap import layouts, umap_

    for module, name in ((umap_, "smooth_knn_dist"), (umap_, "compute_membership_strengths"),
                         (layouts, "_nb_optimize_layout_euclidean_single_epoch"), (layouts, "clip")):
        kernel = getattr(module, name, None)  # a later umap-learn may rename them: then it only costs time
        if hasattr(kernel, "enable_caching") and not kernel.signatures:
            kernel.enable_caching()


def warm_umap() -> float:
    """Compile every numba kernel the product's UMAP fits use, into numba's disk cache
    (``$NUMBA_CACHE_DIR``), by fitting both kinds on small random data; returns the seconds taken.

    ``make install`` runs it (``geolens warm``), so a first run does not spend its first minute
    compiling: measured here, a fresh process's first UMAP took 48 s on an empty cache and 7.6 s
    on a warm one (concept maps), 23 s and 10 s for the joint map.
    """
    import time

    t0 = time.perf_counter()
    x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    umap_2d(x, UMAPConfig())  # the joint map's: cosine, PCA start
    umap_2d(np.abs(x), UMAPConfig(metric="euclidean", init="spectral"))  # the concept maps'
    return time.perf_counter() - t0


def umap_2d(x: np.ndarray, cfg: UMAPConfig) -> np.ndarray:
    """UMAP of the rows. (N, d) -> (N, 2) float32

    The k-NN graph is exact (``knn_graph``), not pynndescent's: its numba kernels take the
    distance as a function argument, so they recompile in every process (about 60 s here), where
    the exact graph of 8,000 rows takes under a second.
    """
    import umap

    _cache_umap_kernels()
    if len(x) <= cfg.n_neighbors:
        raise ValueError(f"UMAP needs more than n_neighbors={cfg.n_neighbors} points, got {len(x)}; use PCA")
    idx, dist = knn_graph(x, cfg.n_neighbors, cfg.metric)
    model = umap.UMAP(n_components=2, n_neighbors=cfg.n_neighbors, min_dist=cfg.min_dist, metric=cfg.metric,
                      random_state=cfg.seed, init=cfg.init, n_jobs=1, precomputed_knn=(idx, dist, None))
    with warnings.catch_warnings():  # no search index: we never call transform
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        return model.fit_transform(x).astype(np.float32)


