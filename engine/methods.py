"""The method packages geolens knows. Add a method by adding its ``method.py`` here (its page to
``app.py``'s ``PAGES``, its name to a stage of ``engine.commands.DEFAULT_STAGES``): the CLI,
``build-defaults`` and Home follow."""
from __future__ import annotations

import importlib

from engine.core.method import Method
from engine.core.registry import Registry

METHOD_MODULES = [
    "engine.gap.method",
    "engine.sae.method",
    "engine.concepts.method",
    "engine.geodesics.method",
    "engine.atoms.method",
    "engine.dvr.method",
]


def methods() -> Registry[Method]:
    """Every registered method, by name (imports each ``method.py``; heavy imports stay inside)."""
    reg = Registry[Method]("method")
    for mod in METHOD_MODULES:
        m = importlib.import_module(mod).METHOD
        reg.add(m.name, m)
    return reg
