"""2-D layouts: the strategic cluster graph (UMAP / t-SNE of importance vectors) and the concept map."""
from __future__ import annotations

import numpy as np

from engine.config import check_choice

LAYOUTS = ("umap", "tsne")


def embed_2d(x: np.ndarray, method: str = "umap", seed: int = 0) -> np.ndarray:
    """(n, d) → (n, 2) with UMAP or t-SNE (neighbourhoods shrunk for small n); n < 4 → first two dims."""
    check_choice("layout", method, LAYOUTS)
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    if n < 4:
        return np.pad(x[:, :2], ((0, 0), (0, max(0, 2 - x.shape[1])))).astype(np.float32)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perp = float(min(30.0, (n - 1) / 3))
        return TSNE(2, perplexity=perp, init="pca", random_state=seed).fit_transform(x).astype(np.float32)
    from engine.gap.projection import UMAPConfig, umap_2d

    return umap_2d(x, UMAPConfig(n_neighbors=min(15, n - 1), metric="euclidean", seed=seed, init="spectral"))


def concept_map(w: np.ndarray, seed: int = 0) -> np.ndarray:
    """Concept vectors (k, C) → (k, 2) by metric MDS on the cosine distance 1 − cos(W_i, W_j)."""
    from sklearn.manifold import MDS

    from engine.concepts.importance import cosine

    k = len(w)
    if k < 3:
        return np.stack([np.arange(k, dtype=np.float32), np.zeros(k, np.float32)], axis=1)
    dist = np.clip(1.0 - cosine(w, w), 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    dist = (dist + dist.T) / 2
    mds = MDS(n_components=2, metric="precomputed", init="classical_mds", random_state=seed, normalized_stress="auto")
    return mds.fit_transform(dist).astype(np.float32)
