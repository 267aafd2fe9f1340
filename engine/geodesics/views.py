"""Arrays the geodesics page draws: heatmaps over the toy window and decoded image strips."""
from __future__ import annotations

import numpy as np
import torch

from engine.geodesics import data as D
from engine.geodesics.metrics import Metric
from engine.geodesics.spaces import Space


def density_grid(space: Space, nx: int = 120, ny: int = 75) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xs (nx,), ys (ny,), p(x) / max p on the toy window (ny, nx)."""
    xs, ys, pts = D.grid(nx=nx, ny=ny)
    with torch.no_grad():
        p = space.mixture.prob(pts) / space.p_max
    return xs, ys, p.reshape(ny, nx).numpy()


def metric_grid(metric: Metric, nx: int = 120, ny: int = 75) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xs, ys, log10 λ(x) (mean of the diagonal for diagonal metrics) on the toy window (ny, nx)."""
    xs, ys, pts = D.grid(nx=nx, ny=ny)
    with torch.no_grad():
        lam = metric.lam(pts)
    return xs, ys, np.log10(lam.clamp_min(1e-12).numpy()).reshape(ny, nx)


def strip(space: Space, path: np.ndarray, frames: int = 10) -> np.ndarray:
    """Decode ``frames`` evenly spaced points of a latent path (T, d) into one image (32, 32·frames)."""
    idx = np.linspace(0, len(path) - 1, frames).round().astype(int)
    imgs = space.decode(torch.as_tensor(path[idx]))  # (frames, 32, 32)
    return np.concatenate(list(np.clip(imgs, 0, 1)), axis=1)


def true_strip(label: int, a0: float, a1: float, frames: int = 10) -> np.ndarray:
    """The character actually rotated from a0 to a1, ``frames`` images side by side (32, 32·frames)."""
    angles = D.rotation_path_angles(a0, a1, frames)
    imgs = D.rotate_images(D.render_character(D.CHARACTERS[label]), angles)
    return np.concatenate(list(imgs), axis=1)
