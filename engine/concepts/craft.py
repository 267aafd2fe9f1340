"""CRAFT concept extraction (Fel et al. 2023; docs/METHODS.md §2): crops → activations → NMF.

Each image of the class is cut into p×p crops at stride ⌊0.8 p⌋, every crop is resized back to
the input size and passed through g: A_crops (n_crops, C) ≥ 0. NMF factorises
A_crops ≈ U W with k concepts; W (k, C) is the concept bank. An image's concept coefficients
are u = argmin_{u ≥ 0} ‖g(x) − u W‖ (NMF with W held fixed).
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import NMF, non_negative_factorization

from engine.concepts.classifiers import Classifier


def crop_positions(size: int, patch: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of the p×p crops at ``stride`` inside a size×size image."""
    if not 1 <= patch <= size:
        raise ValueError(f"patch size {patch} must be between 1 and the input size {size}")
    starts = list(range(0, size - patch + 1, max(1, stride)))
    return [(y, x) for y in starts for x in starts]


def make_crops(x: torch.Tensor, patch: int, stride: int) -> tuple[torch.Tensor, np.ndarray]:
    """(n, c, S, S) → crops resized to S, (n·P, c, S, S), and their (image, y, x) (n·P, 3), image-major."""
    n, _, s, _ = x.shape
    pos = crop_positions(s, patch, stride)
    crops = torch.stack([x[:, :, y:y + patch, x0:x0 + patch] for y, x0 in pos], dim=1)  # (n, P, c, p, p)
    crops = crops.flatten(0, 1)
    crops = F.interpolate(crops, size=(s, s), mode="bilinear", align_corners=False)
    index = np.array([(i, y, x0) for i in range(n) for y, x0 in pos], dtype=np.int32)
    return crops, index


@torch.no_grad()
def activations(clf: Classifier, x: torch.Tensor, batch: int = 256, spatial: bool = False) -> np.ndarray:
    """g(x) (n, C) — or the unpooled (n, C, h, w) when ``spatial`` — as float32 numpy."""
    from engine.device import pick_device

    dev = pick_device()
    clf.features.to(dev)
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(dev)
        a = clf.features(xb) if spatial else clf.g(xb)
        out.append(a.float().cpu())
    clf.features.cpu()
    return torch.cat(out).clamp_min_(0).numpy() if out else np.zeros((0, clf.head.in_features), np.float32)


@dataclasses.dataclass
class ConceptBank:
    """The NMF of one class's crop activations."""

    W: np.ndarray
    """(k, C) concept vectors."""
    U: np.ndarray
    """(n_crops, k) crop coefficients."""
    crop_index: np.ndarray
    """(n_crops, 3) image index, y, x of each crop."""
    patch: int
    stride: int
    recon_error: float
    """‖A − U W‖_F / ‖A‖_F on the crops."""


def relative_error(a: np.ndarray, u: np.ndarray, w: np.ndarray) -> float:
    """‖A − U W‖_F / ‖A‖_F."""
    denom = float(np.linalg.norm(a))
    return float(np.linalg.norm(a - u @ w)) / denom if denom > 0 else 0.0


def fit_nmf(a: np.ndarray, k: int, seed: int = 0, max_iter: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """A (n, C) ≥ 0 → U (n, k), W (k, C) with A ≈ U W (scikit-learn NMF, nndsvda init)."""
    if a.shape[0] < k:
        raise ValueError(f"{a.shape[0]} crops cannot give {k} concepts: lower --concepts or use more images")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter is expected and harmless
        nmf = NMF(n_components=k, init="nndsvda", max_iter=max_iter, random_state=seed)
        u = nmf.fit_transform(a.astype(np.float64))
    return u.astype(np.float32), nmf.components_.astype(np.float32)


def transform(a: np.ndarray, w: np.ndarray, max_iter: int = 500) -> np.ndarray:
    """u = argmin_{u ≥ 0} ‖A − u W‖ for every row of A (n, C), W (k, C) fixed → (n, k)."""
    if len(a) == 0:
        return np.zeros((0, w.shape[0]), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u, _, _ = non_negative_factorization(
            a.astype(np.float64), H=w.astype(np.float64), n_components=w.shape[0], init=None,
            update_H=False, max_iter=max_iter, tol=1e-6, solver="cd")
    return u.astype(np.float32)


def extract(clf: Classifier, x: torch.Tensor, k: int, patch: int, seed: int = 0,
            max_iter: int = 500, batch: int = 256) -> ConceptBank:
    """Crops of the class images x (n, c, S, S) → NMF concept bank with k concepts."""
    stride = max(1, int(0.8 * patch))
    crops, index = make_crops(x, patch, stride)
    a = activations(clf, crops, batch)
    u, w = fit_nmf(a, k, seed, max_iter)
    return ConceptBank(w, u, index, patch, stride, relative_error(a, u, w))


def heatmaps(clf: Classifier, x: torch.Tensor, w: np.ndarray, patch: int, batch: int = 256
             ) -> tuple[np.ndarray, dict]:
    """Where each concept is in each image: (n, gh, gw, k) coefficients and how to place the grid.

    Convolutional g: every spatial position's activation is projected on the bank ('spatial'
    grid covering the image). Flat g: dense crops at stride p/2 are projected ('crops' grid;
    cell (i, j) is the crop at (i·stride, j·stride) of size p).
    """
    n = len(x)
    probe = clf.g_spatial(x[:1])
    if probe is not None:
        a = activations(clf, x, batch, spatial=True)  # (n, C, h, w)
        _, c, h, wd = a.shape
        u = transform(a.transpose(0, 2, 3, 1).reshape(-1, c), w)
        return u.reshape(n, h, wd, -1), {"kind": "spatial", "patch": 0, "stride": 0}
    stride = max(1, patch // 2)
    crops, _ = make_crops(x, patch, stride)
    u = transform(activations(clf, crops, batch), w)
    g = len(range(0, x.shape[-1] - patch + 1, stride))
    return u.reshape(n, g, g, -1), {"kind": "crops", "patch": patch, "stride": stride}
