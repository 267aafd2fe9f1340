"""Sparse autoencoders as a geolens method (``engine.core.method``): build = train one SAE on a cache
(``engine.sae.pipeline.train_on_cache``), report = its metrics, atom classes and training speed."""
from __future__ import annotations

import dataclasses

from engine.config import Config
from engine.core.method import Method


@dataclasses.dataclass
class SaeBuild(Config):
    cache: str = ""
    """cache name or unique prefix (see `geolens caches`)"""
    arch: str = "mp"
    atoms: int | None = None
    """dictionary size (default 8·d)"""
    k: int = 20
    """MP steps / TopK active atoms"""
    beta: float = 4e-4
    """alignment weight; 0 = plain SAE"""
    epochs: int | None = None
    min_steps: int | None = None
    batch_pairs: int | None = None
    lr: float | None = None
    seed: int | None = None
    delta: float | None = None
    name: str | None = None
    """artifact name (default: arch, sizes and a config hash)"""

    def overrides(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("cache", "name")}


def _add(p) -> None:
    from engine.sae import cli

    cli.train_args(p)


def _from_args(args) -> SaeBuild:
    return SaeBuild(cache=args.cache, arch=args.arch, atoms=args.atoms, k=args.k, beta=args.beta, epochs=args.epochs,
                    min_steps=args.min_steps, batch_pairs=args.batch_pairs, lr=args.lr, seed=args.seed,
                    delta=args.delta, name=args.name)


def _resolve(cfg: SaeBuild):
    from engine.embcache import open_cache
    from engine.sae.pipeline import default_config

    cache = open_cache(cfg.cache)
    return cache, default_config(cache, **cfg.overrides())


def _build(cfg: SaeBuild, progress=None, force: bool = False):
    from engine.sae.pipeline import find_sae, train_on_cache

    cache, scfg = _resolve(cfg)
    name, _ = train_on_cache(cache, scfg, name=cfg.name, force=force)
    return find_sae(cache, name)


def _find(cfg: SaeBuild):
    from engine.sae.pipeline import find_sae, sae_name

    if not cfg.cache:
        return None
    cache, scfg = _resolve(cfg)
    return find_sae(cache, cfg.name or sae_name(cache, scfg))


def _report(art) -> dict:
    import json

    from engine.sae.pipeline import META

    meta = json.loads(art.file(META).read_text())
    return {"name": art.name, "metrics": meta["metrics"], "class_counts": meta["class_counts"],
            "pairs_per_s": meta["train"]["pairs_per_s"], "seconds": meta["train"]["seconds"],
            "steps": meta["train"]["steps"], "device": meta["train"]["device"]}


def _extra(sub) -> None:
    from engine.sae import cli

    cli.add_encode_parser(sub)


def _defaults() -> list[SaeBuild]:
    """A plain (β = 0) and an aligned (β = 4e-4) SAE on the default Shapes cache, once it is precomputed."""
    from engine.core.names import default_shapes_cache

    cache = default_shapes_cache()
    return [SaeBuild(cache=cache.name, beta=b) for b in (0.0, 4e-4)] if cache else []


METHOD = Method(name="sae", title="Sparse autoencoders", page="pages/atoms.py", kind="sae", config=SaeBuild,
                add_arguments=_add, config_from_args=_from_args, build=_build, find=_find, report=_report,
                defaults=_defaults, extra_cli=_extra)
