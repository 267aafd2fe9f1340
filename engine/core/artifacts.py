"""One artifact store: everything derived from a cache or trained by the engine.

An artifact is a folder ``<cache root>/artifacts/<kind>/<key>/`` holding its files and a
``manifest.json``. Its key hashes everything it depends on, by content:

    key = hash(kind, config, sorted input keys, the kind's version)

Inputs are named by *their* keys (an embedding cache's manifest key, another artifact's key,
a file's content hash from ``content_key``), never by paths, so moving the cache folder
changes no key while changing any input's bytes does.

Writes are atomic: ``writing`` yields a private partial folder; on success the manifest is
written last and the folder is renamed into place, so a reader sees either no artifact or a
whole one. A failed or killed writer leaves ``<key>.partial`` for the next run to resume
from (``resume=True``) or replace. Readers never write: ``find``/``get``/``list`` only read.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import platform
import shutil
import socket
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from engine.config import atomic_write_text, file_hash, stable_hash

MANIFEST = "manifest.json"
PARTIAL = ".partial"
SCHEMA = 1
"""Version of the manifest layout itself (not of any kind)."""


def root() -> Path:
    """``<cache root>/artifacts``: the store's folder (it follows ``$GEOLENS_CACHE``)."""
    from engine.store import cache_root

    return cache_root() / "artifacts"


def content_key(path: str | os.PathLike) -> str:
    """Content hash of a file (weights, an image, a font) or of every file under a folder."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return stable_hash([[str(p.relative_to(path)), file_hash(p)] for p in files], 16)
    return file_hash(path)


def artifact_key(kind: str, config: Mapping[str, Any], inputs: Sequence[str], version: str) -> str:
    """The key of an artifact: hash of its kind, config, input keys (order-free) and version."""
    return stable_hash({"kind": kind, "config": dict(config), "inputs": sorted(inputs), "version": version}, 16)


@dataclasses.dataclass(frozen=True)
class Artifact:
    """A finished artifact on disk. ``manifest`` is the parsed ``manifest.json``."""

    kind: str
    key: str
    path: Path
    manifest: dict

    def file(self, name: str) -> Path:
        """Path of one of the artifact's files (which must exist)."""
        p = self.path / name
        if not p.exists():
            raise FileNotFoundError(f"artifact {self.kind}/{self.key} has no file {name!r} (folder {self.path})")
        return p

    @property
    def config(self) -> dict:
        return self.manifest["config"]

    @property
    def inputs(self) -> list[str]:
        return self.manifest["inputs"]

    @property
    def name(self) -> str:
        """A human name (``manifest['name']``), else the key."""
        return self.manifest.get("name") or self.key

    @property
    def meta(self) -> dict:
        """Free-form results recorded by the builder (metrics, timings)."""
        return self.manifest.get("meta", {})


def folder(kind: str, key: str) -> Path:
    from engine.store import ident

    ident(kind.replace("-", "_"))
    return root() / kind / key


def find(kind: str, key: str) -> Artifact | None:
    """The finished artifact ``kind/key``, or None. Never writes."""
    path = folder(kind, key)
    man = path / MANIFEST
    if not man.exists():
        return None
    return Artifact(kind, key, path, json.loads(man.read_text()))


def get(kind: str, key_or_name: str) -> Artifact:
    """The artifact with this key (or unique name); a clear error names what exists."""
    found = find(kind, key_or_name)
    if found is not None:
        return found
    named = [a for a in list(kind) if a.name == key_or_name]
    if len(named) == 1:
        return named[0]
    have = ", ".join(a.name for a in list(kind)) or "none"
    raise FileNotFoundError(f"no {kind} artifact {key_or_name!r}; built: {have} (`geolens {kind} list`)")


def list(kind: str | None = None, of: str | None = None) -> "list[Artifact]":  # noqa: A001 - the store's verb
    """Finished artifacts of ``kind`` (every kind if None) whose inputs include ``of``, oldest first."""
    base = root()
    kinds = [kind] if kind else sorted(p.name for p in base.iterdir() if p.is_dir()) if base.exists() else []
    out = []
    for k in kinds:
        kdir = base / k
        if not kdir.is_dir():
            continue
        for p in kdir.iterdir():
            if p.name.endswith(PARTIAL) or not (p / MANIFEST).exists():
                continue
            art = Artifact(k, p.name, p, json.loads((p / MANIFEST).read_text()))
            if of is None or of in art.inputs:
                out.append(art)
    return sorted(out, key=lambda a: (a.manifest.get("created", ""), a.key))


def provenance() -> dict:
    """Where and when: host, platform, python, torch, the engine version."""
    from engine import ENGINE_VERSION

    try:
        import torch

        torch_v = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        torch_v = None
    return {"host": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch_v, "engine_version": ENGINE_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


class Writer:
    """The partial folder of an artifact being written; ``meta`` is saved into the manifest."""

    def __init__(self, kind: str, key: str, path: Path, resumed: bool):
        self.kind, self.key, self.path, self.resumed = kind, key, path, resumed
        self.meta: dict[str, Any] = {}

    def file(self, name: str) -> Path:
        return self.path / name


@contextlib.contextmanager
def writing(kind: str, config: Mapping[str, Any], inputs: Sequence[str], version: str, *,
            name: str | None = None, resume: bool = True) -> Iterator[Writer]:
    """Write the artifact ``kind/artifact_key(...)`` atomically.

    Yields a ``Writer`` on ``<key>.partial``. With ``resume`` an existing partial folder from an
    interrupted run is kept (``writer.resumed`` is True), so the builder can continue from its own
    checkpoints there; else it is cleared. On success ``manifest.json`` is written last and the
    folder renamed into place (replacing an older finished copy). On an exception the partial
    folder stays and nothing finished is touched.
    """
    key = artifact_key(kind, config, inputs, version)
    final = folder(kind, key)
    partial = final.with_name(key + PARTIAL)
    resumed = partial.exists() and resume
    if partial.exists() and not resume:
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    w = Writer(kind, key, partial, resumed)
    yield w
    manifest = {"schema": SCHEMA, "kind": kind, "key": key, "name": name, "config": dict(config),
                "inputs": sorted(inputs), "version": version, **provenance(), "meta": w.meta}
    atomic_write_text(partial / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=float))
    if final.exists():  # rebuilt (e.g. --retrain): swap, so readers never see a missing folder for long
        old = final.with_name(key + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(partial, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, final)


WEIGHTS = "weights.safetensors"


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, Any]) -> None:
    """Tensors (a ``state_dict``) to a safetensors file, via a temp file and a rename."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def load_tensors(path: str | os.PathLike) -> dict:
    """A safetensors file back as a dict of CPU tensors (no pickle involved)."""
    from safetensors.torch import load_file

    return load_file(str(path))


def from_asset(kind: str, config: Mapping[str, Any], inputs: Sequence[str], version: str,
               name: str | None = None) -> Artifact | None:
    """Install the shipped asset recorded under this artifact's key (``assets/manifest.json``) as
    the artifact ``kind/key``; None when no intact asset has this key or a retrain is requested.

    The asset's one weights file becomes ``WEIGHTS``; its recorded meta becomes the manifest's,
    with ``from_asset`` naming the file.
    """
    from engine.core import assets
    from engine.shipped import shipped_weights

    key = artifact_key(kind, config, inputs, version)
    if (found := shipped_weights(key)) is None:
        return None
    asset, fname = found
    with writing(kind, config, inputs, version, name=name, resume=False) as w:
        if not assets.install(asset, key, {fname: w.file(WEIGHTS)}):
            raise OSError(f"asset {asset!r} matched key {key} but could not be copied from {assets.assets_dir()}")
        entry = assets.entry(asset) or {}
        w.meta = {**entry.get("meta", entry.get("metrics", {})), "from_asset": fname}
    return find(kind, key)


def model_artifact(kind: str, config: Mapping[str, Any], inputs: Sequence[str], version: str,
                   make, train, *, allow_train: bool = True, name: str | None = None):
    """Load the trained module ``kind/key`` or train and save it: the one path every trained model takes.

    Looks in the store, then among the shipped assets (by this key), then trains.
    ``make(meta) -> nn.Module`` builds the empty module from the saved ``meta``; ``train() -> (module,
    meta)`` trains one. Returns the module in eval mode, or None when missing and ``allow_train`` is False.
    """
    from engine.shipped import retrain_requested

    found = find(kind, artifact_key(kind, config, inputs, version)) or from_asset(kind, config, inputs, version, name)
    if found is not None and "from_asset" in found.meta and retrain_requested():
        found = None  # --retrain: the installed copy of the shipped weights does not count as trained here
    if found is not None:
        model = make(found.meta)
        model.load_state_dict(load_tensors(found.file(WEIGHTS)))
        return model.eval()
    if not allow_train:
        return None
    import time

    t0 = time.perf_counter()
    model, meta = train()
    with writing(kind, config, inputs, version, name=name) as w:
        save_tensors(w.file(WEIGHTS), model.state_dict())
        w.meta.update({"train_seconds": round(time.perf_counter() - t0, 4), **meta})
    return model.eval()
