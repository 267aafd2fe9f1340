"""Where user-given paths may point, and the messages when they may not.

- ``inside(path, roots)``: does ``path`` (symlinks followed, ``..`` collapsed) lie under one of ``roots``?
  Image paths of a captions file must (``engine.datasets.sources``) unless ``--allow-outside-images``.
- ``data_root()`` / ``check_data_folder(text)``: server paths typed into a page (the dvr page's
  samples folder) must be folders under the data root: ``$GEOLENS_DATA_ROOT``, else
  ``<cache root>/inputs/``.
- ``disk_full(path, exc)``: the one message for a write that ran out of space.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Iterable

ENV_DATA_ROOT = "GEOLENS_DATA_ROOT"


def _real(path: str | os.PathLike) -> Path:
    """``path`` made absolute with every symlink and ``..`` resolved (it need not exist)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def inside(path: str | os.PathLike, roots: Iterable[str | os.PathLike]) -> bool:
    """True if ``path``, once resolved, is one of ``roots`` or lies below one of them (also resolved)."""
    real = _real(path)
    return any(real == r or real.is_relative_to(r) for r in (_real(r) for r in roots))


def data_root() -> Path:
    """The folder pages may read user data from: ``$GEOLENS_DATA_ROOT``, else ``<cache root>/inputs/``."""
    env = os.environ.get(ENV_DATA_ROOT)
    if env:
        return _real(env)
    from engine.store import cache_root

    root = cache_root() / "inputs"
    root.mkdir(parents=True, exist_ok=True)
    return _real(root)


def check_data_folder(text: str, root: Path | None = None) -> Path:
    """The folder named by ``text`` (absolute, or relative to the data root) if it is an existing
    folder under the data root; else ``ValueError`` saying where folders must be."""
    root = _real(root) if root is not None else data_root()
    text = (text or "").strip()
    if not text:
        raise ValueError(f"enter a folder under the data root {root}")
    if "\x00" in text:
        raise ValueError(f"{text!r} is not a valid path (it contains a NUL character)")
    p = Path(os.path.expanduser(text))
    real = _real(p if p.is_absolute() else root / p)
    if not (real == root or real.is_relative_to(root)):
        raise ValueError(f"{text} is outside the data root {root}: copy or move the folder under {root} "
                         f"(or start the app with {ENV_DATA_ROOT} set to a folder that contains it)")
    if not real.exists():
        raise FileNotFoundError(f"{text} does not exist under the data root {root}")
    if not real.is_dir():
        raise ValueError(f"{text} is a file, not a folder: give the folder that holds the model folders")
    return real


class DiskFullError(RuntimeError):
    """A write ran out of space; the previous finished file is untouched."""


def is_disk_full(exc: BaseException) -> bool:
    """OSError(ENOSPC/EDQUOT), or a library error (DuckDB) whose message says the disk is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return True
    msg = str(exc).lower()
    return "no space left on device" in msg or "disk quota exceeded" in msg


def disk_full(path: str | os.PathLike, exc: BaseException | None = None) -> DiskFullError:
    """The error to raise (``from exc``) when writing ``path`` ran out of space."""
    return DiskFullError(f"no space left on device while writing {path}; free space and rerun — nothing was lost "
                         "(the last finished version is untouched and the rerun resumes)")
