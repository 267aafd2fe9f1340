"""Spaces geodesics live in: the data, its trained models, calibration points and endpoint pairs.

``build_space`` turns a run config into a ``Space`` (training or loading the cached EBM, and for
characters the autoencoder); ``make_pairs`` draws the endpoints scored by the report, with the
true rotation path γ* for characters.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable

import numpy as np
import torch

from engine import ENGINE_VERSION
from engine.config import array_hash, stable_hash
from engine.geodesics import data as D
from engine.geodesics.autoencoder import ConvAE, encode_all, get_ae
from engine.geodesics.ebm import EnergyMLP, get_ebm
from engine.geodesics.metrics import MetricContext
from engine.geodesics.runconfig import RunConfig

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclasses.dataclass
class Space:
    dataset: str
    kind: str  # "toy" | "chars" | "points"
    data: torch.Tensor  # (n, d) data the metrics are fitted to
    calib: torch.Tensor  # (m, d) calibration points
    ebm: EnergyMLP | None
    keys: dict  # data / model identities for cache keys
    mixture: D.GaussianMixture2D | None = None
    p_max: float = 1.0
    ae: ConvAE | None = None
    shift: torch.Tensor | None = None  # latent = (encoder(x) - shift) / scale
    scale: float = 1.0
    labels: np.ndarray | None = None
    angles: np.ndarray | None = None

    def context(self, cfg: RunConfig) -> MetricContext:
        g = torch.Generator().manual_seed(cfg.seed)
        ref = self.data[torch.randperm(len(self.data), generator=g)[: cfg.land_ref]]
        true_e = self.mixture.energy if self.mixture is not None else None
        energy = self.ebm if self.ebm is not None else None
        return MetricContext(self.data, self.calib, energy, true_e, cfg.land_sigma, cfg.rbf_centers, cfg.seed, reference=ref)

    def encode(self, images: np.ndarray) -> torch.Tensor:
        return (encode_all(self.ae, images) - self.shift) / self.scale

    def decode(self, z: torch.Tensor) -> np.ndarray:
        from engine.geodesics.autoencoder import decode_all

        return decode_all(self.ae, z * self.scale + self.shift)


def _ebm_progress(progress: Progress | None, total: int):
    return None if progress is None else (lambda i, loss: progress("EBM training", i, total))


def build_toy(cfg: RunConfig, progress: Progress | None = None, train: bool = True) -> Space:
    mix = D.toy_mixture(cfg.dataset)
    data = mix.sample(cfg.n_data, torch.Generator().manual_seed(cfg.seed))  # (n, 2)
    data_key = stable_hash({"toy": cfg.dataset, "n": cfg.n_data, "seed": cfg.seed, "v": ENGINE_VERSION})
    ebm_cfg = cfg.ebm_config()
    ebm = get_ebm(data_key, data, ebm_cfg, progress=_ebm_progress(progress, ebm_cfg.iters), train=train)
    _, _, grid = D.grid()
    p_max = float(mix.prob(grid).max())
    return Space(cfg.dataset, "toy", data, grid, ebm, {"data": data_key}, mixture=mix, p_max=p_max)


def off_data(z: torch.Tensor, labels: np.ndarray, n: int, gen: torch.Generator) -> torch.Tensor:
    """Points off the data: midpoints of pairs of different characters, and Gaussian noise with the data's spread."""
    i, j = torch.randint(len(z), (2, 4 * n), generator=gen)
    keep = torch.as_tensor(labels[i.numpy()] != labels[j.numpy()])
    i, j = i[keep][:n], j[keep][:n]
    mid = 0.5 * (z[i] + z[j])
    gauss = z.mean(0) + z.std(0) * torch.randn(n, z.shape[1], generator=gen)
    return torch.cat([mid, gauss])


def build_chars(cfg: RunConfig, progress: Progress | None = None, train: bool = True) -> Space:
    # one autoencoder for both character sets, trained on all rotations (URC images)
    ae_imgs, _, _ = D.rotated_characters("urc", cfg.n_data, seed=cfg.seed)
    # keyed by the drawn pixels, so a change of Pillow's font or rasteriser changes the key
    ae_data_key = stable_hash({"chars": "urc", "n": cfg.n_data, "seed": cfg.seed, "pixels": array_hash(ae_imgs),
                               "v": ENGINE_VERSION})
    ae_cfg = cfg.ae_config()
    ae_prog = None if progress is None else (lambda i, tot, loss: progress("autoencoder training", i, tot))
    ae = get_ae(ae_data_key, ae_imgs, ae_cfg, progress=ae_prog, train=train)
    if ae is None:
        raise FileNotFoundError("no cached autoencoder for these settings; run `geolens geodesics precompute`")
    imgs, labels, angles = D.rotated_characters(cfg.dataset, cfg.n_data, seed=cfg.seed + 1)
    raw_ae = encode_all(ae, ae_imgs)
    shift, scale = raw_ae.mean(0), float(raw_ae.std(0).mean())
    z = (encode_all(ae, imgs) - shift) / scale  # (n, 64) standardised latents
    from engine.geodesics.autoencoder import ae_key

    data_key = stable_hash({"chars": cfg.dataset, "n": cfg.n_data, "seed": cfg.seed, "pixels": array_hash(imgs),
                            "ae": ae_key(ae_data_key, ae_cfg), "v": ENGINE_VERSION})
    ebm_cfg = cfg.ebm_config()
    ebm = get_ebm(data_key, z, ebm_cfg, progress=_ebm_progress(progress, ebm_cfg.iters), train=train)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    sub = torch.randperm(len(z), generator=gen)[: cfg.land_ref]
    calib = torch.cat([z[sub], off_data(z, labels, len(sub) // 2, gen)])
    return Space(cfg.dataset, "chars", z, calib, ebm, {"data": data_key, "ae_data": ae_data_key}, ae=ae,
                 shift=shift, scale=scale, labels=labels, angles=angles)


def build_points(points: np.ndarray, cfg: RunConfig, progress: Progress | None = None, train: bool = True) -> Space:
    """User-supplied latent vectors (n, d): the EBM is trained on them; calibration adds Gaussian off-data points."""
    z = torch.as_tensor(points, dtype=torch.float32)
    digest = hashlib.sha256(np.ascontiguousarray(points, dtype=np.float32).tobytes()).hexdigest()
    data_key = stable_hash({"points": digest, "shape": list(points.shape), "v": ENGINE_VERSION})
    ebm_cfg = cfg.ebm_config()
    ebm = get_ebm(data_key, z, ebm_cfg, progress=_ebm_progress(progress, ebm_cfg.iters), train=train)
    gen = torch.Generator().manual_seed(cfg.seed)
    gauss = z.mean(0) + z.std(0) * torch.randn(min(len(z), 1000), z.shape[1], generator=gen)
    return Space("points", "points", z, torch.cat([z[: cfg.land_ref], gauss]), ebm, {"data": data_key})


def build_space(cfg: RunConfig, progress: Progress | None = None, train: bool = True) -> Space:
    if cfg.dataset in D.TOY_DATASETS:
        return build_toy(cfg, progress, train)
    return build_chars(cfg, progress, train)


@dataclasses.dataclass
class Pairs:
    x0: torch.Tensor  # (N, d)
    x1: torch.Tensor  # (N, d)
    label: np.ndarray  # (N,) character index, -1 for toy
    a0: np.ndarray  # (N,) start angle (degrees), nan for toy
    a1: np.ndarray
    truth: torch.Tensor | None = None  # (N, T, d) encoded true rotation path


def make_pairs(space: Space, n: int, steps: int, seed: int) -> Pairs:
    """Toy: endpoints are two independent samples of the mixture. Characters: two data points of the same character."""
    gen = torch.Generator().manual_seed(seed + 17)
    if space.kind == "toy":
        x0, x1 = space.mixture.sample(n, gen), space.mixture.sample(n, gen)
        nan = np.full(n, np.nan)
        return Pairs(x0, x1, np.full(n, -1), nan, nan)
    rng = np.random.default_rng(seed + 17)
    i = rng.integers(len(space.data), size=n)
    j = np.array([rng.choice(np.flatnonzero(space.labels == space.labels[k])) for k in i])
    truth = []
    for k0, k1 in zip(i, j):
        angles = D.rotation_path_angles(space.angles[k0], space.angles[k1], steps)
        truth.append(D.rotate_images(D.render_character(D.CHARACTERS[space.labels[k0]]), angles))
    t = space.encode(np.concatenate(truth)).reshape(n, steps, -1)  # (N, T, d)
    return Pairs(t[:, 0].clone(), t[:, -1].clone(), space.labels[i], space.angles[i], space.angles[j], t)
