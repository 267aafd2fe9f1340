"""Diversity, recognizability and originality (Boutin et al. 2022, 2024; docs/METHODS.md §4).

All functions take critic features of already preprocessed images (50×50, [0, 1],
binarised at 0.5; see ``engine.dvr.omniglot.to_ink``).

- diversity of class c = mean over feature dims d of the unbiased std over the S samples:
  ``div_c = 1/D · Σ_d std_s(f[c, s, d], ddof=1)``; a model's diversity = mean over classes.
- recognizability of class c = accuracy of a prototypical net in E fixed W-way 1-shot
  episodes: support = the exemplars of c and of W−1 other classes, query = one sample of c;
  correct iff the query is strictly nearest (squared Euclidean) to c's exemplar.
- originality of a sample = ‖(f_sample − f_exemplar) / σ‖₂ with σ a global (scalar) std of
  the reference features; recognizability per originality bin from the same episodes.
"""
from __future__ import annotations

import dataclasses

import numpy as np

WAY = 20
N_EPISODES = 500
EPISODE_SEED = 2022


def diversity_per_class(feats: np.ndarray) -> np.ndarray:
    """(C, S, D) SimCLR features -> (C,) mean over d of the unbiased std over samples."""
    if feats.ndim != 3 or feats.shape[1] < 2:
        raise ValueError(f"diversity needs (classes, samples >= 2, dims) features, got {feats.shape}")
    return feats.astype(np.float64).std(axis=1, ddof=1).mean(axis=1)


@dataclasses.dataclass(frozen=True)
class Episodes:
    """Fixed episodes: for class c and episode e, the W−1 distractor classes and a query draw.

    others: (C, E, W−1) int class indices (never c); u: (C, E) uniforms in [0, 1) that pick
    the query sample as ``floor(u · S)`` so the same episodes serve any sample count S.
    """

    others: np.ndarray
    u: np.ndarray

    def query_index(self, n_samples: int) -> np.ndarray:  # (C, E)
        return np.minimum((self.u * n_samples).astype(np.int64), n_samples - 1)


def make_episodes(n_classes: int, way: int = WAY, n_episodes: int = N_EPISODES, seed: int = EPISODE_SEED) -> Episodes:
    """Episodes fixed by (n_classes, way, n_episodes, seed): every model meets the same ones."""
    if n_classes < 2:
        raise ValueError("recognizability needs >= 2 classes")
    way = min(way, n_classes)
    rng = np.random.default_rng([seed, n_classes, way, n_episodes])
    others = np.empty((n_classes, n_episodes, way - 1), dtype=np.int64)
    for c in range(n_classes):
        pool = np.delete(np.arange(n_classes), c)  # (C-1,)
        keys = rng.random((n_episodes, len(pool)))
        others[c] = pool[np.argsort(keys, axis=1)[:, : way - 1]]
    return Episodes(others, rng.random((n_classes, n_episodes)))


def episode_correct(sample_emb: np.ndarray, exemplar_emb: np.ndarray, episodes: Episodes) -> tuple[np.ndarray, np.ndarray]:
    """Prototypical-net 1-shot decisions in every episode.

    sample_emb: (C, S, D) embeddings of the samples; exemplar_emb: (C, D) of the exemplars.
    Returns correct (C, E) bool and the query sample index (C, E).
    """
    c_n, s_n, _ = sample_emb.shape
    q = sample_emb.astype(np.float64)
    e = exemplar_emb.astype(np.float64)
    # squared distance of every sample to every exemplar: (C, S, C)
    d2 = (q ** 2).sum(-1)[..., None] - 2 * q @ e.T + (e ** 2).sum(-1)[None, None, :]
    qi = episodes.query_index(s_n)  # (C, E)
    cls = np.arange(c_n)[:, None]
    d_row = d2[cls, qi]  # (C, E, C): distances of each episode's query to all exemplars
    own = d_row[cls, np.arange(qi.shape[1])[None, :], cls]  # (C, E)
    rival = np.take_along_axis(d_row, episodes.others, axis=2).min(axis=2)  # (C, E)
    return own < rival, qi


def recognizability_per_class(sample_emb: np.ndarray, exemplar_emb: np.ndarray, episodes: Episodes) -> np.ndarray:
    """(C,) fraction of class c's episodes the prototypical net gets right."""
    correct, _ = episode_correct(sample_emb, exemplar_emb, episodes)
    return correct.mean(axis=1)


def feature_scale(reference_feats: np.ndarray) -> float:
    """The global std σ of reference SimCLR features (all entries pooled, ddof=1)."""
    s = float(np.std(reference_feats.astype(np.float64), ddof=1))
    return s if s > 0 else 1.0


def originality(sample_feats: np.ndarray, exemplar_feats: np.ndarray, scale: float) -> np.ndarray:
    """(C, S, D), (C, D) -> (C, S): ‖(f_sample − f_exemplar) / σ‖₂."""
    return np.linalg.norm((sample_feats - exemplar_feats[:, None, :]) / scale, axis=-1)


def bin_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """n_bins equal-width bins over [0, max(values)] (one shared axis for all models)."""
    top = float(np.max(values)) if len(values) else 1.0
    return np.linspace(0.0, top if top > 0 else 1.0, n_bins + 1)


def recognizability_by_originality(orig_of_query: np.ndarray, correct: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy of episodes grouped by their query's originality bin.

    orig_of_query, correct: (N,) per-episode values. Returns (accuracy (B,), count (B,));
    accuracy is NaN in empty bins. The last bin includes its right edge.
    """
    b = np.clip(np.searchsorted(edges, orig_of_query, side="right") - 1, 0, len(edges) - 2)
    count = np.bincount(b, minlength=len(edges) - 1)
    hits = np.bincount(b, weights=correct.astype(np.float64), minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, hits / np.maximum(count, 1), np.nan)
    return acc, count


def distance_to_human(div: np.ndarray, rec: np.ndarray, human: tuple[float, float],
                      scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Euclidean distance of (diversity, recognizability) points to the human point, each axis divided by ``scale``."""
    return np.hypot((div - human[0]) / scale[0], (rec - human[1]) / scale[1])
