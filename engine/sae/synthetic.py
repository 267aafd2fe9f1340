"""Controlled paired embeddings from a known dictionary: the Iso-Energy sanity check (docs/METHODS.md §1).

Generator (``SyntheticConfig``):
- shared atoms D_B (s, d), unit norm, realised in each modality as
  D_B^mod = normalise(√t · D_B + √(1 − t) · N_mod) with modality-specific noise N_mod;
- ``n_bias`` image-only and ``n_bias`` text-only bias atoms;
- pair i activates shared atom j with probability p_j (log-spaced from p_max to p_min) with the
  same coefficient c_ij ~ U(0.5, 1.5) in both modalities, plus one bias atom of each modality
  (coefficient ~ U(1, 2)); each embedding is then L2-normalised.
Iso-Energy holds: shared concepts carry the same energy in both modalities (true label bimodal).
Broken (``iso_energy=False``): the text modality uses a rotated copy Q D_B^T (Q a random
rotation), so every shared atom lives in one modality only (true labels image / text).

Recovery: Hungarian matching of true atoms to learned atoms on cosine (scipy's
``linear_sum_assignment``), mean cosine of matched pairs; label accuracy = fraction of true atoms
whose matched learned atom gets the true class from μ at ε.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import ortho_group

from engine.config import Config, check_positive
from engine.sae.stats import DEFAULT_EPS, classify


@dataclasses.dataclass
class SyntheticConfig(Config):
    d: int = 64
    """embedding dimension"""
    n_shared: int = 32
    """shared (concept) atoms"""
    n_bias: int = 4
    """bias atoms per modality"""
    n_pairs: int = 10000
    t: float = 0.5
    """how much of a shared atom is common to both modalities (1: identical)"""
    p_max: float = 0.3
    p_min: float = 0.02
    iso_energy: bool = True
    """False: text uses a rotated copy of the shared atoms (Iso-Energy broken)"""
    seed: int = 0

    def validate(self) -> None:
        for name in ("d", "n_shared", "n_bias", "n_pairs"):
            check_positive(name, getattr(self, name))
        if not 0 < self.t <= 1:
            raise ValueError(f"t={self.t} must be in (0, 1]")
        if not 0 < self.p_min <= self.p_max <= 1:
            raise ValueError("need 0 < p_min <= p_max <= 1")


@dataclasses.dataclass
class SyntheticData:
    img: np.ndarray  # (n, d)
    txt: np.ndarray  # (n, d)
    true_atoms: np.ndarray  # (a, d) unit norm
    true_labels: np.ndarray  # (a,) bimodal | image | text


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def generate(cfg: SyntheticConfig) -> SyntheticData:
    rng = np.random.default_rng(cfg.seed)
    d, s, b, n = cfg.d, cfg.n_shared, cfg.n_bias, cfg.n_pairs
    D_B = _unit(rng.standard_normal((s, d)))
    D_img = _unit(np.sqrt(cfg.t) * D_B + np.sqrt(1 - cfg.t) * _unit(rng.standard_normal((s, d))))
    D_txt = _unit(np.sqrt(cfg.t) * D_B + np.sqrt(1 - cfg.t) * _unit(rng.standard_normal((s, d))))
    if not cfg.iso_energy:
        D_txt = D_txt @ ortho_group.rvs(d, random_state=rng).T
    bias_img, bias_txt = _unit(rng.standard_normal((b, d))), _unit(rng.standard_normal((b, d)))
    p = np.geomspace(cfg.p_max, cfg.p_min, s)
    coef = (rng.random((n, s)) < p) * rng.uniform(0.5, 1.5, (n, s))  # (n, s) same in both modalities
    bi = np.eye(b)[rng.integers(b, size=n)] * rng.uniform(1, 2, (n, 1))
    bt = np.eye(b)[rng.integers(b, size=n)] * rng.uniform(1, 2, (n, 1))
    img = _unit(coef @ D_img + bi @ bias_img).astype(np.float32)
    txt = _unit(coef @ D_txt + bt @ bias_txt).astype(np.float32)
    if cfg.iso_energy:
        atoms = np.concatenate([D_B, bias_img, bias_txt])
        labels = ["bimodal"] * s + ["image"] * b + ["text"] * b
    else:
        atoms = np.concatenate([D_img, D_txt, bias_img, bias_txt])
        labels = ["image"] * s + ["text"] * s + ["image"] * b + ["text"] * b
    return SyntheticData(img, txt, atoms.astype(np.float32), np.array(labels, dtype=object))


def match_atoms(true_atoms: np.ndarray, learned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching maximising total cosine: (matched learned index per true atom, cosines)."""
    cos = _unit(true_atoms) @ _unit(learned).T  # (a, m)
    rows, cols = linear_sum_assignment(-cos)
    order = np.argsort(rows)
    return cols[order], cos[rows[order], cols[order]]


def modality_scores(z_img: np.ndarray, z_txt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """μ (m,) and alive mask (m,) from codes of the images and texts."""
    e_img, e_txt = (z_img ** 2).mean(0), (z_txt ** 2).mean(0)
    tot = e_img + e_txt
    alive = (z_img != 0).any(0) | (z_txt != 0).any(0)
    return np.where(tot > 0, e_img / np.where(tot > 0, tot, 1), np.nan), alive


def recovery(data: SyntheticData, learned: np.ndarray, z_img: np.ndarray, z_txt: np.ndarray,
             eps: float = DEFAULT_EPS) -> dict:
    """Hungarian-matched cosine to the true atoms and label-recovery accuracy."""
    idx, cos = match_atoms(data.true_atoms, learned)
    mu, alive = modality_scores(z_img, z_txt)
    pred = classify(mu, alive, eps)[idx]
    return {"match_cosine": float(cos.mean()), "label_accuracy": float((pred == data.true_labels).mean())}
