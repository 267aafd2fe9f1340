"""Typed configs: dataclasses that validate early, round-trip through JSON and hash stably.

Every artifact the engine writes has its config saved beside it (``save_json``), and
cache keys are built from ``stable_hash`` of the config plus every other input.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, TypeVar

T = TypeVar("T", bound="Config")


def stable_hash(obj: Any, length: int = 12) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys), first ``length`` hex chars."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_hash(path: str | os.PathLike, length: int = 16) -> str:
    """sha256 of a file's bytes (streamed), first ``length`` hex chars."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def array_hash(x, length: int = 16) -> str:
    """sha256 of an array's dtype, shape and bytes: data keyed by what it holds, not how it was made."""
    import numpy as np

    a = np.ascontiguousarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:length]


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@dataclasses.dataclass
class Config:
    """Base for every engine config. Subclasses add typed fields and a ``validate``."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # overridden where fields have constraints
        pass

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any]) -> T:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}; known: {sorted(names)}")
        return cls(**d)

    def key(self) -> str:
        return stable_hash({"type": type(self).__name__, **self.to_dict()})

    def save_json(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load_json(cls: type[T], path: str | os.PathLike) -> T:
        return cls.from_dict(json.loads(Path(path).read_text()))


def check_choice(name: str, value: Any, choices: Any) -> None:
    """Raise a ValueError that names the valid choices."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {choices}")


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


@contextlib.contextmanager
def environ(name: str, value: str | None) -> Iterator[None]:
    """``os.environ[name] = value`` for the block (unchanged when ``value`` is None), then restored."""
    old = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
