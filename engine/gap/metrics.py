"""Modality-gap measures and cross-modal retrieval (docs/METHODS.md §1), in torch on the engine's device.

Inputs are two aligned arrays ``img (n, d)`` and ``txt (n, d)``: row i of both is pair i.
Functions that speak of cosines normalise rows themselves, so they also accept the
un-normalised reconstructions of an SAE; DiM and the gap direction use the arrays as given.

Every function runs on ``device`` (default ``engine.device.pick_device()``: CUDA when present,
else the CPU) and works in row chunks, so memory stays bounded whatever n is:

- the quadratic steps (recall: cosines of queries against a gallery) run in float32, in blocks
  of at most ``BLOCK`` scores (``RANK_BLOCK`` for full-gallery ranking); rows are normalised in
  float64 first, as the NumPy reference does;
- the linear steps (centroids, pair and intra-modality cosines, the gap projection, the OT cost
  matrix, one query's neighbours) accumulate in float64, chunk by chunk: they are memory-bound,
  so the wider type costs little and keeps the hand-computed values exact to 1e-12.

Full-gallery recall is O(n² d). It is exact up to ``exact_limit(d, device)`` pairs (about a
minute of work on that device); beyond, it is exact for a seeded sample of queries against the
whole gallery and says so: ``exact``, ``queries`` and a 95 % Wilson ``interval`` per value.
The NumPy versions live in ``engine.gap.reference`` as test references and bench baselines.
"""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import torch

from engine.core.progress import ProgressFn, Tracker
from engine.device import pick_device

KS = (1, 5, 10)
"""recall@k cut-offs shown everywhere"""
BATCH = 256
"""retrieval batch size used by the Iso-Energy authors"""
MAX_W = 10_000
"""largest sample per modality fed to the exact OT solver"""
BLOCK = 1 << 25
"""most float32 scores held at once (128 MB), whatever the gallery size"""
RANK_BLOCK = 1 << 28
"""most float32 scores held at once when ranking queries against a whole gallery (1 GB): the product
needs a few hundred queries at a time to stop being bound by reading the gallery (measured on the
2-core CPU, 512 queries against 10⁶ rows at d = 512: 33 queries per product 45.7 s, 128 29.3 s,
256 26.1 s, 512 23.0 s)"""
ROWS = 1 << 15
"""rows per chunk of the linear (float64) passes"""

REF_DIM = 512
"""width at which ``EXACT_PAIRS`` is stated"""
EXACT_PAIRS = {
    "cpu": 15_000,
    "cuda": 400_000,
    "mps": 40_000,
}
"""Pairs whose exact full-gallery recall (both directions) the device does in about 60 s at d = 512.

cpu: measured on the project's 2-core AMD EPYC, shared by other jobs (load average ~15): exact
recall of 10,000 pairs at d = 512 took 27 s, so 60 s is 10k · √(60/27) ≈ 15k pairs (README has
the ``bench/scale.py --exact-limit`` runs). On an idle machine it does more; the value errs low,
and beyond it the sample's interval says how close the number is. cuda and mps: conservative
guesses, NOT yet measured (an H200 should rank 1M pairs in under a minute); measure with
``bench/scale.py --exact-limit --device cuda`` and update. The cost grows as n² d, so other
widths scale by ``sqrt(REF_DIM / max(d, 64))``.
"""
MIN_QUERIES = 1_000
"""fewest sampled queries when the gallery is beyond the exact limit"""
Z95 = 1.959963984540054
"""two-sided 95 % normal quantile"""


def device_of(device: str | torch.device | None = None) -> torch.device:
    """The device a metric runs on: ``device`` if given, else ``pick_device()`` (CUDA, then CPU)."""
    return device if isinstance(device, torch.device) else pick_device(device)


def _check_pairs(img: np.ndarray, txt: np.ndarray) -> None:
    if img.ndim != 2 or txt.ndim != 2 or img.shape != txt.shape:
        raise ValueError(f"expected aligned (n, d) arrays, got image {img.shape} and text {txt.shape}")
    if len(img) == 0:
        raise ValueError("no pairs: the cache holds no image with its caption")


def _tensor(a, dev: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A NumPy block as a tensor on ``dev`` (no copy when it is already float32 on the CPU)."""
    if torch.is_tensor(a):
        return a.to(dev, dtype)
    a = np.ascontiguousarray(a)
    with warnings.catch_warnings():  # read-only memory maps: we never write into them
        warnings.filterwarnings("ignore", message=".*not writable.*")
        t = torch.from_numpy(a)
    return t.to(dev, dtype)


def _unit64(block, dev: torch.device) -> torch.Tensor:
    """Rows of a block scaled to unit norm in float64 (zero rows stay zero)."""
    x = _tensor(block, dev, torch.float64)
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return x / torch.where(norm > 0, norm, torch.ones_like(norm))


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero). (n, d) -> (n, d) float64, NumPy."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def unit_rows(x, device: str | torch.device | None = None) -> torch.Tensor:
    """(n, d) rows normalised (in float64, chunk by chunk) and stored as float32 on the device.

    This is the form every cosine search takes; pass the result instead of an array to
    ``rank_counts``, ``top_k_cosine`` or ``neighbours`` to normalise a gallery only once.
    """
    dev = device_of(device)
    x = x if torch.is_tensor(x) else np.asarray(x)
    n, d = x.shape
    out = torch.empty((n, d), dtype=torch.float32, device=dev)
    for s in range(0, n, ROWS):
        out[s:s + ROWS] = _unit64(x[s:s + ROWS], dev).float()
    return out


def as_unit_rows(x: np.ndarray, device=None, tol: float = 1e-4) -> torch.Tensor:
    """``unit_rows(x)``, but without a copy when ``x`` already holds float32 unit rows and the
    device is the CPU (embedding caches store L2-normalised rows): then a view of ``x``."""
    dev = device_of(device)
    x = np.asarray(x)
    if dev.type == "cpu" and x.dtype == np.float32 and x.flags.c_contiguous:
        unit = all(np.abs(np.einsum("ij,ij->i", x[s:s + ROWS], x[s:s + ROWS]) - 1.0).max(initial=0.0) < tol
                   for s in range(0, len(x), ROWS))
        if unit:
            return _tensor(x, dev, torch.float32)
    return unit_rows(x, dev)


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
def _column_sum(x, dev: torch.device, unit: bool = False) -> torch.Tensor:
    """Σ_i x_i (or Σ_i x_i/‖x_i‖) in float64, chunk by chunk. (d,)"""
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=dev)
    for s in range(0, len(x), ROWS):
        block = _unit64(x[s:s + ROWS], dev) if unit else _tensor(x[s:s + ROWS], dev, torch.float64)
        total += block.sum(0)
    return total


def _delta(img, txt, dev: torch.device) -> torch.Tensor:
    return _column_sum(img, dev) / len(img) - _column_sum(txt, dev) / len(txt)


def centroid_distance(img: np.ndarray, txt: np.ndarray, device=None) -> float:
    """DiM = ‖mean(img) − mean(txt)‖₂."""
    return float(torch.linalg.vector_norm(_delta(img, txt, device_of(device))))


def gap_direction(img: np.ndarray, txt: np.ndarray, device=None) -> np.ndarray:
    """Unit vector along Δ = mean(img) − mean(txt). (d,) float64"""
    delta = _delta(img, txt, device_of(device))
    norm = float(torch.linalg.vector_norm(delta))
    if norm == 0:
        raise ValueError("the two centroids coincide: there is no gap direction")
    return (delta / norm).cpu().numpy()


def gap_projection(x: np.ndarray, direction: np.ndarray, device=None) -> np.ndarray:
    """Coordinate of every row along the (unit) gap direction, ⟨x_i, u⟩. (n, d), (d,) -> (n,) float64"""
    dev = device_of(device)
    u = _tensor(np.asarray(direction, dtype=np.float64), dev, torch.float64)
    out = np.empty(len(x), dtype=np.float64)
    for s in range(0, len(x), ROWS):
        out[s:s + ROWS] = (_tensor(x[s:s + ROWS], dev, torch.float64) @ u).cpu().numpy()
    return out


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


def wasserstein(img: np.ndarray, txt: np.ndarray, max_n: int = MAX_W, seed: int = 0, device=None) -> Wasserstein:
    """W = min_π Σ π_ij (1 − cos(x_i, y_j)) over couplings of the uniform measures (POT ``ot.emd2``).

    Each modality is subsampled (seeded) to at most ``max_n`` points first; the cost matrix is
    computed on the device (float64), the solver is exact on the CPU, O(n³) time and O(n²)
    memory, so 10k points take minutes.
    """
    import ot

    dev = device_of(device)
    a, _ = subsample(img, max_n, seed)
    b, _ = subsample(txt, max_n, seed)
    cost = (1.0 - _unit64(a, dev) @ _unit64(b, dev).T).clamp_(0.0, 2.0).cpu().numpy()  # (m, m') float64
    wa, wb = np.full(len(a), 1.0 / len(a)), np.full(len(b), 1.0 / len(b))
    value, log = ot.emd2(wa, wb, cost, numItermax=1_000_000_000, log=True)
    if log.get("warning"):
        raise RuntimeError(f"exact OT did not converge: {log['warning']}")
    return Wasserstein(float(value), len(a), len(b), len(a) < len(img) or len(b) < len(txt))


def mean_pair_cosine(img: np.ndarray, txt: np.ndarray, device=None) -> float:
    """mean_i cos(img_i, txt_i), the similarity of true pairs."""
    _check_pairs(img, txt)
    dev = device_of(device)
    total = 0.0
    for s in range(0, len(img), ROWS):
        total += float((_unit64(img[s:s + ROWS], dev) * _unit64(txt[s:s + ROWS], dev)).sum())
    return total / len(img)


def mean_intra_cosine(x: np.ndarray, device=None) -> float:
    """Mean cosine over all pairs i ≠ j of one modality (the "cone").

    With unit rows u_i: Σ_{i≠j} u_i·u_j = ‖Σ u_i‖² − Σ ‖u_i‖², so this is O(n d), not O(n² d).
    """
    n = len(x)
    if n < 2:
        raise ValueError("the intra-modality cosine needs at least 2 points")
    dev = device_of(device)
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=dev)
    squares = 0.0
    for s in range(0, n, ROWS):
        u = _unit64(x[s:s + ROWS], dev)
        total += u.sum(0)
        squares += float((u * u).sum())
    return (float(total @ total) - squares) / (n * (n - 1))


@dataclasses.dataclass(frozen=True)
class Probe:
    accuracy: float
    """held-out accuracy of a logistic regression telling image (1) from text (0)"""
    n_train: int
    """training points (both modalities)"""
    n_test: int
    """held-out points (both modalities)"""
    subsampled: bool
    """True when fewer than all pairs were used"""


def probe_accuracy(img: np.ndarray, txt: np.ndarray, test_fraction: float = 0.3,
                   max_n: int = MAX_W, seed: int = 0) -> Probe:
    """Held-out accuracy of a linear probe (scikit-learn logistic regression) for the modality.

    Pairs, not points, are split into train and test, so a caption is never scored when its own
    image was trained on. At most ``max_n`` pairs are used (seeded subsample); the fit is small
    and stays in scikit-learn on the CPU.
    """
    from sklearn.linear_model import LogisticRegression

    _check_pairs(img, txt)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    _, idx = subsample(img, max_n, seed)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(idx)
    n_test = int(round(len(idx) * test_fraction))
    if n_test < 1 or n_test >= len(idx):
        raise ValueError(f"{len(idx)} pairs are too few for a held-out probe; need at least 2")
    test, train = idx[:n_test], idx[n_test:]

    def stack(rows):  # (2m, d), (2m,)
        return np.vstack([img[rows], txt[rows]]), np.r_[np.ones(len(rows)), np.zeros(len(rows))]

    xtr, ytr = stack(train)
    xte, yte = stack(test)
    clf = LogisticRegression(max_iter=2000).fit(xtr, ytr)
    acc = float(np.mean(clf.predict(xte) == yte))
    return Probe(acc, len(xtr), len(xte), len(idx) < len(img))


# ----------------------------------------------------------------------------- retrieval
def _above_and_tied(sims: torch.Tensor, true: torch.Tensor, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row (``dim``) of a score block: how many scores exceed ``true`` and how many equal it.

    On CUDA this is ``torch.count_nonzero``. On the CPU torch's boolean reductions were 10×
    slower than NumPy's here (0.94 s vs 0.08 s for 2048 × 10000 scores on the project's
    2-core EPYC), so the same counts are taken with NumPy on the tensor's memory (no copy).
    """
    if sims.device.type == "cpu":
        s, t = sims.numpy(), true.numpy()
        return np.count_nonzero(s > t, axis=dim), np.count_nonzero(s == t, axis=dim)
    return (torch.count_nonzero(sims > true, dim=dim).cpu().numpy(),
            torch.count_nonzero(sims == true, dim=dim).cpu().numpy())


def rank_counts(queries, gallery, truth: np.ndarray, chunk: int | None = None, device=None,
                progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each query q, how many gallery items score higher than its true match, and how many tie.

    queries (m, d), gallery (n, d) arrays (or ``unit_rows`` tensors), truth (m,) index of each
    query's match in the gallery. Scores are float32 cosines, ``chunk`` queries at a time
    (default: as many as keep a block within ``RANK_BLOCK`` scores). Returns (greater (m,), ties (m,))
    as int64 NumPy arrays, ties excluding the match itself.
    """
    dev = device_of(device)
    g = gallery if torch.is_tensor(gallery) else unit_rows(gallery, dev)
    m = len(queries)
    truth_t = torch.as_tensor(np.asarray(truth), dtype=torch.long, device=dev)
    c = chunk or max(1, RANK_BLOCK // max(1, len(g)))
    greater, ties = np.empty(m, np.int64), np.empty(m, np.int64)
    track = Tracker(m, "query", "full-gallery recall", sink=progress) if progress else None
    for s in range(0, m, c):
        q = queries[s:s + c].to(dev) if torch.is_tensor(queries) else unit_rows(queries[s:s + c], dev)
        sims = q @ g.T  # (c, n) float32
        true = sims.gather(1, truth_t[s:s + c, None])
        above, tied = _above_and_tied(sims, true, 1)
        greater[s:s + c], ties[s:s + c] = above, tied - 1
        if track:
            track.update(min(m, s + c))
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


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed on ``n`` trials (95 % by default).

    Recall with ties in expectation is a mean of values in [0, 1], whose variance is at most
    p(1 − p), so the binomial interval is valid (conservative) for it too.
    """
    if n < 1:
        raise ValueError(f"an interval needs at least one trial, got n={n}")
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _both_ways(i2t: dict, t2i: dict, queries: int, exact: bool) -> dict:
    out = {"image_to_text": i2t, "text_to_image": t2i, "mean": {k: (i2t[k] + t2i[k]) / 2 for k in i2t},
           "exact": exact, "queries": int(queries), "interval": None}
    if not exact:
        # the mean's interval uses n = queries: Var((a + b)/2) ≤ p̄(1 − p̄)/n by concavity, so it is conservative
        out["interval"] = {d: {k: list(wilson(v, queries)) for k, v in out[d].items()}
                           for d in ("image_to_text", "text_to_image", "mean")}
    return out


def exact_limit(d: int, device=None) -> int:
    """Largest number of pairs whose exact full-gallery recall this device does in about 60 s."""
    dev = device_of(device)
    base = EXACT_PAIRS.get(dev.type, EXACT_PAIRS["cpu"])
    return int(base * math.sqrt(REF_DIM / max(int(d), 64)))


def query_sample(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """Query rows of a full-gallery recall: all n when n ≤ limit, else a seeded sorted sample
    of max(MIN_QUERIES, limit²/n) (the same number of scores as the exact run at the limit)."""
    if n <= limit:
        return np.arange(n)
    m = min(n, max(MIN_QUERIES, limit * limit // n))
    return np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))


def recall_full(img: np.ndarray, txt: np.ndarray, ks=KS, max_exact: int | None = None, seed: int = 0,
                device=None, progress: ProgressFn | None = None) -> dict:
    """recall@k against the whole gallery, image→text, text→image and their mean.

    Exact when n ≤ ``max_exact`` (default ``exact_limit(d, device)``); beyond, every query of a
    seeded sample (``query_sample``) is ranked against the whole gallery. The result says which:
    ``exact``, ``queries`` (how many were ranked) and ``interval`` (95 % Wilson, None if exact).
    """
    _check_pairs(img, txt)
    dev = device_of(device)
    limit = exact_limit(img.shape[1], dev) if max_exact is None else int(max_exact)
    rows = query_sample(len(img), limit, seed)
    exact = len(rows) == len(img)
    counts = []
    for q, g in ((img, txt), (txt, img)):
        gallery = unit_rows(g, dev)
        counts.append(rank_counts(q if exact else q[rows], gallery, rows, device=dev, progress=progress))
        del gallery
    return _both_ways(recall_from_counts(*counts[0], ks), recall_from_counts(*counts[1], ks), len(rows), exact)


def recall_batched(img: np.ndarray, txt: np.ndarray, ks=KS, batch: int = BATCH, seed: int = 0, device=None) -> dict:
    """recall@k inside random batches of ``batch`` pairs, as the Iso-Energy authors compute it.

    The pairs are shuffled (seeded) and cut into consecutive batches (the last one may be
    smaller, as a DataLoader without drop_last); each query competes only with its batch.
    The mean is over all queries. Whole batches are scored together (one ``bmm`` per chunk);
    text→image uses the transpose of the same cosine matrix.
    """
    _check_pairs(img, txt)
    dev = device_of(device)
    n = len(img)
    perm = np.random.default_rng(seed).permutation(n)
    counts = {key: (np.empty(n, np.int64), np.empty(n, np.int64)) for key in ("i2t", "t2i")}
    per_chunk = max(1, BLOCK // (batch * batch)) * batch  # whole batches per chunk
    n_full = n // batch * batch
    for s, e in [(s, min(n_full, s + per_chunk)) for s in range(0, n_full, per_chunk)] + (
            [(n_full, n)] if n_full < n else []):
        rows = perm[s:e]
        b = min(batch, e - s)
        qi = unit_rows(img[rows], dev).view(-1, b, img.shape[1])
        qt = unit_rows(txt[rows], dev).view(-1, b, img.shape[1])
        sims = torch.bmm(qi, qt.transpose(1, 2))  # (G, b, b): [g, i, j] = cos(image i, text j)
        diag = sims.diagonal(dim1=1, dim2=2)  # (G, b)
        for key, dim, true in (("i2t", 2, diag[:, :, None]), ("t2i", 1, diag[:, None, :])):
            above, tied = _above_and_tied(sims, true, dim)
            counts[key][0][s:e], counts[key][1][s:e] = above.reshape(-1), tied.reshape(-1) - 1
    return _both_ways(recall_from_counts(*counts["i2t"], ks), recall_from_counts(*counts["t2i"], ks), n, True)


def top_k_cosine(query: np.ndarray, gallery, k: int = 10, device=None) -> tuple[np.ndarray, np.ndarray]:
    """The k gallery rows most cosine-similar to ``query``: (indices (k,), cosines (k,)), best first.

    ``gallery`` is an array (cosines in float64) or a ``unit_rows`` tensor (float32, no renormalising).
    """
    idx, cos, _ = neighbours(query, gallery, k, device=device)
    return idx, cos


def neighbours(query: np.ndarray, gallery, k: int = 10, partner: int | None = None,
               device=None) -> tuple[np.ndarray, np.ndarray, tuple[int, float] | None]:
    """``top_k_cosine`` plus, if ``partner`` is a gallery row, (rows scoring strictly above it, its cosine).

    Returns (indices (k,), cosines (k,), (above, partner cosine) or None), best first; ties keep
    the lower index first.
    """
    dev = device_of(device)
    if torch.is_tensor(gallery):
        q = _unit64(np.atleast_2d(query), dev).float()[0]
        sims = gallery.to(dev) @ q  # (n,) float32
    else:
        q = _unit64(np.atleast_2d(query), dev)[0]
        sims = torch.cat([_unit64(gallery[s:s + ROWS], dev) @ q for s in range(0, len(gallery), ROWS)])
    k = min(k, len(sims))
    # a stable descending sort of the top candidates: topk, then order by (−cos, index)
    top = torch.topk(sims, k).indices.cpu().numpy()
    vals = sims[torch.as_tensor(top, device=dev)].cpu().numpy()
    order = np.lexsort((top, -vals))
    about = None if partner is None else (int(torch.count_nonzero(sims > sims[int(partner)])), float(sims[int(partner)]))
    return top[order], vals[order], about
