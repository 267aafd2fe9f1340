"""The samples folder: how any one-shot generator hands its samples to the evaluation.

Layout::

    <samples root>/
      <model>/                  one folder per model configuration (name = model id)
        model.json              optional: {"family": "vae", "sweep": "beta", "params": {"beta": 1.0}}
        <class>/                one folder per test class, named like the reference's classes
          exemplar.png          the exemplar the generator was given
          <anything>.png        the samples (>= 2; 20 in the paper), any side, any polarity

Images are preprocessed like the real drawings (``omniglot.to_ink``: 50×50, [0, 1],
binarised at 0.5). Recognizability uses the folder's own exemplars as the support set.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from PIL import Image

from engine.config import atomic_write_text, file_hash, stable_hash
from engine.dvr.omniglot import SIDE, image_files, to_ink

EXEMPLAR = "exemplar.png"
MODEL_JSON = "model.json"


@dataclasses.dataclass
class ModelSamples:
    """One model's samples: classes (C,), exemplars (C, 50, 50), samples (C, S, 50, 50), metadata."""

    name: str
    classes: list[str]
    exemplars: np.ndarray
    samples: np.ndarray
    meta: dict
    folder: str


def save_png(path: Path, ink: np.ndarray) -> None:
    """Write an ink image (H, W) in [0, 1] as a black-on-white binary PNG."""
    Image.fromarray(((1.0 - (ink >= 0.5)) * 255).astype(np.uint8)).convert("1").save(path)


def write_model(root: Path, name: str, classes: list[str], exemplars: np.ndarray, samples: np.ndarray, meta: dict) -> Path:
    """Write one model's samples in the layout above; returns the model folder."""
    folder = root / name
    for c, cls in enumerate(classes):
        d = folder / cls
        d.mkdir(parents=True, exist_ok=True)
        save_png(d / EXEMPLAR, exemplars[c])
        for s in range(samples.shape[1]):
            save_png(d / f"{s:04d}.png", samples[c, s])
    atomic_write_text(folder / MODEL_JSON, json.dumps(meta, indent=2, sort_keys=True))
    return folder


def model_folders(root: str | Path) -> list[Path]:
    """The model folders under a samples root, with a message that names the fix when the layout is wrong."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"samples folder {root} does not exist")
    models = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not models:
        raise ValueError(f"{root} has no model folders: expected <model>/<class>/{EXEMPLAR} plus sample PNGs")
    for m in models:
        if (m / EXEMPLAR).exists():
            raise ValueError(f"{m} holds {EXEMPLAR} directly: point at the folder *above* the model folders "
                             "(layout <root>/<model>/<class>/*.png)")
    return models


def folder_signature(root: str | Path) -> str:
    """Hash of every file name and content under the samples root (the cache key part)."""
    root = Path(root).expanduser()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return stable_hash([(str(p.relative_to(root)), file_hash(p)) for p in files], 16)


def _ink(path: Path) -> np.ndarray:
    """One image file as ink; a clear error naming the file when it is no readable image."""
    try:
        with Image.open(path) as im:
            return to_ink(im)
    except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise ValueError(f"{path} is not a readable image ({type(exc).__name__}); replace it with a PNG "
                         "(any size, black ink on white) or delete it") from None


def _model_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); fix it or delete it (it is optional)") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} must hold a JSON object such as {{\"family\": \"vae\"}}")
    return meta


def read_model(folder: Path) -> ModelSamples:
    """Load one model folder; every class needs the exemplar and the same number (>= 2) of samples."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"model folder {folder} has no class folders")
    exemplars, samples, counts = [], [], set()
    for c in classes:
        ex = c / EXEMPLAR
        if not ex.exists():
            raise ValueError(f"{c} has no {EXEMPLAR}: save the exemplar given to the generator there")
        paths = [p for p in image_files(c) if p.name != EXEMPLAR]
        counts.add(len(paths))
        exemplars.append(_ink(ex))
        samples.append(np.stack([_ink(q) for q in paths]) if paths else np.zeros((0, SIDE, SIDE), np.float32))
    if len(counts) != 1 or min(counts) < 2:
        raise ValueError(f"{folder}: every class needs the same number (>= 2) of samples, found counts {sorted(counts)}")
    meta = _model_json(folder / MODEL_JSON) if (folder / MODEL_JSON).exists() else {}
    return ModelSamples(folder.name, [c.name for c in classes], np.stack(exemplars), np.stack(samples), meta, str(folder))


def class_images(model_folder: str | Path, cls: str) -> tuple[Path | None, list[Path]]:
    """(exemplar path, sample paths) of one class of a model folder, for display; (None, []) when the
    folder is gone or unreadable (an evaluated run's samples may have been moved or locked since)."""
    from engine.store import resolve_stored

    d = resolve_stored(model_folder) / cls
    try:
        if not d.is_dir():
            return None, []
        ex = d / EXEMPLAR
        return (ex if ex.exists() else None), [p for p in image_files(d) if p.name != EXEMPLAR]
    except OSError:
        return None, []


def montage(paths: list[str | Path], cols: int = 5, side: int = 50, pad: int = 2) -> np.ndarray:
    """Tile images (preprocessed, ink dark on white) into one (rows·(side+pad), cols·(side+pad)) uint8 array."""
    if not paths:
        return np.full((side, side), 255, np.uint8)
    rows = (len(paths) + cols - 1) // cols
    out = np.full((rows * (side + pad) - pad, min(cols, len(paths)) * (side + pad) - pad), 200, np.uint8)
    for i, p in enumerate(paths):
        r, c = divmod(i, cols)
        ink = to_ink(Image.open(p), side)
        out[r * (side + pad): r * (side + pad) + side, c * (side + pad): c * (side + pad) + side] = (1 - ink) * 255
    return out
