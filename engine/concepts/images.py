"""Image sets the concept pipeline runs on: built-in Fashion-MNIST test images, or a user's folder.

Every set yields uint8 images already at the classifier's input size, (n, S, S) grey or
(n, S, S, 3) RGB, plus an identity dict for cache keys.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from engine.config import stable_hash

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
BUILTIN_SETS = ("fashion-mnist-test",)


@dataclasses.dataclass
class ImageSet:
    images: np.ndarray
    """uint8 (n, S, S) or (n, S, S, 3)."""
    labels: np.ndarray | None
    """True labels where the set has them, else None."""
    names: list[str]
    """One name per image (file name, or split index)."""
    identity: dict


def fashion_mnist_test() -> ImageSet:
    from engine.concepts import fmnist

    x, y = fmnist.load_split("test")
    return ImageSet(x, y, [f"test-{i}" for i in range(len(x))], fmnist.data_identity())


def _square(img, size: int):
    """Resize the shorter side to ``size`` and centre-crop (PIL image → PIL image)."""
    from PIL import Image

    w, h = img.size
    s = size / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def image_folder(folder: str | Path, size: int, channels: int = 3, limit: int = 5000) -> ImageSet:
    """Every image file under ``folder`` (recursively), resized+centre-cropped to ``size``."""
    from PIL import Image

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist; give a folder of .jpg/.png files")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    mode = "L" if channels == 1 else "RGB"
    arrays = [np.asarray(_square(Image.open(p).convert(mode), size)) for p in files]
    ident = {"folder": str(folder.resolve()), "files": stable_hash([(str(p.relative_to(folder)), p.stat().st_size,
                                                                     int(p.stat().st_mtime)) for p in files])}
    return ImageSet(np.stack(arrays), None, [str(p.relative_to(folder)) for p in files], ident)


def load_images(spec: str, size: int, channels: int) -> ImageSet:
    """``spec`` is a built-in set name or a folder path."""
    if spec == "fashion-mnist-test":
        if size != 28 or channels != 1:
            raise ValueError("fashion-mnist-test is 28×28 grey; pick a 28 px grey classifier or give a folder")
        return fashion_mnist_test()
    if not spec:
        raise ValueError("this classifier has no built-in image set: give a folder of images (--images DIR)")
    return image_folder(spec, size, channels)
