"""Diversity vs. recognizability as a geolens method (``engine.core.method``).

build = the whole pipeline (``engine.dvr.build.build``: data set, critics, human reference, the
built-in generators' samples and their evaluation; every stage cached), recorded as a ``dvr``
artifact whose manifest names the reference and run caches it made; report = that reference's
``results.report``, exactly what the page shows for it.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
from typing import Any

from engine import store
from engine.config import Config, check_positive
from engine.core import artifacts
from engine.core.method import Method
from engine.core.progress import ProgressFn, staged

KIND = "dvr"
VERSION = "dvr-build-1"


def _sweep(name: str) -> Any:
    """The default sweep ``engine.dvr.generators.<name>``, read when a config is made (torch loads then)."""
    return dataclasses.field(default_factory=lambda: getattr(importlib.import_module("engine.dvr.generators"), name))


@dataclasses.dataclass
class DvrBuild(Config):
    """One dvr build: data set, critics' training, the built-in generators' sweeps, the test episodes."""

    omniglot: str = ""
    """root of real Omniglot (images_background/, images_evaluation/); '' = the built-in Hershey stroke set"""
    chars_per_alphabet: int = 16
    """built-in set: characters per alphabet"""
    simclr_epochs: int = 6
    proto_episodes: int = 250
    betas: tuple[float, ...] = _sweep("BETAS")
    """β values swept for vae_ns (one model each)"""
    psis: tuple[float, ...] = _sweep("PSIS")
    """noise scales ψ swept for dagan (sampling only)"""
    guidances: tuple[float, ...] = _sweep("GUIDANCES")
    """classifier-free guidance scales w swept for ddpm_cfg (sampling only)"""
    strengths: tuple[float, ...] = _sweep("STRENGTHS")
    """strengths swept for affine"""
    only: tuple[str, ...] = ()
    """generators to include; () = every built-in one"""
    train_steps: int | None = None
    """every trained generator's steps (None: each family's own; shipped weights are used only then)"""
    episodes: int = 500
    """fixed test episodes per class"""
    way: int = 20

    def validate(self) -> None:
        from engine.dvr import generators

        self.stroke_config()  # each sub-config checks its own fields
        self.critic_config()
        self.eval_config()
        for name in self.only:
            generators.GENERATORS.get(name)  # a clear error naming the choices
        if self.train_steps is not None:
            check_positive("train_steps", self.train_steps)

    def stroke_config(self):
        from engine.dvr.strokes import StrokeSetConfig

        return StrokeSetConfig(chars_per_alphabet=self.chars_per_alphabet)

    def critic_config(self):
        from engine.dvr.networks import CriticConfig

        return CriticConfig(simclr_epochs=self.simclr_epochs, proto_episodes=self.proto_episodes)

    def eval_config(self):
        from engine.dvr.evaluate import EvalConfig

        return EvalConfig(way=self.way, n_episodes=self.episodes)

    def specs(self) -> list:
        from engine.dvr import generators

        return generators.default_specs(self.betas, self.strengths, self.psis, self.guidances, self.only or None)

    def train_params(self) -> dict[str, dict] | None:
        from engine.dvr import generators

        return {n: {"steps": self.train_steps} for n in generators.trained_names()} if self.train_steps else None


def _build(cfg: DvrBuild, progress: ProgressFn | None = None, force: bool = False) -> artifacts.Artifact:
    from engine.dvr import build, evaluate

    found = None if force else _find(cfg)
    if found is not None and all(store.resolve_stored(found.meta[k]).exists() for k in ("ref", "run")):
        return found
    res = build.build(omniglot_root=cfg.omniglot or None, stroke_cfg=cfg.stroke_config(), critic_cfg=cfg.critic_config(),
                      train_params=cfg.train_params(), eval_cfg=cfg.eval_config(), specs=cfg.specs(),
                      progress=staged(progress), force=force)
    inputs = [evaluate.read_meta(res.ref)["ref_key"], res.run.stem]  # by content: both cache names are keys
    with artifacts.writing(KIND, cfg.to_dict(), inputs, VERSION, name=res.ref.stem, resume=False) as w:
        w.meta.update({"ref": store.portable(res.ref), "run": store.portable(res.run),
                       "samples": store.portable(res.samples_root), "seconds": res.seconds})
    return artifacts.find(KIND, w.key)


def _find(cfg: DvrBuild) -> artifacts.Artifact | None:
    """The newest build with exactly these settings (nothing is loaded or written)."""
    want = json.loads(json.dumps(cfg.to_dict()))  # tuples as the manifest stores them
    runs = [a for a in artifacts.list(KIND) if a.config == want]
    return runs[-1] if runs else None


def _report(art: artifacts.Artifact) -> dict:
    from engine.dvr import results

    return results.report(store.resolve_stored(art.meta["ref"]))


def _add(p) -> None:
    from engine.dvr import cli

    cli.add_build_args(p)


def _from_args(args) -> DvrBuild:
    from engine.dvr import cli

    return cli.config_from_args(args)


METHOD = Method(name="dvr", title="Diversity vs. recognizability", page="pages/dvr.py", kind=KIND, config=DvrBuild,
                add_arguments=_add, config_from_args=_from_args, build=_build, find=_find, report=_report,
                defaults=lambda: [DvrBuild()])
