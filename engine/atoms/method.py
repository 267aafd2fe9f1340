"""Bimodal atoms as a geolens method (``engine.core.method``): build = the atoms artifact of one
(cache, SAE) at ε (``engine.atoms.report.build_atoms``), report = its JSON, as the page shows it."""
from __future__ import annotations

import dataclasses

from engine.atoms.report import AtomsConfig
from engine.core.method import Method


@dataclasses.dataclass
class AtomsBuild(AtomsConfig):
    cache: str = ""
    """cache name or unique prefix (see `geolens caches`)"""
    sae: str = ""
    """SAE name (see `geolens saes --cache NAME`)"""

    def require_target(self) -> None:
        if not self.cache or not self.sae:
            raise ValueError("atoms: give --cache and --sae (see `geolens caches`, `geolens saes --cache NAME`)")

    def atoms_config(self) -> AtomsConfig:
        return AtomsConfig(eps=self.eps, seed=self.seed, max_pairs=self.max_pairs)


def _add(p) -> None:
    p.add_argument("--cache", default="", help="cache name or unique prefix (see `geolens caches`)")
    p.add_argument("--sae", default="", help="SAE name (see `geolens saes --cache NAME`); build: omit for every SAE of the cache")
    p.add_argument("--eps", type=float, default=0.05, help="modality-score threshold ε")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-pairs", type=int, default=20000, help="interventions on at most this many seeded pairs")


def _from_args(args) -> AtomsBuild:
    return AtomsBuild(cache=args.cache, sae=args.sae, eps=args.eps, seed=args.seed, max_pairs=args.max_pairs)


def _build(cfg: AtomsBuild, progress=None, force: bool = False):
    from engine.atoms.report import build_atoms
    from engine.embcache import open_cache

    if cfg.cache and not cfg.sae:  # every SAE of the cache (build-defaults' atoms stage)
        from engine.sae.store import list_saes

        cache = open_cache(cfg.cache)
        names = list(list_saes(cache)["name"])
        if not names:
            raise FileNotFoundError(f"no SAE on cache {cache.name} yet; train one with `geolens train-sae --cache {cache.name}`")
        return [build_atoms(cache, n, cfg.atoms_config(), force=force) for n in names][-1]
    cfg.require_target()
    return build_atoms(open_cache(cfg.cache), cfg.sae, cfg.atoms_config(), force=force)


def _find(cfg: AtomsBuild):
    from engine.atoms.report import find_atoms
    from engine.embcache import open_cache
    from engine.sae.pipeline import find_sae

    if not cfg.cache or not cfg.sae:
        return None
    cache = open_cache(cfg.cache)
    if find_sae(cache, cfg.sae) is None:
        return None
    return find_atoms(cache, cfg.sae, cfg.atoms_config())


def _report(art) -> dict:
    from engine.atoms.report import read_report

    return read_report(art)


def _defaults() -> list[AtomsBuild]:
    """The atoms of every SAE of the default Shapes cache (``sae`` left empty), once it is precomputed."""
    from engine.core.names import default_shapes_cache

    cache = default_shapes_cache()
    return [AtomsBuild(cache=cache.name)] if cache else []


METHOD = Method(name="atoms", title="Bimodal atoms", page="pages/atoms.py", kind="atoms", config=AtomsBuild,
                add_arguments=_add, config_from_args=_from_args, build=_build, find=_find, report=_report,
                defaults=_defaults)
