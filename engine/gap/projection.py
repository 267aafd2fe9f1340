"""In-memory 2-D maps of small point sets: PCA and UMAP of an (N, d) array (scikit-learn, umap-learn).

The modality-gap page's joint map of a whole cache is built once and stored by
``engine.gap.layout`` (``geolens gap build``); these are the plain fits other pages use on a few
thousand points (e.g. the atoms page).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from engine.config import Config, check_choice, check_positive

PROJECTIONS = ("pca", "umap")
"""projection names: URL values, dropdown options and CLI choices"""
UMAP_METRICS = ("cosine", "euclidean")


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

    def validate(self) -> None:
        check_positive("n_neighbors", self.n_neighbors)
        check_positive("min_dist", self.min_dist, allow_zero=True)
        check_choice("metric", self.metric, UMAP_METRICS)


def stack(img: np.ndarray, txt: np.ndarray) -> np.ndarray:
    """[img; txt] as one float32 array. (n, d), (m, d) -> (n + m, d)"""
    return np.ascontiguousarray(np.vstack([img, txt]), dtype=np.float32)


def pca_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """First two principal components of the centred rows. (N, d) -> (N, 2) float32"""
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(x).astype(np.float32)


def umap_2d(x: np.ndarray, cfg: UMAPConfig) -> np.ndarray:
    """UMAP of the rows. (N, d) -> (N, 2) float32"""
    import umap

    if len(x) <= cfg.n_neighbors:
        raise ValueError(f"UMAP needs more than n_neighbors={cfg.n_neighbors} points, got {len(x)}; use PCA")
    model = umap.UMAP(n_components=2, n_neighbors=cfg.n_neighbors, min_dist=cfg.min_dist,
                      metric=cfg.metric, random_state=cfg.seed, n_jobs=1)
    return model.fit_transform(x).astype(np.float32)
