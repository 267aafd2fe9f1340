"""Pair sources: anything that yields (image, caption, factors) by index, plus a name registry.

- ``shapes``: the built-in Shapes world (engine.datasets.shapes);
- a captions file (CSV / JSONL / Parquet with an image-path column and a caption column),
  image paths relative to the file's folder or to ``--images``;
- COCO-style caption annotations (a JSON with ``images`` and ``annotations``).

A file that cannot be read as a whole raises ``ValueError`` naming the file, the line (or row,
or field) and the fix. Single bad rows (empty caption or image path, an annotation of an unknown
image) and unusable images (unreadable, truncated, oversized, not an image, a directory, or a
path outside the captions file's folder and ``--images``) come back as pairs with ``image=None``
and the reason, so precompute skips, counts and lists them. Paths outside the image folders are
refused before anything is opened, unless ``allow_outside_images``.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.config import file_hash, stable_hash
from engine.datasets.shapes import FACTOR_KINDS, ShapesConfig, ShapesWorld
from engine.paths import inside

MAX_PIXELS = 40_000_000
IMAGE_COLUMNS = ("image", "image_path", "path", "file", "filename", "file_name")
CAPTION_COLUMNS = ("caption", "text", "captions", "sentence")
COLUMNS_HINT = "an image-path column (image, path, ...) and a caption column (caption, text, ...)"
_WHERE = "_where"  # internal column: where a row came from ("row 3", "line 7"), for messages


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


# ---- images ------------------------------------------------------------------------------
def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB as displayed: EXIF orientation applied, 16-bit scaled to 8, transparency over white."""
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block: keep the pixels as stored
        pass
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16") or (a.size and a.max() > 255):
            a = a / 257.0
        return Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return im.convert("RGB")


def load_image(path: str | os.PathLike) -> tuple[Image.Image | None, str | None]:
    """Open and fully decode an image as RGB; (None, reason) when it cannot be used."""
    try:
        if Path(path).is_dir():
            return None, "a directory, not an image file"
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                return None, f"oversized ({im.width}x{im.height} > {MAX_PIXELS} pixels)"
            im.load()
            return _to_rgb(im), None
    except FileNotFoundError:
        return None, "missing file"
    except Image.DecompressionBombError as exc:
        return None, f"oversized ({exc})"
    except UnidentifiedImageError:
        return None, "not an image (no image format recognised: empty, or HTML/SVG/text named like an image?)"
    except Exception as exc:  # truncated or corrupt files raise many types inside Pillow
        return None, f"unreadable ({type(exc).__name__}: {exc})"


# ---- sources -----------------------------------------------------------------------------
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


def _is_empty(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()) \
        or v is pd.NA or v is pd.NaT


class TableSource:
    """Rows of (image path, caption) from a captions file or COCO annotations.

    Relative image paths resolve against ``root``; every path must resolve (symlinks followed)
    inside ``origin``'s folder or ``root`` unless ``allow_outside``.
    """

    def __init__(self, rows: pd.DataFrame, root: Path, origin: Path, kind: str, allow_outside: bool = False):
        self.rows, self.root, self.origin, self.kind = rows.reset_index(drop=True), root, origin, kind
        self.allow_outside = allow_outside
        self.roots = [origin.parent, root]
        self.factor_kinds = {c: "shared" for c in rows.columns if c not in ("image", "caption", _WHERE)}

    def __len__(self) -> int:
        return len(self.rows)

    def _where(self, i: int) -> str:
        w = self.rows[_WHERE].iloc[i] if _WHERE in self.rows.columns else f"row {i + 1}"
        return f"{self.origin.name} {w}"

    def __getitem__(self, i: int) -> Pair:
        row = self.rows.iloc[i]
        factors = {k: "" if _is_empty(row[k]) else str(row[k]) for k in self.factor_kinds}
        caption = "" if _is_empty(row["caption"]) else str(row["caption"])
        raw = row["image"]
        if _is_empty(raw):
            return Pair(None, caption, factors, f"{self._where(i)}", "empty image path: fill it in or drop the row")
        path = Path(str(raw))
        path = path if path.is_absolute() else self.root / path
        if "\x00" in str(raw):
            return Pair(None, caption, factors, str(raw).replace("\x00", "\\0"), "invalid path (contains a NUL character)")
        if not caption:
            return Pair(None, caption, factors, str(path), f"empty caption ({self._where(i)}): fill it in or drop the row")
        if not self.allow_outside and not inside(path, self.roots):
            where = " or ".join(sorted({str(r) for r in self.roots}))
            return Pair(None, caption, factors, str(path),
                        f"outside the image folders ({where}); refused without opening it: move it there "
                        "or pass --allow-outside-images")
        im, err = load_image(path)
        return Pair(im, caption, factors, str(path), err)

    def identity(self) -> dict:
        # By content, never by path: the captions file's bytes and every referenced image's bytes,
        # so editing an image changes the key and moving the folders does not.
        out = {"source": self.kind, "file_hash": file_hash(self.origin), "images_hash": self.images_hash(),
               "n": len(self)}
        return out | ({"allow_outside_images": True} if self.allow_outside else {})

    def images_hash(self) -> str:
        """Hash of (path as written in the file, sha256 of its bytes) over every row; unreadable -> its error."""
        from concurrent.futures import ThreadPoolExecutor

        def one(raw) -> list[str]:
            if _is_empty(raw) or "\x00" in str(raw):
                return [str(raw), "unusable"]
            path = Path(str(raw))
            path = path if path.is_absolute() else self.root / path
            try:
                return [str(raw), file_hash(path) if path.is_file() else "not a file"]
            except OSError as exc:
                return [str(raw), type(exc).__name__]

        with ThreadPoolExecutor(max_workers=8) as pool:
            return stable_hash(list(pool.map(one, self.rows["image"])), 16)

    def slug(self) -> str:
        return f"{self.origin.stem}-n{len(self)}"


# ---- reading captions files ----------------------------------------------------------------
def _read_text(path: Path) -> str:
    """The file as text (UTF-8, optional BOM); a clear error naming the byte's place otherwise."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        kind = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ValueError(
            f"{path.name} is not UTF-8 text{kind}: byte 0x{data[exc.start]:02x} at line {line}, column {col}; "
            f"re-encode it as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name}`") from None


def _empty_file(path: Path, what: str = "a header row with") -> ValueError:
    return ValueError(f"{path.name} is empty: expected {what} {COLUMNS_HINT}")


def _pick(columns, candidates, what: str, path: Path) -> str:
    norm = {str(c).strip().lower(): c for c in columns}
    for c in candidates:
        if c in norm:
            return norm[c]
    raise ValueError(f"{path.name}: no {what} column; rename the one holding it to one of {list(candidates)} "
                     f"(found {[str(c) for c in columns]})")


def _check_duplicates(columns, path: Path, where: str = "the header") -> None:
    seen: dict[str, int] = {}
    for c in columns:
        k = str(c).strip().lower()
        seen[k] = seen.get(k, 0) + 1
    dup = [k for k, n in seen.items() if n > 1]
    if dup:
        raise ValueError(f"{path.name}: column {dup[0]!r} appears {seen[dup[0]]} times in {where}; "
                         "rename or delete the extra one")


def _finish(df: pd.DataFrame, path: Path, where: list[str]) -> pd.DataFrame:
    """Pick and rename the image and caption columns; rows keep where they came from."""
    if df.empty and len(df.columns) and not len(df):
        raise ValueError(f"{path.name} has a header but no rows: add one row per (image, caption) pair")
    img_col = _pick(df.columns, IMAGE_COLUMNS, "image-path", path)
    cap_col = _pick(df.columns, CAPTION_COLUMNS, "caption", path)
    df = df.rename(columns={img_col: "image", cap_col: "caption"})
    df[_WHERE] = where
    return df


def _read_csv(path: Path) -> pd.DataFrame:
    """Every cell is read as text: "+1", "=A1", "NA" or "2020-01-01" stay exactly what was written."""
    text = _read_text(path)
    if not text.strip():
        raise _empty_file(path)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows, where = [], []
    try:
        header = next(reader)
        while not header:  # blank lines before the header
            header = next(reader)
        _check_duplicates(header, path)
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{path.name}, line {reader.line_num}: {len(row)} fields where the header has "
                                 f"{len(header)}; quote fields that contain commas (\"a, b\") or fix that line")
            rows.append(row)
            where.append(f"line {reader.line_num}")
    except StopIteration:
        raise _empty_file(path) from None
    except csv.Error as exc:
        raise ValueError(f"{path.name}, line {reader.line_num}: malformed CSV ({exc}); check the quotes on that line") from None
    return _finish(pd.DataFrame(rows, columns=header, dtype=object), path, where)


def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise _DuplicateKey(dup)
    return dict(pairs)


class _DuplicateKey(Exception):
    pass


def _cell(v, field: str, where: str, path: Path):
    """A JSON value as a table cell: text stays text, numbers become text, objects are refused."""
    if v is None:
        return v
    if isinstance(v, str):  # JSON may escape lone surrogates ("\ud800"), which no file or database can store
        return v.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(v, (bool, int, float)):
        return str(v)
    raise ValueError(f"{path.name}, {where}: field {field!r} must be text, got a JSON {type(v).__name__}; "
                     f"write it as a string")


def _read_jsonl(path: Path) -> pd.DataFrame:
    text = _read_text(path)
    records, where = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path.name}, line {n}: not valid JSON ({exc.msg} at column {exc.colno}); each line must "
                             "be one JSON object such as {\"image\": \"a.png\", \"caption\": \"a red square\"}: "
                             "fix or delete that line") from None
        except _DuplicateKey as exc:
            raise ValueError(f"{path.name}, line {n}: key {exc.args[0]!r} appears twice; keep one") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path.name}, line {n}: expected a JSON object ({{\"image\": ..., \"caption\": ...}}), "
                             f"got a JSON {type(obj).__name__}")
        records.append({str(k): _cell(v, k, f"line {n}", path) for k, v in obj.items()})
        where.append(f"line {n}")
    if not records:
        raise _empty_file(path, "one JSON object per line with")
    cols: dict[str, None] = {}
    for r in records:
        cols.update(dict.fromkeys(r))
    _check_duplicates(cols, path, "the keys")
    return _finish(pd.DataFrame.from_records(records, columns=list(cols)), path, where)


def _read_parquet(path: Path) -> pd.DataFrame:
    if path.stat().st_size == 0:
        raise _empty_file(path, "a Parquet table with")
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        if len(set(names)) == len(names):
            df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError subclasses for corrupt files
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{path.name} is not a readable Parquet file ({type(exc).__name__}: {first}); "
                         "write it again with pandas.DataFrame.to_parquet or pyarrow") from None
    _check_duplicates(names, path, "the columns")
    if not len(df.columns):
        raise _empty_file(path, "a Parquet table with")
    if not len(df):
        raise ValueError(f"{path.name} has columns but no rows: add one row per (image, caption) pair")
    for c in df.columns:
        if df[c].dtype == object:
            bad = next((i for i, v in enumerate(df[c]) if isinstance(v, (list, dict, np.ndarray, bytes))), None)
            if bad is not None and str(c).strip().lower() in IMAGE_COLUMNS + CAPTION_COLUMNS:
                raise ValueError(f"{path.name}, row {bad + 1}: column {c!r} must hold text, got "
                                 f"{type(df[c].iloc[bad]).__name__}; store it as a string column")
    return _finish(df, path, [f"row {i + 1}" for i in range(len(df))])


def captions_file(path: Path, images: Path | None = None, allow_outside_images: bool = False) -> TableSource:
    """CSV / JSONL / Parquet with an image-path and a caption column; other columns become labels."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df = _read_csv(path)
    elif suffix in (".jsonl", ".ndjson"):
        df = _read_jsonl(path)
    elif suffix == ".parquet":
        df = _read_parquet(path)
    else:
        raise ValueError(f"{path.name}: captions must be .csv, .jsonl or .parquet (or COCO .json)")
    return TableSource(df, images or path.parent, path, "captions", allow_outside_images)


def coco(path: Path, images: Path | None = None, allow_outside_images: bool = False) -> TableSource:
    """COCO caption annotations: one pair per annotation (an image with 5 captions gives 5 pairs)."""
    text = _read_text(path)
    if not text.strip():
        raise ValueError(f"{path.name} is empty: expected COCO captions, a JSON object with 'images' "
                         "[{id, file_name}] and 'annotations' [{image_id, caption}]")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path.name}, line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}); "
                         "fix the file (e.g. check it with `python -m json.tool`)") from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{path.name}: not COCO captions (needs 'images' and 'annotations')")
    if not isinstance(data["images"], list) or not isinstance(data["annotations"], list):
        raise ValueError(f"{path.name}: 'images' and 'annotations' must be JSON lists")
    files = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise ValueError(f"{path.name}: images[{i}] needs 'id' and 'file_name' (got {str(im)[:80]})")
        files[json.dumps(im["id"])] = _cell(im["file_name"], "file_name", f"images[{i}]", path)
    rows, where = [], []
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or "image_id" not in a or "caption" not in a:
            raise ValueError(f"{path.name}: annotations[{i}] needs 'image_id' and 'caption' (got {str(a)[:80]})")
        cap = _cell(a["caption"], "caption", f"annotations[{i}]", path)
        # an annotation of an unknown image has no image path: skipped and listed like an empty one
        rows.append({"image": files.get(json.dumps(a["image_id"])), "caption": cap})
        where.append(f"annotations[{i}] (image_id {a['image_id']!r}{'' if json.dumps(a['image_id']) in files else ' not in images'})")
    if not rows:
        raise ValueError(f"{path.name} has no annotations: add {{image_id, caption}} entries")
    df = pd.DataFrame(rows, columns=["image", "caption"])
    df[_WHERE] = where
    return TableSource(df, images or path.parent, path, "coco", allow_outside_images)


def resolve(dataset: str, n: int = 4000, seed: int = 0, images: str | None = None,
            allow_outside_images: bool = False) -> PairSource:
    """``shapes`` or a path to a captions file / COCO annotations."""
    if dataset == "shapes":
        return ShapesSource(ShapesConfig(n=n, seed=seed))
    path = Path(dataset).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"dataset {dataset!r} {what}: use 'shapes' or a path to a captions "
                                ".csv/.jsonl/.parquet or COCO .json")
    img_root = Path(images).expanduser() if images else None
    if img_root is not None and not img_root.is_dir():
        raise FileNotFoundError(f"--images {images!r} is not a folder: give the folder image paths are relative to")
    if path.suffix.lower() == ".json":
        return coco(path, img_root, allow_outside_images)
    return captions_file(path, img_root, allow_outside_images)
