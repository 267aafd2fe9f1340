"""Built-in one-shot generators: one interface, a name-keyed registry.

Every generator maps exemplars (C, 50, 50) to samples (C, n, 50, 50) in [0, 1] (ink = 1);
``fit`` sees only the training classes. ``pool`` is (C, H, 50, 50), the test classes' real
drawings other than the exemplar: only ``other_class`` and ``human`` read it.

| name        | family    | what it does                                                  |
|-------------|-----------|---------------------------------------------------------------|
| copy        | reference | the exemplar itself, n times (zero diversity)                 |
| affine      | reference | random affine jitter of the exemplar (swept: strength)        |
| other_class | reference | a random real drawing of another test class (chance level)    |
| vae_ns      | vae       | neural statistician: exemplar -> c -> p(z|c) -> p(x|z,c) (swept: β) |
| dagan       | gan       | DA-GAN-style exemplar-conditioned GAN (swept: noise scale ψ)  |
| ddpm_cfg    | diffusion | exemplar-conditioned DDPM, classifier-free guidance (swept: w) |
| human       | human     | the real drawings (the human reference)                       |

The names are the registry ``GENERATORS`` (``engine.core.registry``): CLI choices, page
legend, and the ``model`` field of trained models' configs and keys.
"""
from __future__ import annotations

import dataclasses
import time
import numpy as np
import torch

from engine.core.registry import Registry
from engine.dvr.ddpm import GuidedDDPM
from engine.dvr.gan import DAGAN
from engine.dvr.networks import random_affine
from engine.dvr.trainer import OneShotModel, TrainConfig
from engine.dvr.vae import NeuralStatistician


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


class Trained(Generator):
    """A trained one-shot model (``engine.dvr.trainer``): params split into its training config and
    its sampling parameters; ``fit`` loads it from the store or shipped assets, else trains it."""

    model_cls: type[OneShotModel] = OneShotModel
    name: str = ""

    def _fields(self) -> set[str]:
        return {f.name for f in dataclasses.fields(self.model_cls.Config)}

    def train_config(self) -> TrainConfig:
        fields = self._fields()
        unknown = set(self.params) - fields - set(self.model_cls.SAMPLE_PARAMS)
        if unknown:
            raise ValueError(f"{self.name}: unknown parameters {sorted(unknown)}; training: {sorted(fields)}, "
                             f"sampling: {sorted(self.model_cls.SAMPLE_PARAMS)}")
        default = self.model_cls.Config().to_dict()
        # cast to the field's type, so beta=1 and beta=1.0 are one config (and one key)
        return self.model_cls.Config(**{k: type(default[k])(v) for k, v in self.params.items() if k in fields})

    def label(self) -> str:
        """This training configuration's name: the registry name plus the training parameters that differ
        from the family's defaults (e.g. ``vae_ns-beta2``)."""
        default = self.model_cls.Config().to_dict()
        cfg = self.train_config().to_dict()
        return "-".join([self.name] + [f"{k}{v:g}" for k, v in sorted(cfg.items())
                                       if isinstance(v, (int, float)) and v != default[k]])

    def fit(self, train_x, train_y, device, progress=None, data_key: str = "", train_missing: bool = True):
        from engine.dvr import trainer

        t0 = time.perf_counter()
        self.net_, self.artifact_ = trainer.get_model(self.name, self.model_cls, self.train_config(), train_x, train_y,
                                                      data_key, device, progress, train_missing, label=self.label())
        self.fit_seconds_ = float(self.artifact_.meta.get("train_seconds", time.perf_counter() - t0))
        return self

    def sample(self, exemplars, n, seed, pool, batch: int = 15):
        from engine.dvr.trainer import to_eval, to_model_res

        gen = torch.Generator().manual_seed(seed)
        dev = next(self.net_.parameters()).device
        sp = {k: float(self.params.get(k, v)) for k, v in self.model_cls.SAMPLE_PARAMS.items()}
        ex = to_model_res(torch.from_numpy(np.ascontiguousarray(exemplars, dtype=np.float32)).unsqueeze(1))
        out = [to_eval(self.net_.sample(ex[i:i + batch].to(dev), n, gen, **sp).cpu()) for i in range(0, len(ex), batch)]
        return torch.cat(out).numpy()  # (C, n, 50, 50) binary


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered generator: its class, family, swept parameter, what it is, and its trained model class."""

    cls: type[Generator]
    family: str
    sweep: str = ""
    about: str = ""
    model_cls: type[OneShotModel] | None = None


GENERATORS: Registry[Entry] = Registry("generator")
GENERATORS.add("copy", Entry(Copy, "reference", "", "the exemplar itself, n times"))
GENERATORS.add("affine", Entry(Affine, "reference", "strength", "random affine jitter of the exemplar"))
GENERATORS.add("other_class", Entry(OtherClass, "reference", "", "real drawings of other test classes (chance)"))
GENERATORS.add("vae_ns", Entry(Trained, "vae", "beta", "neural statistician: exemplar → c → p(z|c) → p(x|z,c); sweep β",
                               NeuralStatistician))
GENERATORS.add("dagan", Entry(Trained, "gan", "psi", "DA-GAN-style exemplar-conditioned GAN; sweep noise scale ψ", DAGAN))
GENERATORS.add("ddpm_cfg", Entry(Trained, "diffusion", "w", "exemplar-conditioned DDPM; sweep guidance w", GuidedDDPM))
GENERATORS.add("human", Entry(Human, "human", "", "the real drawings"))


def trained_names() -> list[str]:
    return [n for n, e in GENERATORS.items() if e.model_cls is not None]


def make(name: str, **params) -> Generator:
    e = GENERATORS.get(name)
    gen = e.cls(family=e.family, params=dict(params))
    if isinstance(gen, Trained):
        gen.model_cls, gen.name = e.model_cls, name
        gen.train_config()  # validate the parameters now
    return gen


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


BETAS = (0.25, 1.0, 4.0)
PSIS = (0.25, 0.5, 1.0, 2.0)
GUIDANCES = (0.0, 1.0, 3.0)
STRENGTHS = (0.5, 1.0, 2.0)


def default_specs(betas: tuple[float, ...] = BETAS, strengths: tuple[float, ...] = STRENGTHS,
                  psis: tuple[float, ...] = PSIS, guidances: tuple[float, ...] = GUIDANCES,
                  only: tuple[str, ...] | None = None) -> list[ModelSpec]:
    """The built-in comparison: references, the affine sweep and each trained family's sweep.

    ``only``: keep these generator names (default: all).
    """
    sweeps = {"affine": strengths, "vae_ns": betas, "dagan": psis, "ddpm_cfg": guidances}
    specs = [ModelSpec("copy"), ModelSpec("other_class")]
    for name, values in sweeps.items():
        p = GENERATORS.get(name).sweep
        specs += [ModelSpec(name, ((p, float(v)),), p) for v in values]
    return [s for s in specs if only is None or s.generator in only]
