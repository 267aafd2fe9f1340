"""The method contract: what every method package (gap, sae, atoms, concepts, geodesics, dvr)
exposes, so the CLI, ``build-defaults``, the job runner and Home treat them all alike.

A method package has a ``method.py`` defining ``METHOD = Method(...)``:

- ``config``: its build-config dataclass (an ``engine.config.Config``);
- ``build(cfg, progress, force=False) -> Artifact``: builds (or finds, if already built) the artifact;
  ``force`` rebuilds it;
- ``find(cfg) -> Artifact | None``: the finished artifact for ``cfg``, never building or writing;
- ``report(artifact) -> dict``: exactly the JSON its page shows;
- ``list() -> list[Artifact]``: what has been built;
- ``add_arguments`` / ``config_from_args``: its CLI options, shared by build and report;
- ``defaults()``: the configs ``build-defaults`` builds for the page's first open.

``engine/methods.py`` lists the method packages; ``engine/method_cli.py`` turns each into
``geolens <method> build|report|list``.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Callable

from engine.config import Config
from engine.core import artifacts


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    """CLI word and page id, e.g. ``geodesics``."""
    title: str
    """What the page is called."""
    page: str
    """The page file, e.g. ``pages/geodesics.py``."""
    kind: str
    """The artifact kind its builds produce (``artifacts.list(kind)``)."""
    config: type[Config]
    add_arguments: Callable[[argparse.ArgumentParser], None]
    config_from_args: Callable[[argparse.Namespace], Config]
    build: Callable[..., artifacts.Artifact]
    """``build(cfg, progress=None, force=False)``"""
    find: Callable[[Config], artifacts.Artifact | None]
    report: Callable[[artifacts.Artifact], dict]
    defaults: Callable[[], list[Config]] = lambda: []
    extra_cli: Callable[[argparse._SubParsersAction], None] | None = None
    """Method-specific actions beside build|report|list (e.g. ``geodesics points``)."""

    def list(self) -> list[artifacts.Artifact]:
        return artifacts.list(self.kind)

    def require(self, cfg: Config) -> artifacts.Artifact:
        """The built artifact for ``cfg``, or an error that says how to build it."""
        art = self.find(cfg)
        if art is None:
            raise FileNotFoundError(f"{self.title}: nothing built for these settings yet; "
                                    f"run `geolens {self.name} build` with the same options")
        return art
