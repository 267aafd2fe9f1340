"""Pair sources: anything that yields (image, caption, factors) by index, plus a name registry.

- ``shapes``: the built-in Shapes world (engine.datasets.shapes);
- a captions file (CSV / JSONL / Parquet with an image-path column and a caption column),
  image paths relative to the file's folder or to ``--images``;
- COCO-style caption annotations (a JSON with ``images`` and ``annotations``).
Unreadable, truncated or oversized images come back as ``None`` with the reason.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd
from PIL import Image

from engine.config import file_hash
from engine.datasets.shapes import FACTOR_KINDS, ShapesConfig, ShapesWorld

MAX_PIXELS = 40_000_000
IMAGE_COLUMNS = ("image", "image_path", "path", "file", "filename", "file_name")
CAPTION_COLUMNS = ("caption", "text", "captions", "sentence")


@dataclass
class Pair:
    image: Image.Image | None
    caption: str
    factors: dict[str, str]
    path: str
    error: str | None = None


class PairSource(Protocol):
    factor_kinds: dict[str, str]

    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Pair: ...
    def identity(self) -> dict: ...
    def slug(self) -> str: ...


def load_image(path: str | os.PathLike) -> tuple[Image.Image | None, str | None]:
    """Open and fully decode an image as RGB; (None, reason) when it cannot be used."""
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                return None, f"oversized ({im.width}x{im.height} > {MAX_PIXELS} pixels)"
            im.load()
            return im.convert("RGB"), None
    except FileNotFoundError:
        return None, "missing file"
    except Image.DecompressionBombError as exc:
        return None, f"oversized ({exc})"
    except (OSError, SyntaxError, ValueError) as exc:
        return None, f"unreadable ({type(exc).__name__}: {exc})"


class ShapesSource:
    def __init__(self, cfg: ShapesConfig):
        self.cfg, self.world = cfg, ShapesWorld(cfg)
        self.factor_kinds = dict(FACTOR_KINDS)

    def __len__(self) -> int:
        return len(self.world)

    def __getitem__(self, i: int) -> Pair:
        im, cap, f = self.world[i]
        return Pair(im, cap, f, f"shapes://{self.cfg.seed}/{i}")

    def identity(self) -> dict:
        return {"source": "shapes", **self.cfg.to_dict()}

    def slug(self) -> str:
        return f"shapes-n{self.cfg.n}-s{self.cfg.seed}"


class TableSource:
    """Rows of (image path, caption) from a captions file or COCO annotations."""

    def __init__(self, rows: pd.DataFrame, root: Path, origin: Path, kind: str):
        self.rows, self.root, self.origin, self.kind = rows.reset_index(drop=True), root, origin, kind
        self.factor_kinds = {c: "shared" for c in rows.columns if c not in ("image", "caption")}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Pair:
        row = self.rows.iloc[i]
        path = Path(row["image"])
        path = path if path.is_absolute() else self.root / path
        im, err = load_image(path)
        factors = {k: str(row[k]) for k in self.factor_kinds}
        return Pair(im, str(row["caption"]), factors, str(path), err)

    def identity(self) -> dict:
        return {"source": self.kind, "file": str(self.origin.resolve()), "file_hash": file_hash(self.origin),
                "images": str(self.root.resolve()), "n": len(self)}

    def slug(self) -> str:
        return f"{self.origin.stem}-n{len(self)}"


def _pick(columns, candidates, what: str, path: Path) -> str:
    for c in candidates:
        if c in columns:
            return c
    raise ValueError(f"{path.name}: no {what} column; name one of {list(candidates)} (found {list(columns)})")


def captions_file(path: Path, images: Path | None = None) -> TableSource:
    """CSV / JSONL / Parquet with an image-path and a caption column; other columns become labels."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df = pd.read_csv(path)
    elif suffix in (".jsonl", ".ndjson"):
        df = pd.read_json(path, lines=True)
    elif suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        raise ValueError(f"{path.name}: captions must be .csv, .jsonl or .parquet (or COCO .json)")
    img_col = _pick(df.columns, IMAGE_COLUMNS, "image path", path)
    cap_col = _pick(df.columns, CAPTION_COLUMNS, "caption", path)
    df = df.rename(columns={img_col: "image", cap_col: "caption"})
    return TableSource(df, images or path.parent, path, "captions")


def coco(path: Path, images: Path | None = None) -> TableSource:
    """COCO caption annotations: one pair per annotation (an image with 5 captions gives 5 pairs)."""
    data = json.loads(path.read_text())
    if "images" not in data or "annotations" not in data:
        raise ValueError(f"{path.name}: not COCO captions (needs 'images' and 'annotations')")
    files = {im["id"]: im["file_name"] for im in data["images"]}
    rows = [{"image": files[a["image_id"]], "caption": a["caption"]} for a in data["annotations"] if a["image_id"] in files]
    return TableSource(pd.DataFrame(rows, columns=["image", "caption"]), images or path.parent, path, "coco")


def resolve(dataset: str, n: int = 4000, seed: int = 0, images: str | None = None) -> PairSource:
    """``shapes`` or a path to a captions file / COCO annotations."""
    if dataset == "shapes":
        return ShapesSource(ShapesConfig(n=n, seed=seed))
    path = Path(dataset).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"dataset {dataset!r}: use 'shapes' or a path to a captions .csv/.jsonl/.parquet or COCO .json")
    img_root = Path(images).expanduser() if images else None
    return coco(path, img_root) if path.suffix.lower() == ".json" else captions_file(path, img_root)
