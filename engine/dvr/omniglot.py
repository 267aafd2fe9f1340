"""Omniglot's folder layout, the paper's split and preprocessing.

Layout (Lake et al. 2015; the built-in stroke set is written the same way)::

    root/images_background/<alphabet>/character01/0709_01.png   (20 drawings per character)
    root/images_evaluation/<alphabet>/characterNN/*.png

Split (Boutin et al. 2022, docs/METHODS.md §4): test = characters 1–3 of every alphabet, in
both folders (150 classes on Omniglot); training = every other character.

Preprocessing (the paper's): resize to 50×50, scale to [0, 1], binarise at 0.5. Arrays are
ink = 1, background = 0 (Omniglot's PNGs are black ink on white; we invert after resizing).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

from engine.config import stable_hash

FOLDERS = ("images_background", "images_evaluation")
SIDE = 50
N_TEST_CHARS = 3
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")


@dataclasses.dataclass(frozen=True)
class CharClass:
    """One character: its alphabet, character folder name, and sorted drawing paths."""

    folder: str
    alphabet: str
    character: str
    paths: tuple[Path, ...]

    @property
    def name(self) -> str:
        """Class id used everywhere else (samples folders, caches): ``alphabet__character``."""
        return f"{self.alphabet}__{self.character}"

    @property
    def index(self) -> int:
        """1-based character number within its alphabet (``character07`` -> 7)."""
        digits = "".join(ch for ch in self.character if ch.isdigit())
        return int(digits) if digits else 0


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def scan(root: str | Path) -> list[CharClass]:
    """Every character under ``root`` in Omniglot's layout, sorted by (folder, alphabet, character)."""
    root = Path(root)
    present = [f for f in FOLDERS if (root / f).is_dir()]
    if not present:
        raise FileNotFoundError(
            f"{root} is not in Omniglot's layout: expected {FOLDERS[0]}/ and/or {FOLDERS[1]}/ "
            "with <alphabet>/<characterNN>/*.png inside (unzip images_background.zip and images_evaluation.zip there)")
    out: list[CharClass] = []
    for f in present:
        for alpha in sorted(p for p in (root / f).iterdir() if p.is_dir()):
            for char in sorted(p for p in alpha.iterdir() if p.is_dir()):
                paths = image_files(char)
                if paths:
                    out.append(CharClass(f, alpha.name, char.name, tuple(paths)))
    if not out:
        raise FileNotFoundError(f"no drawings found under {root}/{{{','.join(present)}}}/<alphabet>/<character>/*.png")
    return out


def paper_split(classes: list[CharClass], n_test: int = N_TEST_CHARS) -> tuple[list[CharClass], list[CharClass]]:
    """(train, test): test = characters 1..n_test of every alphabet; train = the rest."""
    test = [c for c in classes if 1 <= c.index <= n_test]
    train = [c for c in classes if not 1 <= c.index <= n_test]
    return train, test


def to_ink(img: Image.Image | np.ndarray, side: int = SIDE) -> np.ndarray:
    """The paper's preprocessing: resize to side×side, scale to [0, 1], binarise at 0.5.

    Returns (side, side) float32 with ink = 1. Polarity is detected: images whose mean
    intensity is below 0.5 (white strokes on black) are taken as already ink-bright.
    """
    if isinstance(img, np.ndarray):
        arr = img.astype(np.float32)
        if arr.max() > 1.0:
            arr = arr / 255.0
        img = Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8))
    g = img.convert("L")
    if g.size != (side, side):
        g = g.resize((side, side), Image.BILINEAR)
    x = np.asarray(g, dtype=np.float32) / 255.0  # (side, side) in [0, 1]
    if x.mean() >= 0.5:  # dark ink on a light background (Omniglot): invert
        x = 1.0 - x
    return (x >= 0.5).astype(np.float32)


def load_images(paths: list[Path] | tuple[Path, ...], side: int = SIDE) -> np.ndarray:
    """(n, side, side) float32 ink images."""
    return np.stack([to_ink(Image.open(p), side) for p in paths]) if paths else np.zeros((0, side, side), np.float32)


@dataclasses.dataclass
class OmniglotData:
    """Preprocessed arrays for the evaluation.

    train_x: (N, 50, 50) float32, train_y: (N,) int64 class ids 0..n_train-1;
    test_x: (C, D, 50, 50) the test classes' drawings (D drawers each, drawing 1 is the exemplar);
    test_names: (C,) class ids ``alphabet__character``; key: stable hash of the files and split.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_names: list[str]
    key: str

    @property
    def exemplars(self) -> np.ndarray:  # (C, 50, 50)
        return self.test_x[:, 0]

    @property
    def humans(self) -> np.ndarray:  # (C, D-1, 50, 50): the real drawings other than the exemplar
        return self.test_x[:, 1:]


def load_split(root: str | Path, n_test: int = N_TEST_CHARS, side: int = SIDE, progress=None) -> OmniglotData:
    """Scan ``root``, split as in the paper, load and preprocess every drawing."""
    classes = scan(root)
    train, test = paper_split(classes, n_test)
    if len(test) < 2:
        raise ValueError(f"only {len(test)} test classes under {root}: need characters 1..{n_test} in >= 2 alphabets")
    if not train:
        raise ValueError(f"no training characters under {root}: every alphabet has only characters 1..{n_test}")
    counts = {len(c.paths) for c in test}
    if len(counts) != 1 or min(counts) < 2:
        raise ValueError(f"test classes must all have the same number (>= 2) of drawings, got {sorted(counts)}")
    ident = [(c.folder, c.alphabet, c.character, [p.name for p in c.paths], [p.stat().st_size for p in c.paths])
             for c in classes]
    key = stable_hash({"files": ident, "n_test": n_test, "side": side, "prep": "resize-bilinear,>=0.5"})
    xs, ys = [], []
    total = len(train) + len(test)
    for i, c in enumerate(train):
        xs.append(load_images(c.paths, side))
        ys.append(np.full(len(c.paths), i, dtype=np.int64))
        if progress:
            progress(i + 1, total)
    tx = []
    for j, c in enumerate(test):
        tx.append(load_images(c.paths, side))
        if progress:
            progress(len(train) + j + 1, total)
    return OmniglotData(np.concatenate(xs), np.concatenate(ys), np.stack(tx), [c.name for c in test], key)
