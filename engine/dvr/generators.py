"""Built-in one-shot generators: one interface, a name-keyed registry.

Every generator maps exemplars (C, 50, 50) to samples (C, n, 50, 50) in [0, 1] (ink = 1);
``fit`` sees only the training classes. ``pool`` is (C, H, 50, 50), the test classes' real
drawings other than the exemplar: only ``other_class`` and ``human`` read it.

| name        | family    | what it does                                                  |
|-------------|-----------|---------------------------------------------------------------|
| copy        | reference | the exemplar itself, n times (zero diversity)                 |
| affine      | reference | random affine jitter of the exemplar (swept: strength)        |
| other_class | reference | a random real drawing of another test class (chance level)    |
| vae_ns      | vae       | one-shot neural-statistician VAE (swept: β), ink-count binarised |
| human       | human     | the real drawings (the human reference)                       |
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
import torch

from engine.dvr.networks import random_affine
from engine.dvr.vae import NeuralStatistician, VAEConfig, ink_binarise, train_vae


@dataclasses.dataclass
class Generator:
    """Base: stores parameters; ``fit`` returns self; ``sample`` draws."""

    family: str = "reference"
    params: dict = dataclasses.field(default_factory=dict)
    fit_seconds_: float = 0.0

    def fit(self, train_x: np.ndarray, train_y: np.ndarray, device: torch.device, progress=None) -> "Generator":
        return self

    def sample(self, exemplars: np.ndarray, n: int, seed: int, pool: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Copy(Generator):
    def sample(self, exemplars, n, seed, pool):
        return np.repeat(exemplars[:, None], n, axis=1)  # (C, n, 50, 50)


class Affine(Generator):
    """Random affine jitter; ``strength`` multiplies rotation 0.3 rad, log-scale 0.15, shear 0.2, shift 12 %."""

    def sample(self, exemplars, n, seed, pool):
        s = float(self.params.get("strength", 1.0))
        gen = torch.Generator().manual_seed(seed)
        x = torch.from_numpy(np.repeat(exemplars[:, None], n, axis=1)).reshape(-1, 1, *exemplars.shape[-2:])
        out = random_affine(x.float(), gen, rot=0.3 * s, scale=0.15 * s, shear=0.2 * s, shift=0.12 * s)
        return out.reshape(len(exemplars), n, *exemplars.shape[-2:]).numpy()


class OtherClass(Generator):
    """For class c, n real drawings picked at random from the other test classes."""

    def sample(self, exemplars, n, seed, pool):
        c_n, h = pool.shape[:2]
        if c_n < 2:
            raise ValueError("other_class needs >= 2 test classes")
        rng = np.random.default_rng(seed)
        cls = (np.arange(c_n)[:, None] + rng.integers(1, c_n, size=(c_n, n))) % c_n  # never c itself
        return pool[cls, rng.integers(0, h, size=(c_n, n))]


class Human(Generator):
    """The real drawings (the pool itself), independent of n."""

    def sample(self, exemplars, n, seed, pool):
        return pool


class VAENS(Generator):
    def fit(self, train_x, train_y, device, progress=None):
        cfg = VAEConfig(**self.params)
        t0 = time.perf_counter()
        self.net_: NeuralStatistician = train_vae(train_x, train_y, cfg, device, progress)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def sample(self, exemplars, n, seed, pool):
        gen = torch.Generator().manual_seed(seed)
        dev = next(self.net_.parameters()).device
        x = torch.from_numpy(exemplars).float().unsqueeze(1).to(dev)  # (C, 1, 50, 50)
        return ink_binarise(self.net_.sample(x, n, gen), x).cpu().numpy()


GENERATORS: dict[str, tuple[type[Generator], str]] = {
    "copy": (Copy, "reference"),
    "affine": (Affine, "reference"),
    "other_class": (OtherClass, "reference"),
    "vae_ns": (VAENS, "vae"),
    "human": (Human, "human"),
}


def make(name: str, **params) -> Generator:
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; choose one of {list(GENERATORS)}")
    cls, family = GENERATORS[name]
    return cls(family=family, params=dict(params))


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model configuration: generator name, its parameters, and which parameter is swept."""

    generator: str
    params: tuple[tuple[str, float], ...] = ()
    sweep: str = ""

    @property
    def label(self) -> str:
        ps = ",".join(f"{k}={v:g}" for k, v in self.params)
        return f"{self.generator}({ps})" if ps else self.generator

    @property
    def slug(self) -> str:
        return "_".join([self.generator] + [f"{k}{v:g}" for k, v in self.params]).replace(".", "p")


def default_specs(betas: tuple[float, ...] = (0.5, 2.0, 8.0), strengths: tuple[float, ...] = (0.5, 1.0, 2.0)) -> list[ModelSpec]:
    """The built-in comparison: references, an affine sweep and a β sweep of the VAE-NS."""
    specs = [ModelSpec("copy"), ModelSpec("other_class")]
    specs += [ModelSpec("affine", (("strength", s),), "strength") for s in strengths]
    specs += [ModelSpec("vae_ns", (("beta", b),), "beta") for b in betas]
    return specs


ProgressFn = Callable[[int, int, float], None]
