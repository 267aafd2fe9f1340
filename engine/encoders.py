"""Vision-language encoders: any open_clip model, by pretrained tag or local weights file.

The built-in default is ``geolens-tiny`` (engine/model_configs/geolens-tiny.json), an
open_clip CLIP trained by ``engine.default_model`` on the Shapes world; it loads through
exactly the same local-weights path as any user's ``.safetensors`` / ``.bin`` file.
Local ``.bin``/``.pt`` files are read with ``torch.load(weights_only=True)``: nothing is unpickled.
"""
from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import open_clip
import torch

from engine.config import Config, file_hash
from engine.device import autocast, pick_device

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
open_clip.add_model_config(CONFIG_DIR)
DEFAULT_ARCH = "geolens-tiny"
LOCAL_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclasses.dataclass
class ModelSpec(Config):
    arch: str = DEFAULT_ARCH
    """open_clip architecture name (see `open_clip.list_models()`)"""
    pretrained: str | None = None
    """a pretrained tag (e.g. laion2b_s34b_b79k) or a local weights file; None = random init"""

    def validate(self) -> None:
        if self.arch not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model {self.arch!r}; see `python -c \"import open_clip; print(open_clip.list_models())\"`")

    @property
    def is_local(self) -> bool:
        return bool(self.pretrained) and (self.pretrained.endswith(LOCAL_SUFFIXES) or os.path.sep in self.pretrained)


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def resolve_weights(spec: ModelSpec) -> str | None:
    """A local path for ``spec.pretrained``, or the tag when open_clip may download it.

    Fails fast, naming the fix, when a tag is neither cached locally nor downloadable.
    """
    if not spec.pretrained:
        return None
    if spec.is_local:
        path = Path(spec.pretrained).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} not found; pass an existing .safetensors/.bin path")
        return str(path)
    tags = open_clip.list_pretrained_tags_by_model(spec.arch)
    if spec.pretrained not in tags:
        raise ValueError(f"{spec.arch!r} has no pretrained tag {spec.pretrained!r}; known tags: {tags or 'none'}; or pass a local weights file")
    cfg = open_clip.get_pretrained_cfg(spec.arch, spec.pretrained)
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        for name in ["open_clip_model.safetensors", "open_clip_pytorch_model.bin", filename]:
            if name:
                hit = try_to_load_from_cache(repo, name)
                if isinstance(hit, str):
                    return hit
    if not _hub_reachable():
        raise RuntimeError(
            f"weights for {spec.arch}/{spec.pretrained} are not in the local Hugging Face cache and the hub "
            "cannot be reached (offline). Download them on a connected machine (open_clip caches them under "
            "~/.cache/huggingface) or pass the weights file itself: --pretrained /path/to/model.safetensors"
        )
    return spec.pretrained


class Encoder:
    """A loaded open_clip model with its preprocessing and tokenizer; outputs are L2-normalised."""

    def __init__(self, spec: ModelSpec, device: str | None = None):
        self.spec = spec
        self.device = pick_device(device)
        weights = resolve_weights(spec)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(spec.arch, pretrained=weights, weights_only=True)
        except Exception as exc:  # a corrupt, truncated, pickled-object or other-architecture weights file
            if not spec.is_local:
                raise
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ValueError(f"weights file {weights} could not be loaded as {spec.arch} ({type(exc).__name__}: {first}); "
                             f"pass a .safetensors (or .bin state dict) saved from a {spec.arch} model") from None
        self.model = model.to(self.device).eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(spec.arch)
        self.weights_hash = file_hash(weights) if weights and os.path.isfile(weights) else (spec.pretrained or "random-init")
        self.dim = int(model.text_projection.shape[1]) if getattr(model, "text_projection", None) is not None else None

    def identity(self) -> dict:
        """Everything about the model that changes its embeddings (part of every cache key)."""
        # Local weights are named by their bytes only, so moving the file changes no key.
        pretrained = "local-file" if self.spec.is_local else self.spec.pretrained
        return {"arch": self.spec.arch, "pretrained": pretrained, "weights_hash": self.weights_hash,
                "preprocess": repr(self.preprocess)}

    def provenance(self) -> dict:
        """``identity`` plus where the weights were read from (for the cache manifest: a page reloads the
        encoder from it; never part of a key, so moving the file changes no cache's name)."""
        return {**self.identity(), "pretrained": self.spec.pretrained}

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) preprocessed pixels -> (B, d) unit vectors."""
        with autocast(self.device):
            z = self.model.encode_image(pixels.to(self.device, non_blocking=True))
        return torch.nn.functional.normalize(z.float(), dim=-1).cpu().numpy()

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """B captions -> (B, d) unit vectors."""
        tokens = self.tokenizer(texts).to(self.device, non_blocking=True)
        with autocast(self.device):
            z = self.model.encode_text(tokens)
        return torch.nn.functional.normalize(z.float(), dim=-1).cpu().numpy()
