"""The built-in Omniglot-like set: Hershey stroke fonts drawn by 20 simulated "drawers".

Stroke data comes from Debian's ``hershey-fonts-data`` (``/usr/share/hershey-fonts/*.jhf``):
each glyph is a list of pen strokes, each stroke a polyline of integer control points.
Every "alphabet" below is a slice of one font (Greek, Cyrillic, Gothic, script Latin,
Japanese kanji, astrological and meteorological signs...). A drawing of a character is the
glyph's strokes with stroke-level variation:

- per drawer (fixed across characters): pen width, slant, aspect ratio;
- per drawing: small affine map (rotation, scale, shear, translation), an independent
  offset per stroke and Gaussian jitter of every control point.

Drawings are rendered black on white at 105×105 and binarised, like Omniglot's PNGs, and
written in Omniglot's folder layout (``images_background|images_evaluation / alphabet /
characterNN / <id>_<drawer>.png``) so ``engine.dvr.omniglot`` loads them unchanged.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from engine import store
from engine.config import Config, atomic_write_text, check_positive, stable_hash

HERSHEY_DIR = Path("/usr/share/hershey-fonts")
ENGINE_VERSION = "dvr-strokes-1"
SIZE = 105  # Omniglot's image side

Stroke = np.ndarray  # (P, 2) float control points, y down
Glyph = list[Stroke]

# alphabet name -> (font file stem, first glyph index, last glyph index exclusive, folder).
# Glyph index i is ASCII code 32 + i; 33..58 = 'A'..'Z', 65..90 = 'a'..'z'.
ALPHABETS: dict[str, tuple[str, int, int, str]] = {
    "Greek_upper": ("greek", 33, 59, "images_background"),
    "Greek_lower": ("greek", 65, 91, "images_background"),
    "Cyrillic_upper": ("cyrillic", 33, 59, "images_background"),
    "Cyrillic_lower": ("cyrillic", 65, 91, "images_background"),
    "Gothic_German": ("gothicger", 33, 59, "images_background"),
    "Gothic_English_lower": ("gothiceng", 65, 91, "images_background"),
    "Script_upper": ("scripts", 33, 59, "images_background"),
    "Japanese_1": ("japanese", 0, 48, "images_background"),
    "Japanese_2": ("japanese", 48, 96, "images_background"),
    "Cursive_lower": ("cursive", 65, 91, "images_evaluation"),
    "Japanese_3": ("japanese", 96, 144, "images_evaluation"),
    "Japanese_4": ("japanese", 144, 193, "images_evaluation"),
    "Astrology": ("astrology", 1, 96, "images_evaluation"),
    "Meteorology": ("meteorology", 1, 96, "images_evaluation"),
    "Symbolic": ("symbolic", 1, 96, "images_evaluation"),
}


@dataclasses.dataclass
class StrokeSetConfig(Config):
    """How the built-in set is drawn."""

    chars_per_alphabet: int = 16
    """Characters kept per alphabet (the first distinct, non-trivial glyphs)."""
    drawers: int = 20
    """Drawings per character, one per simulated drawer (Omniglot has 20)."""
    point_jitter: float = 0.02
    """Std of control-point jitter, as a fraction of the glyph's size."""
    stroke_shift: float = 0.015
    """Std of the per-stroke offset, as a fraction of the glyph's size."""
    rotation_deg: float = 8.0
    """Std of the per-drawing rotation in degrees."""
    scale_std: float = 0.08
    """Std of the per-drawing log-scale."""
    shear_std: float = 0.1
    """Std of the per-drawing shear."""
    shift_px: float = 4.0
    """Std of the per-drawing translation in pixels (at 105×105)."""
    width_px: tuple[float, float] = (2.5, 5.0)
    """Range of a drawer's pen width in pixels."""
    seed: int = 0

    def validate(self) -> None:
        if self.chars_per_alphabet < 4:
            raise ValueError("chars_per_alphabet must be >= 4 (3 test characters + training ones)")
        if self.drawers < 2:
            raise ValueError("drawers must be >= 2 (one exemplar + human drawings)")
        for name in ("point_jitter", "stroke_shift", "rotation_deg", "scale_std", "shear_std", "shift_px"):
            check_positive(name, getattr(self, name), allow_zero=True)
        lo, hi = self.width_px
        if not 0 < lo <= hi:
            raise ValueError(f"width_px must be 0 < lo <= hi, got {self.width_px}")


def parse_jhf(text: str) -> list[Glyph]:
    """Parse a Hershey ``.jhf`` font: one glyph per record, records may wrap across lines.

    A record is a 5-char id, a 3-char vertex count ``n``, then ``n`` pairs of characters;
    the first pair is the left/right margin, ``" R"`` lifts the pen, any other pair is a point
    with coordinates ``ord(c) - ord('R')``.
    """
    glyphs: list[Glyph] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if len(line) < 8 or not line[5:8].strip().isdigit():
            continue
        n = int(line[5:8])
        data = line[8:]
        while len(data) < 2 * n and i < len(lines):
            data += lines[i]
            i += 1
        pairs = [data[k:k + 2] for k in range(2, 2 * n, 2)]
        strokes: Glyph = []
        cur: list[tuple[int, int]] = []
        for p in pairs:
            if p == " R":
                if len(cur) >= 1:
                    strokes.append(np.array(cur, dtype=np.float64))
                cur = []
            elif len(p) == 2:
                cur.append((ord(p[0]) - ord("R"), ord(p[1]) - ord("R")))
        if cur:
            strokes.append(np.array(cur, dtype=np.float64))
        glyphs.append(strokes)
    return glyphs


def _glyph_key(g: Glyph) -> str:
    return stable_hash([s.tolist() for s in g])


def _extent(g: Glyph) -> float:
    pts = np.concatenate(g)
    return float(np.max(pts.max(0) - pts.min(0)))


def alphabet_glyphs(name: str, n: int, font_dir: Path = HERSHEY_DIR) -> list[Glyph]:
    """The first ``n`` distinct glyphs of an alphabet with enough ink to be a character."""
    font, lo, hi, _ = ALPHABETS[name]
    path = font_dir / f"{font}.jhf"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: install Debian's hershey-fonts-data (`make system-deps`)")
    glyphs = parse_jhf(path.read_text(encoding="latin-1"))[lo:hi]
    seen: set[str] = set()
    out: list[Glyph] = []
    for g in glyphs:
        if not g or _extent(g) < 8 or sum(len(s) for s in g) < 4:
            continue
        k = _glyph_key(g)
        if k not in seen:
            seen.add(k)
            out.append(g)
        if len(out) == n:
            break
    if len(out) < n:
        raise ValueError(f"alphabet {name} has only {len(out)} usable glyphs; lower chars_per_alphabet to {len(out)}")
    return out


def _affine(rng: np.random.Generator, cfg: StrokeSetConfig, slant: float, aspect: float) -> np.ndarray:
    th = np.deg2rad(rng.normal(0, cfg.rotation_deg))
    s = np.exp(rng.normal(0, cfg.scale_std))
    sh = rng.normal(0, cfg.shear_std) + slant
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    shear = np.array([[1.0, sh], [0.0, 1.0]])
    scale = np.diag([s * aspect, s / aspect])
    return rot @ shear @ scale  # (2, 2)


def draw_glyph(glyph: Glyph, rng: np.random.Generator, cfg: StrokeSetConfig, width: float,
               slant: float = 0.0, aspect: float = 1.0) -> np.ndarray:
    """One drawing of ``glyph``: (105, 105) bool, True = ink, with stroke-level variation."""
    pts = np.concatenate(glyph)
    centre = (pts.max(0) + pts.min(0)) / 2
    extent = max(_extent(glyph), 1.0)
    a = _affine(rng, cfg, slant, aspect)
    px = 68.0 / extent  # glyph box -> ~68 px
    shift = rng.normal(0, cfg.shift_px, size=2)
    img = Image.new("L", (SIZE, SIZE), 0)
    d = ImageDraw.Draw(img)
    for s in glyph:
        q = (s - centre) / extent
        q = q + rng.normal(0, cfg.stroke_shift, size=2) + rng.normal(0, cfg.point_jitter, size=q.shape)
        q = q @ a.T * extent * px + SIZE / 2 + shift  # (P, 2) pixels
        xy = [tuple(map(float, p)) for p in q]
        if len(xy) == 1:
            x, y = xy[0]
            d.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=255)
        else:
            d.line(xy, fill=255, width=max(1, int(round(width))), joint="curve")
            for x, y in (xy[0], xy[-1]):
                d.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=255)
    return np.asarray(img) >= 128


def _drawer_styles(cfg: StrokeSetConfig) -> list[tuple[float, float, float]]:
    rng = np.random.default_rng([cfg.seed, 1])
    lo, hi = cfg.width_px
    return [(float(rng.uniform(lo, hi)), float(rng.normal(0, 0.12)), float(np.exp(rng.normal(0, 0.06))))
            for _ in range(cfg.drawers)]


def build_stroke_set(cfg: StrokeSetConfig, root: Path | None = None, font_dir: Path = HERSHEY_DIR,
                     alphabets: list[str] | None = None, progress=None) -> Path:
    """Write the built-in set in Omniglot's layout and return its root (cached by config hash).

    ``progress(done, total)`` is called after each character.
    """
    names = alphabets or list(ALPHABETS)
    key = stable_hash({"cfg": cfg.to_dict(), "alphabets": names, "v": ENGINE_VERSION})
    root = root or store.cache_root() / "dvr" / f"strokes-{key}"
    done_flag = root / "DONE.json"
    if done_flag.exists():
        return root
    styles = _drawer_styles(cfg)
    total = len(names) * cfg.chars_per_alphabet
    char_id = 0
    for a_i, name in enumerate(names):
        folder = ALPHABETS[name][3]
        glyphs = alphabet_glyphs(name, cfg.chars_per_alphabet, font_dir)
        for c_i, g in enumerate(glyphs):
            char_id += 1
            out = root / folder / name / f"character{c_i + 1:02d}"
            out.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([cfg.seed, a_i, c_i])
            for k, (w, slant, aspect) in enumerate(styles):
                ink = draw_glyph(g, rng, cfg, w, slant, aspect)
                Image.fromarray(~ink).save(out / f"{char_id:04d}_{k + 1:02d}.png")  # mode "1": black ink
            if progress:
                progress(char_id, total)
    cfg.save_json(root / "config.json")
    atomic_write_text(done_flag, json.dumps({"alphabets": names, "characters": total, "key": key}))
    return root
