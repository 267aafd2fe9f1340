"""Trained weights shipped with the repository under ``assets/``, with a manifest of how
each was made, so a first build only encodes, solves and evaluates.

``assets/manifest.json``::

    {"assets": {"<name>": {"files": {"<file>": "<sha256>"}, "config_key": "...", "config": {...},
                           "command": "geolens ...", "seed": 0, "machine": {...},
                           "train_seconds": 123.4, "created": "...", "metrics": {...},
                           "meta": {...}}}}   # meta: the artifact's manifest meta (model artifacts)

Rules: only the project's own commands make assets (``publish`` is called by them);
a build uses an asset only when its config key and every file's hash match (``lookup``);
``--retrain`` ignores assets; a heavy test retrains each one and compares its metrics with
the manifest. All assets together stay under ``BUDGET_BYTES``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from engine.config import atomic_write_text

BUDGET_BYTES = 40 * 1024 * 1024
ENV_ASSETS = "GEOLENS_ASSETS"


def assets_dir() -> Path:
    """``assets/`` at the repository root, or ``$GEOLENS_ASSETS``."""
    return Path(os.environ.get(ENV_ASSETS) or Path(__file__).resolve().parents[2] / "assets")


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest() -> dict:
    path = assets_dir() / "manifest.json"
    if not path.exists():
        return {"assets": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); restore it with `git checkout assets/manifest.json`") from exc


def entry(name: str) -> dict | None:
    return manifest()["assets"].get(name)


def problems(name: str) -> list[str]:
    """Why asset ``name`` cannot be used as shipped ([] if it can)."""
    e = entry(name)
    if e is None:
        return [f"no asset {name!r} in {assets_dir() / 'manifest.json'}"]
    out = []
    for fname, digest in e["files"].items():
        p = assets_dir() / fname
        if not p.exists():
            out.append(f"{p} is missing")
        elif sha256(p) != digest:
            out.append(f"{p} has sha256 {sha256(p)[:12]}…, the manifest says {digest[:12]}…")
    return out


def lookup(name: str, config_key: str) -> dict[str, Path] | None:
    """The shipped files of ``name`` if they were made with this config and are intact, else None."""
    e = entry(name)
    if e is None or e.get("config_key") != config_key or problems(name):
        return None
    return {fname: assets_dir() / fname for fname in e["files"]}


def name_for_key(config_key: str) -> str | None:
    """The asset recorded with this config (artifact) key, if any: how a trainer finds its asset."""
    for name, e in manifest()["assets"].items():
        if e.get("config_key") == config_key:
            return name
    return None


def install(name: str, config_key: str, dest: dict[str, Path]) -> bool:
    """Copy the asset's files to ``dest`` (file name -> target path) if ``lookup`` accepts it."""
    found = lookup(name, config_key)
    if found is None or set(found) != set(dest):
        return False
    for fname, src in found.items():
        target = Path(dest[fname])
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".partial")
        shutil.copyfile(src, tmp)
        os.replace(tmp, target)
    return True


def total_bytes() -> int:
    return sum(p.stat().st_size for p in assets_dir().glob("*") if p.is_file() and p.name != "manifest.json")


def publish(name: str, files: dict[str, Path], *, config: dict, config_key: str, command: str, seed: int,
            train_seconds: float, metrics: dict, machine: dict | None = None, meta: dict | None = None) -> dict:
    """Copy ``files`` (asset file name -> built file) into ``assets/`` and record them.

    Refuses to grow ``assets/`` past ``BUDGET_BYTES``. ``meta`` is the trained artifact's own
    manifest meta, restored when the asset is installed into a store (``artifacts.from_asset``).
    """
    from engine.core.artifacts import provenance

    folder = assets_dir()
    folder.mkdir(parents=True, exist_ok=True)
    old = entry(name) or {"files": {}}
    replaced = sum((folder / f).stat().st_size for f in old["files"] if (folder / f).exists())
    added = sum(Path(p).stat().st_size for p in files.values())
    if total_bytes() - replaced + added > BUDGET_BYTES:
        raise ValueError(f"publishing {name!r} ({added / 2**20:.1f} MiB) would take assets/ past "
                         f"{BUDGET_BYTES / 2**20:.0f} MiB; shrink the model or drop another asset")
    for fname, src in files.items():
        tmp = folder / (fname + ".partial")
        shutil.copyfile(src, tmp)
        os.replace(tmp, folder / fname)
    for stale in set(old["files"]) - set(files):  # a retrained asset under a new file name: drop the old file
        (folder / stale).unlink(missing_ok=True)
    prov = provenance()
    rec = {"files": {f: sha256(folder / f) for f in files}, "config_key": config_key, "config": config,
           "command": command, "seed": seed, "machine": machine or {k: prov[k] for k in ("host", "platform", "torch")},
           "train_seconds": round(float(train_seconds), 1), "created": prov["created"], "metrics": metrics}
    if meta is not None:
        rec["meta"] = meta
    man = manifest()
    man["assets"][name] = rec
    atomic_write_text(folder / "manifest.json", json.dumps(man, indent=2, sort_keys=True, default=float) + "\n")
    return rec
