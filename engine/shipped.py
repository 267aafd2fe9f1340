"""The one hook every trainer calls before training: use the shipped asset instead, unless a
retrain was asked for.

``use_shipped(name, config_key, dest)`` copies asset ``name`` into the cache (``dest``: asset
file name -> cache path) when ``assets/manifest.json`` records it with this config key and every
hash matches; it returns False (so the caller trains) when there is no such asset or when a
retrain is requested. A retrain is requested by ``geolens build-defaults --retrain`` (or any run
with ``GEOLENS_RETRAIN=1``); then ``is_shipped_copy`` also lets a caller treat a cached copy of
the shipped weights as absent, so ``--retrain`` really trains.
"""
from __future__ import annotations

import os
from pathlib import Path

from engine.core import assets

ENV_RETRAIN = "GEOLENS_RETRAIN"


def retrain_requested() -> bool:
    return os.environ.get(ENV_RETRAIN, "") not in ("", "0", "false")


def use_shipped(name: str, config_key: str, dest: dict[str, Path]) -> bool:
    """Install asset ``name`` into ``dest`` if it matches ``config_key`` and no retrain is requested."""
    if retrain_requested():
        return False
    return assets.install(name, config_key, dest)


def is_shipped_copy(name: str, path: Path) -> bool:
    """True if ``path`` holds exactly the bytes of one of asset ``name``'s shipped files."""
    entry = assets.entry(name)
    if entry is None or not Path(path).exists():
        return False
    return assets.sha256(path) in entry["files"].values()


def needs_training(name: str, path: Path, config_key: str, dest: dict[str, Path]) -> bool:
    """Whether a trainer must train: its weights ``path`` are not in the cache and no shipped asset
    fits (installed into ``dest`` here if one does), or a retrain is requested and ``path`` is
    missing or only a copy of the shipped asset."""
    if retrain_requested():
        return not Path(path).exists() or is_shipped_copy(name, path)
    return not (Path(path).exists() or use_shipped(name, config_key, dest))


def shipped_weights(config_key: str) -> tuple[str, str] | None:
    """(asset name, its one file's name) of the intact one-file asset recorded under ``config_key``
    (an artifact key); None when there is none or a retrain is requested."""
    name = assets.name_for_key(config_key)
    if name is None or retrain_requested():
        return None
    found = assets.lookup(name, config_key)
    return (name, next(iter(found))) if found and len(found) == 1 else None
