"""The Shapes world: procedurally rendered image-caption pairs with known factors.

Three kinds of ground-truth factor, as in the Iso-Energy paper's controlled setting:
- shared: expressed by both the picture and the caption (shape, colour, size, position);
- image-only: drawn but never mentioned (background texture, background tone);
- text-only: in the caption but not visible (sentence template, ending punctuation).

Item ``i`` of a world depends only on (seed, i): any slice renders the same pixels.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageDraw

from engine.config import Config, check_positive

SHARED = {
    "shape": ["circle", "square", "triangle", "cross", "star"],
    "colour": ["red", "green", "blue", "yellow", "purple", "white"],
    "size": ["small", "large"],
    "position": ["left", "right", "top", "bottom"],
}
IMAGE_ONLY = {
    "background": ["plain", "stripes", "dots", "noise"],
    "tone": ["dark", "light"],
}
TEXT_ONLY = {
    "template": ["t0", "t1", "t2", "t3", "t4"],
    "ending": ["none", "period", "bang"],
}
FACTOR_KINDS = {**{k: "shared" for k in SHARED}, **{k: "image" for k in IMAGE_ONLY}, **{k: "text" for k in TEXT_ONLY}}
ALL_FACTORS = {**SHARED, **IMAGE_ONLY, **TEXT_ONLY}

TEMPLATES = [
    "a {size} {colour} {shape} on the {position}",
    "{colour} {shape}, {size}, {position} side",
    "there is a {size} {shape} in {colour} at the {position}",
    "the {shape} is {colour} and {size}, placed {position}",
    "{size} {shape} coloured {colour} to the {position}",
]
ENDINGS = {"none": "", "period": ".", "bang": "!"}
RGB = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230),
       "yellow": (235, 215, 40), "purple": (150, 60, 200), "white": (245, 245, 245)}


@dataclasses.dataclass
class ShapesConfig(Config):
    n: int = 4000
    """number of image-caption pairs"""
    seed: int = 0
    """world seed; item i depends only on (seed, i)"""
    image_size: int = 64
    """rendered side length in pixels"""

    def validate(self) -> None:
        check_positive("n", self.n)
        check_positive("image_size", self.image_size)


def sample_factors(seed: int, i: int) -> dict[str, str]:
    """The factor values of item ``i`` (uniform, independent)."""
    rng = np.random.default_rng([seed, i])
    return {name: values[rng.integers(len(values))] for name, values in ALL_FACTORS.items()}


def caption(f: dict[str, str]) -> str:
    """The caption: shared + text-only factors, never the image-only ones."""
    t = TEMPLATES[int(f["template"][1:])]
    return t.format(**{k: f[k] for k in SHARED}) + ENDINGS[f["ending"]]


def _background(rng: np.random.Generator, f: dict[str, str], s: int) -> np.ndarray:
    base = 40 if f["tone"] == "dark" else 120
    img = np.full((s, s), base, dtype=np.float32)
    yy, xx = np.mgrid[0:s, 0:s]
    phase = rng.uniform(0, 2 * math.pi)
    if f["background"] == "stripes":
        img += 35 * (np.sin(xx * 0.9 + yy * 0.4 + phase) > 0)
    elif f["background"] == "dots":
        img += 35 * ((np.sin(xx * 1.1 + phase) * np.sin(yy * 1.1 + phase)) > 0.6)
    elif f["background"] == "noise":
        img += rng.normal(0, 18, size=(s, s))
    return np.clip(img, 0, 255)


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    if shape == "square":
        angles, radii = [rot + k * math.pi / 2 + math.pi / 4 for k in range(4)], [r * 1.15] * 4
    elif shape == "triangle":
        angles, radii = [rot + k * 2 * math.pi / 3 - math.pi / 2 for k in range(3)], [r * 1.2] * 3
    elif shape == "star":
        angles = [rot + k * math.pi / 5 - math.pi / 2 for k in range(10)]
        radii = [r * (1.25 if k % 2 == 0 else 0.5) for k in range(10)]
    else:  # cross
        w = r * 0.38
        pts = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
        c, s_ = math.cos(rot), math.sin(rot)
        return [(cx + x * c - y * s_, cy + x * s_ + y * c) for x, y in pts]
    return [(cx + q * math.cos(a), cy + q * math.sin(a)) for a, q in zip(angles, radii)]


def render(f: dict[str, str], seed: int, i: int, size: int = 64) -> Image.Image:
    """Draw item ``i``: its background, then its shape with small random jitter."""
    rng = np.random.default_rng([seed, i, 1])
    s = size
    bg = _background(rng, f, s)
    img = Image.fromarray(np.stack([bg] * 3, -1).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    r = s * (0.11 if f["size"] == "small" else 0.22) * rng.uniform(0.9, 1.1)
    centre = {"left": (0.27, 0.5), "right": (0.73, 0.5), "top": (0.5, 0.27), "bottom": (0.5, 0.73)}[f["position"]]
    cx = s * centre[0] + rng.uniform(-0.05, 0.05) * s
    cy = s * centre[1] + rng.uniform(-0.05, 0.05) * s
    colour = tuple(int(np.clip(c + rng.integers(-15, 16), 0, 255)) for c in RGB[f["colour"]])
    if f["shape"] == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon(_polygon(f["shape"], cx, cy, r, rng.uniform(-0.2, 0.2)), fill=colour)
    return img


class ShapesWorld:
    """Indexable view of a Shapes world: ``world[i] -> (PIL image, caption, factors)``."""

    def __init__(self, cfg: ShapesConfig):
        self.cfg = cfg

    def __len__(self) -> int:
        return self.cfg.n

    def factors(self, i: int) -> dict[str, str]:
        return sample_factors(self.cfg.seed, i)

    def __getitem__(self, i: int) -> tuple[Image.Image, str, dict[str, str]]:
        f = self.factors(i)
        return render(f, self.cfg.seed, i, self.cfg.image_size), caption(f), f


def prompts_for(factor: str, value: str, n: int = 24, seed: int = 12345) -> list[str]:
    """Captions that say ``factor=value`` with every other caption factor random.

    Averaging their embeddings gives a zero-shot classifier direction for ``value``
    (prompt ensembling over the factors the prompt does not fix).
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        f = {k: v[rng.integers(len(v))] for k, v in {**SHARED, **TEXT_ONLY}.items()}
        f[factor] = value
        out.append(caption(f))
    return out
