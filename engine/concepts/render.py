"""Pictures for the concept page: PNG bytes of images and crops, concept heatmaps over an image."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

THUMB = 96  # longest side of stored thumbnails, pixels


def to_png(img: np.ndarray, size: int | None = None) -> bytes:
    """uint8 (H, W) or (H, W, 3) → PNG bytes, resized (nearest for tiny images) so max side = size."""
    pil = Image.fromarray(np.ascontiguousarray(img))
    if size and max(pil.size) != size:
        s = size / max(pil.size)
        resample = Image.NEAREST if max(pil.size) < 64 else Image.BICUBIC
        pil = pil.resize((max(1, round(pil.size[0] * s)), max(1, round(pil.size[1] * s))), resample)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def from_png(data: bytes) -> np.ndarray:
    """PNG bytes → uint8 RGB (H, W, 3)."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def heat_to_pixels(heat: np.ndarray, size: int, grid: dict) -> np.ndarray:
    """One concept's grid (gh, gw) → (size, size) map in image pixels.

    'spatial' grids cover the image evenly (bilinear upsampling); 'crops' grids give each crop
    (i·stride, j·stride, patch) its value, averaged where crops overlap.
    """
    heat = np.asarray(heat, dtype=np.float32)
    if grid["kind"] == "spatial":
        pil = Image.fromarray(heat).resize((size, size), Image.BILINEAR)
        return np.asarray(pil, dtype=np.float32)
    p, s = int(grid["patch"]), int(grid["stride"])
    total = np.zeros((size, size), np.float32)
    count = np.zeros((size, size), np.float32)
    for i in range(heat.shape[0]):
        for j in range(heat.shape[1]):
            total[i * s:i * s + p, j * s:j * s + p] += heat[i, j]
            count[i * s:i * s + p, j * s:j * s + p] += 1
    return total / np.maximum(count, 1)


def heat_image(heat: np.ndarray, input_size: int, grid: dict, out_size: int) -> np.ndarray:
    """One concept's grid → (out_size, out_size) float map aligned with an out_size thumbnail."""
    px = heat_to_pixels(heat, input_size, grid)
    if out_size == input_size:
        return px
    return np.asarray(Image.fromarray(px).resize((out_size, out_size), Image.BILINEAR), dtype=np.float32)


def overlay(image: np.ndarray, heat: np.ndarray, colour: tuple[int, int, int], alpha: float = 0.6) -> np.ndarray:
    """Tint ``image`` (H, W[, 3]) uint8 with ``colour`` where ``heat`` (H, W) is high → (H, W, 3) uint8."""
    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
    h = np.clip(heat / max(float(heat.max()), 1e-9), 0, 1)[..., None] * alpha
    out = rgb.astype(np.float32) * (1 - h) + np.asarray(colour, np.float32) * h
    return out.clip(0, 255).astype(np.uint8)


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def with_alpha(image_png: bytes, alpha_png: bytes, size: int | None = None) -> np.ndarray:
    """A MACO image with its transparency map as alpha → uint8 RGBA (H, W, 4), nearest-resized to ``size``."""
    rgb = from_png(image_png)
    alpha = np.asarray(Image.open(io.BytesIO(alpha_png)).convert("L"))
    if alpha.shape != rgb.shape[:2]:
        raise ValueError(f"MACO alpha {alpha.shape} does not match its image {rgb.shape[:2]}")
    out = np.concatenate([rgb, alpha[..., None]], axis=2)
    if size and out.shape[0] != size:
        out = np.asarray(Image.fromarray(out, "RGBA").resize((size, size), Image.NEAREST))
    return out
