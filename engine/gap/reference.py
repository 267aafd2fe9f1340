"""NumPy reference implementations of the modality-gap measures (docs/METHODS.md §1).

The engine computes these numbers in torch (``engine.gap.metrics``, on the engine's device);
this module keeps the plain float64/float32 NumPy versions they are tested against
(tests/test_gap_metrics.py) and that ``bench/scale.py`` times as the baseline. Nothing in the
engine or the pages calls it.

Inputs are two aligned arrays ``img (n, d)`` and ``txt (n, d)``: row i of both is pair i.
"""
from __future__ import annotations

import dataclasses

import numpy as np

KS = (1, 5, 10)
"""recall@k cut-offs shown everywhere"""
BATCH = 256
"""retrieval batch size used by the Iso-Energy authors"""
MAX_W = 10_000
"""largest sample per modality fed to the exact OT solver"""


def _check_pairs(img: np.ndarray, txt: np.ndarray) -> None:
    if img.ndim != 2 or txt.ndim != 2 or img.shape != txt.shape:
        raise ValueError(f"expected aligned (n, d) arrays, got image {img.shape} and text {txt.shape}")
    if len(img) == 0:
        raise ValueError("no pairs: the cache holds no image with its caption")


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero). (n, d) -> (n, d) float64."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def subsample(x: np.ndarray, max_n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_n`` rows drawn without replacement (seeded), in their original order.

    Returns (rows (m, d), indices (m,)). Two arrays of the same length get the same indices
    from the same seed, so aligned pairs stay aligned.
    """
    if max_n <= 0:
        raise ValueError(f"max_n must be > 0, got {max_n}")
    if len(x) <= max_n:
        return x, np.arange(len(x))
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=max_n, replace=False))
    return x[idx], idx


# ----------------------------------------------------------------------------- gap measures
def centroid_distance(img: np.ndarray, txt: np.ndarray) -> float:
    """DiM = ‖mean(img) − mean(txt)‖₂."""
    return float(np.linalg.norm(np.mean(img, axis=0, dtype=np.float64) - np.mean(txt, axis=0, dtype=np.float64)))


def gap_direction(img: np.ndarray, txt: np.ndarray) -> np.ndarray:
    """Unit vector along Δ = mean(img) − mean(txt). (d,)"""
    delta = np.mean(img, axis=0, dtype=np.float64) - np.mean(txt, axis=0, dtype=np.float64)
    norm = np.linalg.norm(delta)
    if norm == 0:
        raise ValueError("the two centroids coincide: there is no gap direction")
    return delta / norm


def gap_projection(x: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Coordinate of every row along the (unit) gap direction, ⟨x_i, u⟩. (n, d), (d,) -> (n,)"""
    return np.asarray(x, dtype=np.float64) @ np.asarray(direction, dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class Wasserstein:
    value: float
    """exact OT cost, uniform weights, cost 1 − cos"""
    n_img: int
    """image points the solver saw"""
    n_txt: int
    """text points the solver saw"""
    subsampled: bool
    """True when either modality was cut down to ``max_n`` points"""


def wasserstein(img: np.ndarray, txt: np.ndarray, max_n: int = MAX_W, seed: int = 0) -> Wasserstein:
    """W = min_π Σ π_ij (1 − cos(x_i, y_j)) over couplings of the uniform measures (POT ``ot.emd2``).

    Each modality is subsampled (seeded) to at most ``max_n`` points first; the solver is
    exact, O(n³) time and O(n²) memory, so 10k points take minutes.
    """
    import ot

    a, _ = subsample(img, max_n, seed)
    b, _ = subsample(txt, max_n, seed)
    cost = 1.0 - normalise(a) @ normalise(b).T  # (m, m') float64
    np.clip(cost, 0.0, 2.0, out=cost)
    wa, wb = np.full(len(a), 1.0 / len(a)), np.full(len(b), 1.0 / len(b))
    value, log = ot.emd2(wa, wb, cost, numItermax=1_000_000_000, log=True)
    if log.get("warning"):
        raise RuntimeError(f"exact OT did not converge: {log['warning']}")
    return Wasserstein(float(value), len(a), len(b), len(a) < len(img) or len(b) < len(txt))


def mean_pair_cosine(img: np.ndarray, txt: np.ndarray) -> float:
    """mean_i cos(img_i, txt_i), the similarity of true pairs."""
    _check_pairs(img, txt)
    return float(np.mean(np.sum(normalise(img) * normalise(txt), axis=1)))


def mean_intra_cosine(x: np.ndarray) -> float:
    """Mean cosine over all pairs i ≠ j of one modality (the "cone").

    With unit rows u_i: Σ_{i≠j} u_i·u_j = ‖Σ u_i‖² − Σ ‖u_i‖², so this is O(n d), not O(n² d).
    """
    u = normalise(x)
    n = len(u)
    if n < 2:
        raise ValueError("the intra-modality cosine needs at least 2 points")
    total = u.sum(axis=0)
    off = float(total @ total) - float(np.sum(u * u))
    return off / (n * (n - 1))


# ----------------------------------------------------------------------------- retrieval
def rank_counts(queries: np.ndarray, gallery: np.ndarray, truth: np.ndarray,
                chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For each query q, how many gallery items score higher than its true match, and how many tie.

    queries (m, d), gallery (n, d), truth (m,) index of each query's match in the gallery.
    Scores are cosines. Returns (greater (m,), ties (m,)), ties excluding the match itself.
    """
    q, g = normalise(queries).astype(np.float32), normalise(gallery).astype(np.float32)
    greater, ties = np.empty(len(q), np.int64), np.empty(len(q), np.int64)
    for s in range(0, len(q), chunk):
        sims = q[s:s + chunk] @ g.T  # (c, n)
        true = sims[np.arange(len(sims)), truth[s:s + chunk]][:, None]
        greater[s:s + chunk] = np.count_nonzero(sims > true, axis=1)
        ties[s:s + chunk] = np.count_nonzero(sims == true, axis=1) - 1
    return greater, ties


def recall_from_counts(greater: np.ndarray, ties: np.ndarray, ks=KS) -> dict[str, float]:
    """recall@k with ties broken uniformly at random, in expectation.

    With g items strictly above the match and e others tied with it, the match lands in the
    top k with probability clip((k − g) / (e + 1), 0, 1).
    """
    out = {}
    for k in ks:
        p = np.clip((k - greater) / (ties + 1.0), 0.0, 1.0)
        out[f"R@{k}"] = float(np.mean(p))
    return out


def _both_ways(i2t: dict, t2i: dict) -> dict:
    return {"image_to_text": i2t, "text_to_image": t2i,
            "mean": {k: (i2t[k] + t2i[k]) / 2 for k in i2t}}


def recall_full(img: np.ndarray, txt: np.ndarray, ks=KS) -> dict:
    """recall@k against the whole gallery, image→text, text→image and their mean."""
    _check_pairs(img, txt)
    truth = np.arange(len(img))
    return _both_ways(recall_from_counts(*rank_counts(img, txt, truth), ks),
                      recall_from_counts(*rank_counts(txt, img, truth), ks))


def recall_batched(img: np.ndarray, txt: np.ndarray, ks=KS, batch: int = BATCH, seed: int = 0) -> dict:
    """recall@k inside random batches of ``batch`` pairs, as the Iso-Energy authors compute it.

    The pairs are shuffled (seeded) and cut into consecutive batches (the last one may be
    smaller, as a DataLoader without drop_last); each query competes only with its batch.
    The mean is over all queries.
    """
    _check_pairs(img, txt)
    perm = np.random.default_rng(seed).permutation(len(img))
    counts = {"i2t": ([], []), "t2i": ([], [])}
    for s in range(0, len(perm), batch):
        rows = perm[s:s + batch]
        truth = np.arange(len(rows))
        for key, (q, g) in {"i2t": (img, txt), "t2i": (txt, img)}.items():
            gr, ti = rank_counts(q[rows], g[rows], truth)
            counts[key][0].append(gr)
            counts[key][1].append(ti)
    i2t, t2i = (recall_from_counts(np.concatenate(counts[k][0]), np.concatenate(counts[k][1]), ks)
                for k in ("i2t", "t2i"))
    return _both_ways(i2t, t2i)


def top_k_cosine(query: np.ndarray, gallery: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The k gallery rows most cosine-similar to ``query``: (indices (k,), cosines (k,)), best first."""
    sims = normalise(gallery) @ normalise(np.atleast_2d(query))[0]  # (n,)
    k = min(k, len(sims))
    top = np.argpartition(-sims, k - 1)[:k]
    top = top[np.argsort(-sims[top], kind="stable")]
    return top, sims[top]
