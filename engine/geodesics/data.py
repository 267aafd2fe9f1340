"""Data for geodesics: toy Gaussian mixtures with a known density, rotated characters, user points.

Toy (docs/METHODS.md §3, authors' tutorial): 200 isotropic unit-variance Gaussians with centres at
angles linspace(0°, 180°, 201)[:-1] on a semicircle of radius 8; UCG has uniform weights, WCG
centre-weighted ones (weights ramp 1 → 30 over the first 90 components, flat 30 in the middle,
mirrored). Characters: "5 G F P J 7 2" drawn with Pillow's bundled font at 32×32, rotated through
all angles (URC) or near 0° (BRC).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

TOY_DATASETS = ("ucg", "wcg")
CHAR_DATASETS = ("urc", "brc")
DATASETS = TOY_DATASETS + CHAR_DATASETS
CHARACTERS = "5GFPJ72"
IMAGE_SIZE = 32
# The plotting / calibration window of the toy data (authors' grid: x in [-10, 10], y in [-2.5, 10]).
TOY_BOUNDS = (-10.0, 10.0, -2.5, 10.0)


def toy_weights(dataset: str, n_components: int = 200) -> np.ndarray:
    """Mixture weights (n_components,), summing to 1: uniform (ucg) or centre-weighted (wcg)."""
    if dataset == "ucg":
        w = np.ones(n_components)
    elif dataset == "wcg":
        half = n_components // 2
        ramp = np.concatenate([np.linspace(1.0, 30.0, int(0.45 * n_components)),
                               np.full(half - int(0.45 * n_components) + 1, 30.0)])  # (half + 1,)
        w = np.concatenate([ramp, ramp[1:-1][::-1]])[:n_components]
    else:
        raise ValueError(f"toy dataset {dataset!r} unknown; choose one of {TOY_DATASETS}")
    return w / w.sum()


class GaussianMixture2D:
    """Isotropic Gaussian mixture in the plane with exact density, energy and sampling."""

    def __init__(self, means: np.ndarray, sigma: float, weights: np.ndarray):
        self.means = torch.as_tensor(means, dtype=torch.float32)  # (K, 2)
        self.sigma = float(sigma)
        self.weights = torch.as_tensor(weights, dtype=torch.float32)  # (K,)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) for x (..., 2) -> (...)."""
        means, logw = self.means.to(x), self.weights.to(x).log()
        d2 = ((x[..., None, :] - means) ** 2).sum(-1)  # (..., K)
        log_n = -0.5 * d2 / self.sigma**2 - math.log(2 * math.pi * self.sigma**2)
        return torch.logsumexp(log_n + logw, dim=-1)

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_prob(x).exp()

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) = -log p(x)."""
        return -self.log_prob(x)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples (n, 2)."""
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, 2, generator=generator)
        return self.means[idx] + self.sigma * eps


def toy_mixture(dataset: str, n_components: int = 200, radius: float = 8.0, sigma: float = 1.0) -> GaussianMixture2D:
    """The UCG / WCG mixture of docs/METHODS.md §3."""
    angles = np.linspace(0.0, math.pi, n_components + 1)[:-1]
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (K, 2)
    return GaussianMixture2D(means, sigma, toy_weights(dataset, n_components))


def grid(bounds: tuple[float, float, float, float] = TOY_BOUNDS, nx: int = 100, ny: int = 62) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """A regular grid over ``bounds``: xs (nx,), ys (ny,), points (ny * nx, 2) in row-major (y, x) order."""
    xs = np.linspace(bounds[0], bounds[1], nx)
    ys = np.linspace(bounds[2], bounds[3], ny)
    gx, gy = np.meshgrid(xs, ys, indexing="xy")  # (ny, nx)
    pts = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=torch.float32)
    return xs, ys, pts


# ---------------------------------------------------------------- rotated characters
def render_character(char: str, size: int = IMAGE_SIZE, font_size: int = 22) -> np.ndarray:
    """The character drawn white on black, centred, as a (size, size) float array in [0, 1]."""
    if len(char) != 1:
        raise ValueError(f"render_character takes one character, got {char!r}")
    font = ImageFont.load_default(size=font_size)
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=font)
    draw.text(((size - (right - left)) / 2 - left, (size - (bottom - top)) / 2 - top), char, fill=255, font=font)
    return np.asarray(img, dtype=np.float32) / 255.0


def rotate_images(base: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """Rotate one (H, W) image by each angle (counter-clockwise, degrees) -> (n, H, W)."""
    img = Image.fromarray((base * 255).astype(np.uint8))
    out = [np.asarray(img.rotate(float(a), resample=Image.BILINEAR), dtype=np.float32) / 255.0 for a in angles_deg]
    return np.stack(out) if out else np.zeros((0, *base.shape), np.float32)


def character_angles(dataset: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Rotation angles in degrees in [-180, 180): uniform (urc) or concentrated near 0° (brc, σ = 30°)."""
    if dataset == "urc":
        a = rng.uniform(-180.0, 180.0, n)
    elif dataset == "brc":
        a = np.clip(rng.normal(0.0, 30.0, n), -179.9, 179.9)
    else:
        raise ValueError(f"character dataset {dataset!r} unknown; choose one of {CHAR_DATASETS}")
    return a


def rotated_characters(dataset: str, n_per_char: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (n, 32, 32), character index (n,) into CHARACTERS, angle in degrees (n,)."""
    rng = np.random.default_rng(seed)
    imgs, labels, angles = [], [], []
    for k, ch in enumerate(CHARACTERS):
        a = character_angles(dataset, n_per_char, rng)
        imgs.append(rotate_images(render_character(ch), a))
        labels.append(np.full(n_per_char, k))
        angles.append(a)
    return np.concatenate(imgs), np.concatenate(labels), np.concatenate(angles)


def rotation_path_angles(a0: float, a1: float, steps: int) -> np.ndarray:
    """Angles (steps,) from a0 to a1 along the shorter way round the circle (degrees)."""
    delta = (a1 - a0 + 180.0) % 360.0 - 180.0
    return a0 + delta * np.linspace(0.0, 1.0, steps)


# ---------------------------------------------------------------- user points
def load_points(path: str | Path) -> np.ndarray:
    """(n, d) float32 points from a .npy file or a .parquet file (all numeric columns, or one list column)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no points file at {path}; give a .npy or .parquet of shape (n, d)")
    if path.suffix not in (".npy", ".parquet"):
        raise ValueError(f"{path.name}: unsupported file type; use .npy or .parquet")
    try:
        if path.suffix == ".npy":
            x = np.load(path, allow_pickle=False)  # pickled object arrays are refused
        else:
            import pandas as pd

            df = pd.read_parquet(path)
            if df.shape[1] == 1 and df.iloc[:, 0].dtype == object:
                x = np.stack(df.iloc[:, 0].to_numpy())
            else:
                x = df.select_dtypes("number").to_numpy()
        x = np.asarray(x, dtype=np.float32)
    except Exception as exc:  # corrupt file, object/pickled array, text values: name the file and the fix
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ValueError(f"{path.name}: not a numeric (n, d) array ({type(exc).__name__}: {first}); "
                         "save plain numbers, e.g. np.save(path, x.astype('float32'))") from None
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"{path.name}: expected points of shape (n >= 2, d), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{path.name}: points contain NaN or inf; clean them first")
    return x
