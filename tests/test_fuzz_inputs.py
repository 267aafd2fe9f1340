"""Fuzz table over every user input surface: each case ends in a correct result or a clear one-line
error naming the file / line / field and the fix, never a traceback.

Surfaces: captions files (CSV, JSONL, Parquet, COCO JSON), images, cache names, CLI values,
model weights files, geodesic points files, dvr samples folders (data root and layout).
``test_case_count`` keeps the table at >= 100 cases.
"""
from __future__ import annotations

import io
import json
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from engine.datasets import sources
from engine.datasets.sources import resolve

LONG = "x" * 100_000
UNICODE = "名前 🙂 é café Ωμέγα עברית ‮rtl‬ z\u200bw a\u0301"
INJECT = ["=1+2", "+1", "-1", "@SUM(A1:A2)", "=HYPERLINK(\"http://x\")", "\t=cmd|' /C calc'!A0"]


def _one_line(msg: str) -> None:
    assert msg and "\n" not in msg and "Traceback" not in msg, msg


# ---- captions files ------------------------------------------------------------------------
def _csv(rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    import csv

    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode()


def _jsonl(objs) -> bytes:
    return "\n".join(o if isinstance(o, str) else json.dumps(o) for o in objs).encode()


def _parquet(df_or_table) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = df_or_table if isinstance(df_or_table, pa.Table) else pa.Table.from_pandas(df_or_table, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(t, buf)
    return buf.getvalue()


def _dup_parquet() -> bytes:
    import pyarrow as pa

    return _parquet(pa.table([pa.array(["a.png"]), pa.array(["x"]), pa.array(["y"])], names=["image", "caption", "caption"]))


def _coco(images, annotations) -> bytes:
    return json.dumps({"images": images, "annotations": annotations}).encode()


IMGS = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}]
OK2 = [["image", "caption"], ["a.png", "a red square"], ["b.png", "a blue square"]]

# (id, file name, content, expectation)
# expectation: ("error", [regex, ...]) or ("ok", [caption or None (= skipped), ...], {row: reason regex})
CAPTIONS = [
    # CSV
    ("csv-ok", "c.csv", _csv(OK2), ("ok", ["a red square", "a blue square"], {})),
    ("csv-empty", "c.csv", b"", ("error", [r"c\.csv is empty: expected a header row with an image-path column "
                                           r"\(image, path, \.\.\.\) and a caption column \(caption, text, \.\.\.\)"])),
    ("csv-whitespace-only", "c.csv", b"\n \n\n", ("error", [r"c\.csv is empty"])),
    ("csv-header-only", "c.csv", b"image,caption\n", ("error", [r"c\.csv has a header but no rows: add one row"])),
    ("csv-no-caption-column", "c.csv", _csv([["image", "label"], ["a.png", "x"]]),
     ("error", [r"c\.csv: no caption column; rename .* \['caption', 'text'"])),
    ("csv-no-image-column", "c.csv", _csv([["img", "caption"], ["a.png", "x"]]),
     ("error", [r"c\.csv: no image-path column; rename", r"found \['img', 'caption'\]"])),
    ("csv-duplicate-column", "c.csv", _csv([["image", "caption", "caption"], ["a.png", "x", "y"]]),
     ("error", [r"c\.csv: column 'caption' appears 2 times in the header; rename or delete"])),
    ("csv-duplicate-column-case", "c.csv", _csv([["image", "Caption", "caption"], ["a.png", "x", "y"]]),
     ("error", [r"column 'caption' appears 2 times"])),
    ("csv-latin1", "c.csv", "image,caption\na.png,café\n".encode("latin-1"),
     ("error", [r"c\.csv is not UTF-8 text: byte 0xe9 at line 2, column 10; re-encode it as UTF-8", "iconv"])),
    ("csv-utf16", "c.csv", "image,caption\na.png,x\n".encode("utf-16"), ("error", [r"c\.csv is not UTF-8 text \(it looks like UTF-16\)"])),
    ("csv-binary-garbage", "c.csv", bytes(range(256)) * 4, ("error", [r"c\.csv is not UTF-8 text"])),
    ("csv-utf8-bom", "c.csv", b"\xef\xbb\xbf" + _csv(OK2), ("ok", ["a red square", "a blue square"], {})),
    ("csv-too-many-fields", "c.csv", b"image,caption\na.png,x\nb.png,y,z\n",
     ("error", [r"c\.csv, line 3: 3 fields where the header has 2; quote fields"])),
    ("csv-too-few-fields", "c.csv", b"image,caption\na.png\n", ("error", [r"c\.csv, line 2: 1 fields where the header has 2"])),
    ("csv-unterminated-quote", "c.csv", b'image,caption\na.png,"open\n', ("error", [r"c\.csv, line \d+: malformed CSV", "quotes"])),
    ("csv-quoted-comma-newline", "c.csv", _csv([["image", "caption"], ["a.png", "one, two\nthree"]]),
     ("ok", ["one, two\nthree"], {})),
    ("csv-empty-caption", "c.csv", _csv([["image", "caption"], ["a.png", ""], ["b.png", "ok"]]),
     ("ok", [None, "ok"], {0: r"empty caption \(c\.csv line 2\): fill it in or drop the row"})),
    ("csv-whitespace-caption", "c.csv", _csv([["image", "caption"], ["a.png", "   "]]), ("ok", [None], {0: "empty caption"})),
    ("csv-nan-words-stay-text", "c.csv", _csv([["image", "caption"], ["a.png", "NaN"], ["b.png", "NA"], ["a.png", "null"]]),
     ("ok", ["NaN", "NA", "null"], {})),
    ("csv-empty-image-path", "c.csv", _csv([["image", "caption"], ["", "x"], ["a.png", "y"]]),
     ("ok", [None, "y"], {0: "empty image path: fill it in or drop the row"})),
    ("csv-100k-caption", "c.csv", _csv([["image", "caption"], ["a.png", LONG]]), ("ok", [LONG], {})),
    ("csv-unicode", "c.csv", _csv([["image", "caption"], ["a.png", UNICODE]]), ("ok", [UNICODE], {})),
    ("csv-injection", "c.csv", _csv([["image", "caption"]] + [["a.png", s] for s in INJECT]), ("ok", INJECT, {})),
    ("csv-numbers-stay-text", "c.csv", _csv([["image", "caption"], ["a.png", "007"], ["b.png", "1e3"]]), ("ok", ["007", "1e3"], {})),
    ("csv-uppercase-columns", "c.csv", _csv([["Image", "Caption"], ["a.png", "x"]]), ("ok", ["x"], {})),
    ("csv-alias-columns", "c.csv", _csv([["file_name", "text"], ["a.png", "x"]]), ("ok", ["x"], {})),
    ("csv-crlf", "c.csv", b"image,caption\r\na.png,x\r\nb.png,y\r\n", ("ok", ["x", "y"], {})),
    ("csv-blank-lines", "c.csv", b"\nimage,caption\n\na.png,x\n\n\nb.png,y\n", ("ok", ["x", "y"], {})),
    ("csv-extra-columns-are-labels", "c.csv", _csv([["image", "caption", "colour"], ["a.png", "x", "red"]]), ("ok", ["x"], {})),
    # JSONL
    ("jsonl-ok", "c.jsonl", _jsonl([{"image": "a.png", "caption": "x"}, {"image": "b.png", "caption": "y"}]), ("ok", ["x", "y"], {})),
    ("jsonl-empty", "c.jsonl", b"", ("error", [r"c\.jsonl is empty: expected one JSON object per line with an image-path"])),
    ("jsonl-blank-only", "c.jsonl", b"\n\n", ("error", [r"c\.jsonl is empty"])),
    ("jsonl-malformed-line", "c.jsonl", _jsonl([{"image": "a.png", "caption": "x"}, "", '{"image": nul}']),
     ("error", [r"c\.jsonl, line 3: not valid JSON \(Expecting value at column 11\)", "fix or delete that line"])),
    ("jsonl-truncated-last-line", "c.jsonl", _jsonl([{"image": "a.png", "caption": "x"}, '{"image": "b.png", "capt']),
     ("error", [r"c\.jsonl, line 2: not valid JSON"])),
    ("jsonl-array-line", "c.jsonl", _jsonl([["a.png", "x"]]), ("error", [r"c\.jsonl, line 1: expected a JSON object .* got a JSON list"])),
    ("jsonl-scalar-line", "c.jsonl", b'"just text"\n', ("error", [r"line 1: expected a JSON object"])),
    ("jsonl-duplicate-key", "c.jsonl", b'{"image": "a.png", "caption": "x", "caption": "y"}\n',
     ("error", [r"c\.jsonl, line 1: key 'caption' appears twice; keep one"])),
    ("jsonl-no-caption-field", "c.jsonl", _jsonl([{"image": "a.png", "label": "x"}]), ("error", [r"c\.jsonl: no caption column"])),
    ("jsonl-caption-missing-on-one-line", "c.jsonl", _jsonl([{"image": "a.png", "caption": "x"}, {"image": "b.png"}]),
     ("ok", ["x", None], {1: r"empty caption \(c\.jsonl line 2\)"})),
    ("jsonl-null-caption", "c.jsonl", _jsonl([{"image": "a.png", "caption": None}]), ("ok", [None], {0: "empty caption"})),
    ("jsonl-number-caption", "c.jsonl", _jsonl([{"image": "a.png", "caption": 42}]), ("ok", ["42"], {})),
    ("jsonl-object-caption", "c.jsonl", _jsonl([{"image": "a.png", "caption": {"en": "x"}}]),
     ("error", [r"c\.jsonl, line 1: field 'caption' must be text, got a JSON dict; write it as a string"])),
    ("jsonl-latin1", "c.jsonl", '{"image": "a.png", "caption": "café"}\n'.encode("latin-1"), ("error", [r"c\.jsonl is not UTF-8 text"])),
    ("jsonl-unicode-escapes", "c.jsonl", b'{"image": "a.png", "caption": "caf\\u00e9 \\ud83d\\ude00"}\n', ("ok", ["café 😀"], {})),
    ("jsonl-lone-surrogate", "c.jsonl", b'{"image": "a.png", "caption": "bad \\ud800 half"}\n', ("ok", ["bad \ufffd half"], {})),
    ("jsonl-100k-caption", "c.jsonl", _jsonl([{"image": "a.png", "caption": LONG}]), ("ok", [LONG], {})),
    ("jsonl-unicode", "c.jsonl", _jsonl([{"image": "a.png", "caption": UNICODE}]), ("ok", [UNICODE], {})),
    ("jsonl-injection", "c.jsonl", _jsonl([{"image": "a.png", "caption": s} for s in INJECT]), ("ok", INJECT, {})),
    ("ndjson-suffix", "c.ndjson", _jsonl([{"path": "a.png", "text": "x"}]), ("ok", ["x"], {})),
    # Parquet
    ("parquet-ok", "c.parquet", _parquet(pd.DataFrame({"image": ["a.png"], "caption": ["x"]})), ("ok", ["x"], {})),
    ("parquet-zero-bytes", "c.parquet", b"", ("error", [r"c\.parquet is empty: expected a Parquet table with an image-path"])),
    ("parquet-garbage", "c.parquet", b"PAR1 this is not parquet", ("error", [r"c\.parquet is not a readable Parquet file", "write it again"])),
    ("parquet-no-rows", "c.parquet", _parquet(pd.DataFrame({"image": pd.Series([], dtype=str), "caption": pd.Series([], dtype=str)})),
     ("error", [r"c\.parquet has columns but no rows"])),
    ("parquet-missing-column", "c.parquet", _parquet(pd.DataFrame({"image": ["a.png"], "label": ["x"]})), ("error", [r"c\.parquet: no caption column"])),
    ("parquet-duplicate-columns", "c.parquet", _dup_parquet(), ("error", [r"c\.parquet: column 'caption' appears 2 times in the columns"])),
    ("parquet-nan-caption", "c.parquet", _parquet(pd.DataFrame({"image": ["a.png", "b.png"], "caption": [None, "y"]})),
     ("ok", [None, "y"], {0: r"empty caption \(c\.parquet row 1\)"})),
    ("parquet-float-nan-caption", "c.parquet", _parquet(pd.DataFrame({"image": ["a.png"], "caption": [float("nan")]})),
     ("ok", [None], {0: "empty caption"})),
    ("parquet-number-caption", "c.parquet", _parquet(pd.DataFrame({"image": ["a.png"], "caption": [1.5]})), ("ok", ["1.5"], {})),
    ("parquet-list-caption", "c.parquet", _parquet(pd.DataFrame({"image": ["a.png"], "caption": [["x", "y"]]})),
     ("error", [r"c\.parquet, row 1: column 'caption' must hold text"])),
    ("parquet-100k-caption", "c.parquet", _parquet(pd.DataFrame({"image": ["a.png"], "caption": [LONG]})), ("ok", [LONG], {})),
    ("parquet-unicode", "c.parquet", _parquet(pd.DataFrame({"image": ["a.png"], "caption": [UNICODE]})), ("ok", [UNICODE], {})),
    ("parquet-injection", "c.parquet", _parquet(pd.DataFrame({"image": ["a.png"] * len(INJECT), "caption": INJECT})), ("ok", INJECT, {})),
    ("parquet-null-image", "c.parquet", _parquet(pd.DataFrame({"image": [None, "a.png"], "caption": ["x", "y"]})),
     ("ok", [None, "y"], {0: "empty image path"})),
    # COCO
    ("coco-ok", "c.json", _coco(IMGS, [{"image_id": 1, "caption": "x"}, {"image_id": 1, "caption": "y"}, {"image_id": 2, "caption": "z"}]),
     ("ok", ["x", "y", "z"], {})),
    ("coco-empty", "c.json", b"", ("error", [r"c\.json is empty: expected COCO captions"])),
    ("coco-invalid-json", "c.json", b'{"images": [\n{"id": 1,, }]}', ("error", [r"c\.json, line 2: not valid JSON", "json.tool"])),
    ("coco-not-object", "c.json", b"[1, 2]", ("error", [r"c\.json: not COCO captions \(needs 'images' and 'annotations'\)"])),
    ("coco-missing-annotations", "c.json", json.dumps({"images": IMGS}).encode(), ("error", [r"c\.json: not COCO captions"])),
    ("coco-lists-required", "c.json", json.dumps({"images": {}, "annotations": {}}).encode(), ("error", [r"must be JSON lists"])),
    ("coco-image-without-file-name", "c.json", _coco([{"id": 1}], [{"image_id": 1, "caption": "x"}]),
     ("error", [r"c\.json: images\[0\] needs 'id' and 'file_name'"])),
    ("coco-annotation-without-caption", "c.json", _coco(IMGS, [{"image_id": 1, "caption": "x"}, {"image_id": 2}]),
     ("error", [r"c\.json: annotations\[1\] needs 'image_id' and 'caption'"])),
    ("coco-unknown-image-id", "c.json", _coco(IMGS, [{"image_id": 7, "caption": "x"}, {"image_id": 1, "caption": "y"}]),
     ("ok", [None, "y"], {0: "empty image path"})),
    ("coco-empty-caption", "c.json", _coco(IMGS, [{"image_id": 1, "caption": ""}]), ("ok", [None], {0: "empty caption"})),
    ("coco-no-annotations", "c.json", _coco(IMGS, []), ("error", [r"c\.json has no annotations"])),
    ("coco-latin1", "c.json", json.dumps({"images": [], "annotations": []}, ensure_ascii=False).encode() + "é".encode("latin-1"),
     ("error", [r"c\.json is not UTF-8 text"])),
    ("coco-injection-unicode", "c.json", _coco(IMGS, [{"image_id": 1, "caption": "=1+2"}, {"image_id": 2, "caption": UNICODE}]),
     ("ok", ["=1+2", UNICODE], {})),
    ("coco-caption-object", "c.json", _coco(IMGS, [{"image_id": 1, "caption": ["x"]}]),
     ("error", [r"c\.json, annotations\[0\]: field 'caption' must be text"])),
    # other file names
    ("unknown-suffix", "c.txt", b"image,caption\na.png,x\n", ("error", [r"c\.txt: captions must be \.csv, \.jsonl or \.parquet"])),
]


def _tiny_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (200, 30, 30)).save(folder / "a.png")
    Image.new("RGB", (12, 10), (30, 30, 200)).save(folder / "b.png")


@pytest.mark.parametrize("name,content,expect", [pytest.param(*c[1:], id=c[0]) for c in CAPTIONS])
def test_captions_file(tmp_path, name, content, expect):
    _tiny_images(tmp_path)
    f = tmp_path / name
    f.write_bytes(content)
    if expect[0] == "error":
        with pytest.raises(ValueError) as info:
            resolve(str(f))
        msg = str(info.value)
        _one_line(msg)
        for pat in expect[1]:
            assert re.search(pat, msg), (pat, msg)
        return
    src = resolve(str(f))
    captions, reasons = expect[1], expect[2]
    assert len(src) == len(captions)
    for i, cap in enumerate(captions):
        p = src[i]
        if cap is None:
            assert p.image is None and p.error, p
            _one_line(p.error)
            if i in reasons:
                assert re.search(reasons[i], p.error), (reasons[i], p.error)
        else:
            assert p.error is None and p.caption == cap and p.image.size == (12, 10), p


def test_dataset_argument_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'.*nope\.csv' does not exist: use 'shapes' or a path"):
        resolve(str(tmp_path / "nope.csv"))
    with pytest.raises(FileNotFoundError, match="is a folder"):
        resolve(str(tmp_path))
    (tmp_path / "c.csv").write_bytes(_csv(OK2))
    with pytest.raises(FileNotFoundError, match=r"--images .* is not a folder"):
        resolve(str(tmp_path / "c.csv"), images=str(tmp_path / "missing"))


# ---- images --------------------------------------------------------------------------------
def _png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _with_size(png: bytes, w: int, h: int) -> bytes:
    """A PNG whose header claims w×h (its data stays tiny): a decompression bomb's header."""
    ihdr = png[12:16] + struct.pack(">II", w, h) + png[24:29]
    return png[:8] + png[8:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def _jpeg(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    return _jpeg(Image.new("RGB", (40, 20), (10, 200, 10)), exif=exif.tobytes())


def _animated() -> bytes:
    frames = [Image.new("P", (10, 10), i * 60) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    return buf.getvalue()


def _palette_transparent() -> bytes:
    im = Image.new("P", (10, 10), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.putpixel((5, 5), 1)
    return _png_bytes(im, transparency=0)


def _gray16() -> bytes:
    a = (np.arange(100, dtype=np.uint16).reshape(10, 10) * 600)
    return _png_bytes(Image.frombytes("I;16", (10, 10), a.astype("<u2").tobytes()))


def _other(fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (10, 10), 128 if mode in ("L", "1") else (1, 2, 3)).save(buf, format=fmt)
    return buf.getvalue()


GOOD = _png_bytes(Image.new("RGB", (10, 10), (1, 2, 3)))


def _check_rgb(expect_size=None, pixel=None):
    def check(im):
        assert im.mode == "RGB"
        if expect_size:
            assert im.size == expect_size
        if pixel:
            xy, rgb = pixel
            assert all(abs(a - b) <= 2 for a, b in zip(im.getpixel(xy), rgb)), im.getpixel(xy)
    return check


# (id, file bytes written as imgs/<name>, name, expectation): ("ok", check) or ("skip", reason regex)
IMAGES = [
    ("png", GOOD, "x.png", ("ok", _check_rgb((10, 10), ((0, 0), (1, 2, 3))))),
    ("truncated-png", GOOD[: len(GOOD) // 2], "x.png", ("skip", r"unreadable|not an image")),
    ("truncated-jpeg", _jpeg(Image.new("RGB", (64, 64), (9, 9, 9)))[:300], "x.jpg", ("skip", r"unreadable")),
    ("zero-bytes", b"", "x.png", ("skip", r"not an image \(no image format recognised")),
    ("random-bytes", os.urandom(64), "x.png", ("skip", r"not an image")),
    ("html-named-png", b"<!doctype html><html><body>hi</body></html>", "x.png", ("skip", r"HTML/SVG/text named like an image")),
    ("svg-named-png", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "x.png", ("skip", r"not an image")),
    ("bomb-header", _with_size(GOOD, 100_000, 100_000), "x.png", ("skip", r"oversized")),
    ("over-max-pixels", _with_size(GOOD, 8000, 6000), "x.png", ("skip", r"oversized \(8000x6000 > 40000000 pixels\)")),
    ("cmyk-jpeg", _jpeg(Image.new("CMYK", (10, 10), (0, 255, 255, 0))), "x.jpg", ("ok", _check_rgb((10, 10), ((5, 5), (255, 0, 0))))),
    ("gray16-png", _gray16(), "x.png", ("ok", _check_rgb((10, 10), ((9, 9), (min(255, 99 * 600 // 257),) * 3)))),
    ("palette-transparency", _palette_transparent(), "x.png", ("ok", _check_rgb((10, 10), ((0, 0), (255, 255, 255))))),
    ("rgba-over-white", _png_bytes(Image.new("RGBA", (10, 10), (0, 0, 0, 0))), "x.png", ("ok", _check_rgb((10, 10), ((0, 0), (255, 255, 255))))),
    ("la", _png_bytes(Image.new("LA", (10, 10), (0, 255))), "x.png", ("ok", _check_rgb((10, 10), ((0, 0), (0, 0, 0))))),
    ("one-bit", _other("PNG", "1"), "x.png", ("ok", _check_rgb((10, 10)))),
    ("animated-gif", _animated(), "x.gif", ("ok", _check_rgb((10, 10)))),
    ("exif-rotated", _exif_rotated(), "x.jpg", ("ok", _check_rgb((20, 40)))),
    ("webp", _other("WEBP"), "x.webp", ("ok", _check_rgb((10, 10)))),
    ("tiff", _other("TIFF"), "x.tif", ("ok", _check_rgb((10, 10)))),
    ("bmp", _other("BMP"), "x.bmp", ("ok", _check_rgb((10, 10)))),
    ("uppercase-suffix", GOOD, "X.PNG", ("ok", _check_rgb((10, 10)))),
    ("unicode-name", GOOD, "名前 🙂.png", ("ok", _check_rgb((10, 10)))),
    ("png-named-jpg", GOOD, "x.jpg", ("ok", _check_rgb((10, 10)))),
]


@pytest.mark.parametrize("data,name,expect", [pytest.param(*c[1:], id=c[0]) for c in IMAGES])
def test_image_file(tmp_path, data, name, expect):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / name).write_bytes(data)
    f = tmp_path / "c.csv"
    f.write_bytes(_csv([["image", "caption"], [f"imgs/{name}", "x"]]))
    p = resolve(str(f))[0]
    if expect[0] == "ok":
        assert p.error is None, p.error
        expect[1](p.image)
    else:
        assert p.image is None
        _one_line(p.error)
        assert re.search(expect[1], p.error), p.error


def _layout(tmp_path: Path) -> tuple[Path, Path]:
    """<tmp>/data/{c.csv, imgs/a.png}, <tmp>/outside/secret.png; returns (data folder, outside folder)."""
    data, outside = tmp_path / "data", tmp_path / "outside"
    _tiny_images(data / "imgs")
    outside.mkdir()
    (outside / "secret.png").write_bytes(GOOD)
    return data, outside


# (id, setup(data, outside) -> image path text, allow_outside, --images relative to data or None, expectation)
def _link(target_of):
    def setup(data, outside):
        (data / "imgs" / "link.png").symlink_to(target_of(data, outside))
        return "imgs/link.png"
    return setup


def _dir(data, outside):
    (data / "imgs" / "folder.png").mkdir()
    return "imgs/folder.png"


OUTSIDE = r"outside the image folders .*refused without opening it: move it there or pass --allow-outside-images"
PATHS = [
    ("relative-inside", lambda d, o: "imgs/a.png", False, None, ("ok",)),
    ("dotdot-inside", lambda d, o: "imgs/../imgs/a.png", False, None, ("ok",)),
    ("absolute-inside", lambda d, o: str(d / "imgs" / "a.png"), False, None, ("ok",)),
    ("dotdot-outside", lambda d, o: "../outside/secret.png", False, None, ("skip", OUTSIDE)),
    ("etc-passwd", lambda d, o: "../../../../../../../../etc/passwd", False, None, ("skip", OUTSIDE)),
    ("absolute-outside", lambda d, o: str(o / "secret.png"), False, None, ("skip", OUTSIDE)),
    ("symlink-inside", _link(lambda d, o: d / "imgs" / "a.png"), False, None, ("ok",)),
    ("symlink-to-outside", _link(lambda d, o: o / "secret.png"), False, None, ("skip", OUTSIDE)),
    ("dangling-symlink", _link(lambda d, o: d / "imgs" / "gone.png"), False, None, ("skip", r"missing file")),
    ("directory", _dir, False, None, ("skip", r"a directory, not an image file")),
    ("missing", lambda d, o: "imgs/nope.png", False, None, ("skip", r"missing file")),
    ("nul-in-path", lambda d, o: "imgs/a\x00.png", False, None, ("skip", r"invalid path \(contains a NUL character\)")),
    ("images-root", lambda d, o: "a.png", False, "imgs", ("ok",)),
    ("images-root-escape", lambda d, o: "../../outside/secret.png", False, "imgs", ("skip", OUTSIDE)),
    ("allow-outside", lambda d, o: "../outside/secret.png", True, None, ("ok",)),
    ("allow-outside-symlink", _link(lambda d, o: o / "secret.png"), True, None, ("ok",)),
]


@pytest.mark.parametrize("setup,allow,images,expect", [pytest.param(*c[1:], id=c[0]) for c in PATHS])
def test_image_path_confinement(tmp_path, monkeypatch, setup, allow, images, expect):
    data, outside = _layout(tmp_path)
    text = setup(data, outside)
    f = data / "c.csv"
    f.write_bytes(_csv([["image", "caption"], [text, "x"]]))
    opened = []
    real = sources.load_image
    monkeypatch.setattr(sources, "load_image", lambda p: opened.append(Path(p)) or real(p))
    p = resolve(str(f), images=str(data / images) if images else None, allow_outside_images=allow)[0]
    if expect[0] == "ok":
        assert p.error is None and p.image is not None, p.error
    else:
        assert p.image is None and re.search(expect[1], p.error), p.error
        _one_line(p.error)
        if expect[1] == OUTSIDE:
            assert opened == []  # refused before anything was opened
            assert "allow_outside_images" not in resolve(str(f)).identity()


# ---- end to end: precompute keeps text exactly, counts skips, CLI errors -------------------
@pytest.fixture(scope="module")
def encoder(tiny_weights):
    from engine.encoders import Encoder, ModelSpec

    return Encoder(ModelSpec("geolens-tiny", str(tiny_weights[0])))


def test_precompute_round_trips_text_and_lists_skips(cache_root, tmp_path, encoder, capsys):
    from engine import cli
    from engine.precompute import precompute

    data, outside = _layout(tmp_path)
    caps = INJECT + [UNICODE, LONG, "NaN"]
    rows = [["imgs/a.png", c] for c in caps] + [["../outside/secret.png", "escape"], ["imgs/a.png", ""]]
    f = data / "inject.csv"
    f.write_bytes(_csv([["image", "caption"]] + rows))
    res = precompute(resolve(str(f)), encoder, batch_size=4)
    assert (res.n_pairs, res.n_skipped) == (len(caps), 2)
    items = res.cache.items()
    assert items.loc[items.modality == "text"].sort_values("pair_id")["text"].tolist() == caps
    sk = res.cache.skipped()
    assert sorted(sk["reason"].str.split(" ").str[0]) == ["empty", "outside"]
    out = tmp_path / "e.parquet"
    assert cli.main(["export", "--cache", res.cache.name, "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    assert df.loc[df.modality == "text", "text"].tolist() == caps  # formulas stay text
    assert pd.api.types.is_string_dtype(df["text"]) or df["text"].dtype == object


CLI = [
    ("precompute-batch-zero", ["precompute", "--dataset", "shapes", "--n", "8", "--model", "geolens-tiny", "--batch-size", "0"],
     r"--batch-size must be at least 1, got 0"),
    ("precompute-batch-negative", ["precompute", "--dataset", "shapes", "--n", "8", "--model", "geolens-tiny", "--batch-size", "-3"],
     r"--batch-size must be at least 1"),
    ("precompute-workers-negative", ["precompute", "--dataset", "shapes", "--n", "8", "--model", "geolens-tiny", "--workers", "-1"],
     r"--workers must be 0 or more"),
    ("precompute-n-zero", ["precompute", "--dataset", "shapes", "--n", "0", "--model", "geolens-tiny"], r"n must be > 0, got 0"),
    ("precompute-n-negative", ["precompute", "--dataset", "shapes", "--n", "-5", "--model", "geolens-tiny"], r"n must be > 0"),
    ("precompute-unknown-model", ["precompute", "--model", "no-such-arch"], r"unknown open_clip model 'no-such-arch'"),
    ("precompute-missing-dataset", ["precompute", "--dataset", "/nope/c.csv", "--model", "geolens-tiny"], r"does not exist"),
    ("precompute-weights-missing", ["precompute", "--model", "geolens-tiny", "--pretrained", "/nope/w.safetensors"],
     r"weights file /nope/w\.safetensors not found; pass an existing"),
    ("export-cache-traversal", ["export", "--cache", "../x", "--out", "/tmp/never.parquet"], r"no single cache matches '\.\./x'"),
    ("export-cache-unknown", ["export", "--cache", "no-such-cache", "--out", "/tmp/never.parquet"], r"no single cache matches"),
    ("export-cache-empty", ["export", "--cache", "", "--out", "/tmp/never.parquet"], r"empty cache name"),
    ("saes-cache-absolute", ["saes", "--cache", "/etc/passwd"], r"no single cache matches '/etc/passwd'"),
    ("train-sae-cache-traversal", ["train-sae", "--cache", "../../x"], r"no single cache matches"),
    ("geodesics-n-zero", ["geodesics", "precompute", "--dataset", "ucg", "--small", "--n", "0"], r"n_pairs must be > 0, got 0"),
    ("geodesics-n-negative", ["geodesics", "precompute", "--dataset", "ucg", "--small", "--n", "-4"], r"n_pairs must be > 0"),
    ("dvr-episodes-zero", ["dvr-build", "--episodes", "0"], r"n_episodes must be > 0, got 0"),
    ("dvr-way-one", ["dvr-build", "--way", "1"], r"way must be >= 2"),
    ("dvr-simclr-negative", ["dvr-build", "--simclr-epochs", "-1"], r"simclr_epochs must be > 0"),
    ("dvr-chars-too-few", ["dvr-build", "--chars-per-alphabet", "2"], r"chars_per_alphabet must be >= 4"),
    ("dvr-betas-not-numbers", ["dvr-build", "--betas", "a,b"], r"expected comma-separated numbers, got 'a,b'"),
    ("build-defaults-unknown-stage", ["build-defaults", "--only", "nope"], r"unknown stage\(s\) \['nope'\]"),
    ("geodesics-points-missing", ["geodesics", "points", "/nope/p.npy", "--pairs", "0:1"], r"no points file at /nope/p\.npy"),
]


@pytest.mark.parametrize("argv,pattern", [pytest.param(*c[1:], id=c[0]) for c in CLI])
def test_cli_values(cache_root, capsys, argv, pattern):
    from engine import cli

    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("geolens: error: ") and re.search(pattern, err), err
    _one_line(err)


@pytest.fixture(scope="module")
def small_cache(cache_root, encoder):
    from engine.precompute import precompute

    return precompute(resolve("shapes", n=12, seed=1), encoder, batch_size=12).cache


SAE_CLI = [
    ("sae-k-zero", ["--k", "0"], r"k must be > 0, got 0"),
    ("sae-atoms-negative", ["--atoms", "-1"], r"atoms must be > 0"),
    ("sae-epochs-zero", ["--epochs", "0"], r"epochs must be > 0"),
    ("sae-lr-negative", ["--lr", "-0.1"], r"lr must be > 0"),
    ("sae-beta-negative", ["--beta", "-1"], r"beta must be >= 0"),
    ("sae-batch-zero", ["--batch-pairs", "0"], r"batch_pairs must be > 0"),
    ("sae-k-over-atoms", ["--atoms", "4", "--k", "9"], r"k=9 exceeds atoms=4; lower --k or raise --atoms"),
]


@pytest.mark.parametrize("extra,pattern", [pytest.param(*c[1:], id=c[0]) for c in SAE_CLI])
def test_train_sae_values(small_cache, capsys, extra, pattern):
    from engine import cli

    assert cli.main(["train-sae", "--cache", small_cache.name] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert re.search(pattern, err), err
    _one_line(err)


# ---- model weights files ------------------------------------------------------------------
def _weights(kind: str, tiny_weights, tmp_path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    st = Path(tiny_weights[0])
    p = tmp_path / ("w.bin" if kind in ("pickled-object", "bin-garbage") else "w.safetensors")
    if kind == "garbage":
        p.write_bytes(os.urandom(256))
    elif kind == "zero-bytes":
        p.write_bytes(b"")
    elif kind == "truncated":
        p.write_bytes(st.read_bytes()[: st.stat().st_size // 3])
    elif kind == "wrong-architecture":
        save_file({"w": torch.zeros(3, 3)}, str(p))
    elif kind == "pickled-object":
        torch.save({"evil": Path("/etc/passwd")}, p)  # weights_only refuses arbitrary objects
    elif kind == "bin-garbage":
        p.write_bytes(b"not a torch file")
    return p


@pytest.mark.parametrize("kind", ["garbage", "zero-bytes", "truncated", "wrong-architecture", "pickled-object", "bin-garbage"])
def test_corrupt_weights(cache_root, tiny_weights, tmp_path, capsys, kind):
    from engine import cli

    p = _weights(kind, tiny_weights, tmp_path)
    assert cli.main(["precompute", "--dataset", "shapes", "--n", "4", "--model", "geolens-tiny", "--pretrained", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    _one_line(err)
    assert re.search(rf"weights file {re.escape(str(p))} could not be loaded as geolens-tiny .*; pass a \.safetensors", err), err


# ---- geodesic points files ----------------------------------------------------------------
def _points(kind: str, tmp_path: Path) -> Path:
    p = tmp_path / ("p.parquet" if kind.startswith("parquet") else "p.npy")
    if kind == "npy-1d":
        np.save(p, np.zeros(5, np.float32))
    elif kind == "npy-one-row":
        np.save(p, np.zeros((1, 3), np.float32))
    elif kind == "npy-nan":
        np.save(p, np.array([[0, 1], [np.nan, 2]], np.float32))
    elif kind == "npy-inf":
        np.save(p, np.array([[0, 1], [np.inf, 2]], np.float32))
    elif kind == "npy-pickled-object":
        np.save(p, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    elif kind == "npy-strings":
        np.save(p, np.array([["a", "b"], ["c", "d"]]))
    elif kind == "npy-garbage":
        p.write_bytes(b"\x93NUMPY garbage")
    elif kind == "parquet-garbage":
        p.write_bytes(b"nope")
    elif kind == "parquet-text-only":
        pd.DataFrame({"a": ["x", "y"]}).to_parquet(p)
    return p


POINTS = {
    "npy-1d": r"expected points of shape \(n >= 2, d\), got \(5,\)",
    "npy-one-row": r"expected points of shape \(n >= 2, d\), got \(1, 3\)",
    "npy-nan": r"points contain NaN or inf; clean them first",
    "npy-inf": r"points contain NaN or inf",
    "npy-pickled-object": r"not a numeric \(n, d\) array \(ValueError: Object arrays cannot be loaded",
    "npy-strings": r"not a numeric \(n, d\) array",
    "npy-garbage": r"not a numeric \(n, d\) array",
    "parquet-garbage": r"not a numeric \(n, d\) array",
    "parquet-text-only": r"expected points of shape",
}


@pytest.mark.parametrize("kind", list(POINTS))
def test_points_files(tmp_path, kind):
    from engine.geodesics.data import load_points

    p = _points(kind, tmp_path)
    with pytest.raises(ValueError) as info:
        load_points(p)
    msg = str(info.value)
    _one_line(msg)
    assert msg.startswith(p.name) and re.search(POINTS[kind], msg), msg


# ---- dvr samples folders: the data root, then the layout ----------------------------------
def _samples(root: Path, kind: str) -> Path:
    """A samples root with one model 'm' of two classes, 3 samples each, broken as ``kind`` says."""
    base = root / "samples"
    for cls in ("c1", "c2"):
        d = base / "m" / cls
        d.mkdir(parents=True)
        side = 77 if kind == "odd-sizes" else 50
        Image.new("L", (side, side + (cls == "c2") * 13), 255).save(d / "exemplar.png")
        for s in range(3):
            Image.new("L", (side + s, side), 255 * (s % 2)).save(d / f"{s}.png")
    if kind == "missing-exemplar":
        (base / "m" / "c2" / "exemplar.png").unlink()
    elif kind == "non-image-sample":
        (base / "m" / "c1" / "1.png").write_bytes(b"<html>not a png</html>")
    elif kind == "zero-byte-exemplar":
        (base / "m" / "c1" / "exemplar.png").write_bytes(b"")
    elif kind == "uneven-counts":
        (base / "m" / "c1" / "2.png").unlink()
    elif kind == "bad-model-json":
        (base / "m" / "model.json").write_text("{family: vae")
    elif kind == "exemplar-at-model-level":
        Image.new("L", (50, 50)).save(base / "m" / "exemplar.png")
    elif kind == "no-models":
        import shutil

        shutil.rmtree(base / "m")
    return base


SAMPLES = {
    "ok": None,
    "odd-sizes": None,
    "missing-exemplar": r"c2 has no exemplar\.png: save the exemplar",
    "non-image-sample": r"1\.png is not a readable image .*; replace it with a PNG",
    "zero-byte-exemplar": r"exemplar\.png is not a readable image",
    "uneven-counts": r"every class needs the same number \(>= 2\) of samples, found counts \[2, 3\]",
    "bad-model-json": r"model\.json is not valid JSON .*; fix it or delete it",
    "exemplar-at-model-level": r"holds exemplar\.png directly: point at the folder \*above\*",
    "no-models": r"has no model folders: expected <model>/<class>/exemplar\.png",
}


@pytest.mark.parametrize("kind", list(SAMPLES))
def test_samples_folder_layout(tmp_path, kind):
    from engine.dvr.samples import model_folders, read_model

    root = _samples(tmp_path, kind)
    if SAMPLES[kind] is None:
        m = read_model(model_folders(root)[0])
        assert m.exemplars.shape == (2, 50, 50) and m.samples.shape == (2, 3, 50, 50)
        return
    with pytest.raises(ValueError) as info:
        read_model(model_folders(root)[0])
    _one_line(str(info.value))
    assert re.search(SAMPLES[kind], str(info.value)), str(info.value)


DATA_ROOT = [
    ("inside-absolute", lambda r, o: str(r / "run"), None),
    ("inside-relative", lambda r, o: "run", None),
    ("inside-dotdot-back-in", lambda r, o: str(r / "run" / ".." / "run"), None),
    ("outside-absolute", lambda r, o: str(o), r"is outside the data root .*: copy or move the folder under .*GEOLENS_DATA_ROOT"),
    ("outside-dotdot", lambda r, o: "../outside", r"is outside the data root"),
    ("etc", lambda r, o: "/etc", r"is outside the data root"),
    ("symlink-out", lambda r, o: (r / "link").symlink_to(o) or "link", r"is outside the data root"),
    ("missing", lambda r, o: "nope", r"does not exist under the data root"),
    ("a-file", lambda r, o: (r / "f.txt").write_text("x") and "f.txt", r"is a file, not a folder"),
    ("empty", lambda r, o: "  ", r"enter a folder under the data root"),
    ("nul", lambda r, o: "run\x00x", r"not a valid path"),
]


@pytest.mark.parametrize("make,pattern", [pytest.param(*c[1:], id=c[0]) for c in DATA_ROOT])
def test_data_root_folder(tmp_path, monkeypatch, make, pattern):
    from engine.paths import ENV_DATA_ROOT, check_data_folder, data_root

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "run").mkdir(parents=True)
    outside.mkdir()
    monkeypatch.setenv(ENV_DATA_ROOT, str(root))
    assert data_root() == root.resolve()
    text = make(root, outside)
    if pattern is None:
        assert check_data_folder(text) == (root / "run").resolve()
        return
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        check_data_folder(text)
    _one_line(str(info.value))
    assert re.search(pattern, str(info.value)), str(info.value)


def test_data_root_defaults_to_cache_inputs(cache_root, monkeypatch):
    from engine.paths import ENV_DATA_ROOT, data_root

    monkeypatch.delenv(ENV_DATA_ROOT, raising=False)
    assert data_root() == (cache_root / "inputs").resolve() and data_root().is_dir()


def test_case_count():
    by_surface = {"captions files": len(CAPTIONS) + 3, "images": len(IMAGES) + len(PATHS),
                  "cli values": len(CLI) + len(SAE_CLI), "weights files": 6, "points files": len(POINTS),
                  "samples folders": len(SAMPLES) + len(DATA_ROOT)}
    print(by_surface, sum(by_surface.values()))
    assert sum(by_surface.values()) >= 100
