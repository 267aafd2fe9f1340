"""MACO feature visualisation of concepts (Fel et al. 2023, "Unlocking feature visualization for
deeper networks with magnitude constrained optimization"; docs/METHODS.md §2).

An image is parametrised in the Fourier domain by a *fixed* amplitude spectrum m (c, H, H//2+1),
estimated from the model's domain, and a free phase φ (c, H, H//2+1)::

    φ' = standardise(φ)                        (one mean / std over the whole phase tensor)
    z  = standardise(irfft2(m ⊙ e^{iφ'}))     (c, H, H), still with amplitude spectrum ∝ m
    x  = σ(C · z)                              C: colour recorrelation (identity for grey)

Only φ is optimised, by gradient ascent (Nadam, lr 1.0) on the objective averaged over random
square crops of x (centres ~ N(0.5, 0.15), side ~ N(s_t, 0.05) clipped to [0.05, 1], s_t falling
linearly from 0.5 to 0.05), each resized to the model's input size with Gaussian + uniform noise.
The transparency map is Σ_steps |∂objective/∂x| (summed over colour channels).

Two details make the spectrum exactly m rather than approximately: columns 0 and H/2 of an rfft
must be Hermitian (X[-r] = conj X[r]), so the phase there is made odd, φ[r] ← (φ[r] − φ[−r]) / 2;
and m's DC term is 0 (the mean is removed by the standardisation anyway). Then
|rfft2(z)| = m / std(irfft2(m e^{iφ'})) at every frequency, whatever the phase.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from engine.config import Config, array_hash, check_choice, check_positive, file_hash, stable_hash
from engine.core.progress import ProgressFn, Tracker

IMAGENET_COLOUR = np.array([[0.56282854, 0.58447580, 0.58447580],
                            [0.19482528, 0.00000000, -0.19482528],
                            [0.04329450, -0.10823626, 0.06494176]], dtype=np.float32)
"""ImageNet's colour recorrelation matrix (square root of the RGB covariance, Lucid / Xplique):
a decorrelated pixel row d (1, 3) becomes the RGB row d @ IMAGENET_COLOUR."""
INPUT_TO_IMAGE = 512 / 224
"""Default image side ÷ model input side (Xplique optimises a 512 px image for 224 px models)."""
MAX_BATCH_PIXELS = 1 << 21
"""Concepts optimised together: as many as keep crops × input pixels per forward pass below this."""
NATURAL_PHOTOS = (("skimage", "astronaut.png"), ("skimage", "chelsea.png"), ("skimage", "coffee.png"),
                  ("skimage", "motorcycle_left.png"), ("skimage", "rocket.jpg"),
                  ("sklearn", "china.jpg"), ("sklearn", "flower.jpg"))
"""The natural RGB photos that ship inside scikit-image and scikit-learn (offline)."""


# --------------------------------------------------------------------------- config
@dataclasses.dataclass
class MacoConfig(Config):
    """MACO settings (docs/METHODS.md §2); every field is part of the concept cache's key."""

    steps: int = 256
    """Gradient-ascent steps."""
    crops: int = 32
    """Random crops per step the objective is averaged over."""
    lr: float = 1.0
    """Nadam learning rate on the phase."""
    image_size: int = 0
    """Side of the optimised image in pixels; 0 = the model input side × 512/224, rounded to even."""
    noise_std: float = 0.08
    """Std of the Gaussian noise added to each crop (plus uniform noise of width noise_std), on [0, 1] pixels."""
    center_std: float = 0.15
    """Std of the crop centres around the image centre (fraction of the side)."""
    scale_start: float = 0.5
    """Mean crop side (fraction of the image side) at the first step…"""
    scale_end: float = 0.05
    """…falling linearly to this at the last step."""
    scale_std: float = 0.05
    """Std of each crop's side around the step's mean; sides are clipped to [0.05, 1]."""
    seed: int = 0

    def validate(self) -> None:
        for name in ("steps", "crops", "lr"):
            check_positive(name, getattr(self, name))
        for name in ("image_size", "noise_std", "center_std", "scale_std"):
            check_positive(name, getattr(self, name), allow_zero=True)
        for name in ("scale_start", "scale_end"):
            v = getattr(self, name)
            if not 0.05 <= v <= 1.0:
                raise ValueError(f"MACO {name} must be a fraction of the image side in [0.05, 1], got {v}")
        if self.image_size and self.image_size % 2:
            raise ValueError(f"MACO image_size must be even (got {self.image_size}); try {self.image_size + 1}")

    def size_for(self, input_size: int) -> int:
        """The image side used for a model whose input side is ``input_size``."""
        return self.image_size or 2 * max(1, round(input_size * INPUT_TO_IMAGE / 2))


# --------------------------------------------------------------------------- spectra
@dataclasses.dataclass(frozen=True)
class Spectrum:
    """A fixed amplitude spectrum and the colour matrix that maps its channels to the image's."""

    name: str
    amplitude: np.ndarray
    """(c, H, H//2+1) float32, DC = 0, symmetric where rfft2 requires it."""
    colour: np.ndarray
    """(c, c): decorrelated channels → image channels (row convention, pixel @ colour)."""
    source: str
    """What the spectrum was estimated from, for the page and the cache meta."""

    @property
    def channels(self) -> int:
        return self.amplitude.shape[0]

    @property
    def size(self) -> int:
        return self.amplitude.shape[1]

    @functools.cached_property
    def key(self) -> str:
        """Content hash of the amplitude and colour matrix (part of every MACO cache key)."""
        return stable_hash([array_hash(self.amplitude), array_hash(self.colour)], 16)


def _symmetrise(m: torch.Tensor, width: int) -> torch.Tensor:
    """Make the rfft columns that must be Hermitian (0 and W/2) even in the row index."""
    neg = (-torch.arange(m.shape[-2])) % m.shape[-2]
    m = m.clone()
    cols = [0] + ([width // 2] if width % 2 == 0 else [])
    for k in cols:
        m[..., :, k] = (m[..., :, k] + m[..., neg, k]) / 2
    return m


def amplitude_spectrum(images: torch.Tensor) -> torch.Tensor:
    """Mean amplitude spectrum (c, H, W//2+1) of images (n, c, H, W), each channel's mean removed (DC = 0)."""
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"amplitude_spectrum needs a non-empty (n, c, H, W) batch, got shape {tuple(images.shape)}")
    total = torch.zeros(images.shape[1], images.shape[2], images.shape[3] // 2 + 1, dtype=torch.float64)
    for i in range(0, len(images), 4096):
        x = images[i:i + 4096].float()
        x = x - x.mean(dim=(2, 3), keepdim=True)
        total += torch.fft.rfft2(x).abs().sum(0, dtype=torch.float64)
    m = total / len(images)
    m[:, 0, 0] = 0.0
    return _symmetrise(m, images.shape[3]).float()


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < x.shape[-1])


def _fashion_mnist_inputs() -> list[str]:
    from engine.concepts import fmnist

    return [file_hash(fmnist.data_dir() / fmnist.FILES["train"][0])]


def _fashion_mnist_estimate(size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Grey: the mean spectrum of the 60,000 Fashion-MNIST training images, resized to ``size``."""
    from engine.concepts import fmnist

    x, _ = fmnist.load_split("train")
    m = torch.zeros(1, size, size // 2 + 1)
    for i in range(0, len(x), 5000):
        xb = torch.from_numpy(np.array(x[i:i + 5000])).float().div(255).unsqueeze(1)
        m += amplitude_spectrum(_resize(xb, size)) * len(xb)
    return (m / len(x)).numpy(), np.eye(1, dtype=np.float32), \
        f"mean of the {len(x)} Fashion-MNIST training images at {size} px"


def _photo_paths() -> list[Path]:
    import skimage.data
    import sklearn.datasets

    roots = {"skimage": Path(skimage.data.__file__).parent,
             "sklearn": Path(sklearn.datasets.__file__).parent / "images"}
    paths = [roots[lib] / name for lib, name in NATURAL_PHOTOS]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"MACO's natural-photo spectrum needs {missing}; reinstall scikit-image / scikit-learn")
    return paths


def _photo_inputs() -> list[str]:
    return [file_hash(p) for p in _photo_paths()]


def _photo_estimate(size: int, crops_per_photo: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """RGB, in ImageNet's decorrelated colour space, from the photos shipped with scikit-image and
    scikit-learn: ``crops_per_photo`` random square crops (side 50–100 % of the short side) of each,
    resized to ``size``, decorrelated (pixel @ C⁻¹), then their mean amplitude spectrum."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    inv = torch.from_numpy(np.linalg.inv(IMAGENET_COLOUR))
    paths = _photo_paths()
    batch = []
    for path in paths:
        img = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float().div(255)
        h, w = img.shape[1:]
        for _ in range(crops_per_photo):
            side = int(min(h, w) * rng.uniform(0.5, 1.0))
            y, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crop = _resize(img[None, :, y:y + side, x0:x0 + side], size)[0]  # (3, size, size)
            batch.append(torch.einsum("ij,ihw->jhw", inv, crop))  # decorrelated channels
    m = amplitude_spectrum(torch.stack(batch))
    return m.numpy(), IMAGENET_COLOUR.copy(), (
        f"{len(batch)} crops of {len(paths)} photos shipped with scikit-image / scikit-learn "
        f"({', '.join(p.name for p in paths)}) at {size} px, in ImageNet's decorrelated colour space")


@dataclasses.dataclass(frozen=True)
class SpectrumSource:
    """Where a registered spectrum comes from: the content keys of its files and how to estimate it."""

    channels: int
    inputs: Callable[[], list[str]]
    estimate: Callable[[int], tuple[np.ndarray, np.ndarray, str]]


SPECTRA: dict[str, SpectrumSource] = {
    "fashion-mnist": SpectrumSource(1, _fashion_mnist_inputs, _fashion_mnist_estimate),
    "natural-photos": SpectrumSource(3, _photo_inputs, _photo_estimate),
}
SPECTRUM_KIND = "maco-spectrum"
SPECTRUM_VERSION = "1"


def _check(name: str, size: int) -> None:
    check_choice("MACO spectrum", name, SPECTRA)
    if size < 4 or size % 2:
        raise ValueError(f"MACO image size must be even and ≥ 4, got {size}")


@functools.lru_cache(maxsize=16)
def spectrum_key(name: str, size: int) -> str:
    """Artifact key of the spectrum ``name`` at ``size`` px: hashes its source files' bytes, not the estimate."""
    from engine.core import artifacts

    _check(name, size)
    return artifacts.artifact_key(SPECTRUM_KIND, {"name": name, "size": size}, SPECTRA[name].inputs(),
                                  SPECTRUM_VERSION)


@functools.lru_cache(maxsize=8)
def spectrum(name: str, size: int) -> Spectrum:
    """The registered spectrum ``name`` at ``size`` px: read from the artifact store, estimated and
    stored there on first use (artifact kind ``maco-spectrum``)."""
    from safetensors.numpy import load_file, save_file

    from engine.core import artifacts

    _check(name, size)
    key = spectrum_key(name, size)
    art = artifacts.find(SPECTRUM_KIND, key)
    if art is None:
        src = SPECTRA[name]
        amp, colour, text = src.estimate(size)
        try:
            with artifacts.writing(SPECTRUM_KIND, {"name": name, "size": size}, src.inputs(), SPECTRUM_VERSION,
                                   name=f"{name}-{size}", resume=False) as w:
                save_file({"amplitude": np.ascontiguousarray(amp, np.float32),
                           "colour": np.ascontiguousarray(colour, np.float32)}, str(w.file("spectrum.safetensors")))
                w.meta["source"] = text
        except OSError:  # another build wrote the same spectrum at the same time: use its copy
            if artifacts.find(SPECTRUM_KIND, key) is None:
                raise
        art = artifacts.find(SPECTRUM_KIND, key)
    arrays = load_file(str(art.file("spectrum.safetensors")))
    return Spectrum(name, arrays["amplitude"], arrays["colour"], art.meta["source"])


# --------------------------------------------------------------------------- parametrisation
def _standardise(x: torch.Tensor) -> torch.Tensor:
    """One mean and std per batch item over every other dim."""
    dims = tuple(range(1, x.ndim))
    return (x - x.mean(dims, keepdim=True)) / (x.std(dims, keepdim=True) + 1e-5)


def hermitian_phase(phase: torch.Tensor, width: int) -> torch.Tensor:
    """Make columns 0 and W/2 of an rfft phase (…, H, W//2+1) odd in the row index, so that
    m e^{iφ} is the exact rfft2 of a real image (the self-conjugate bins get phase 0)."""
    neg = (-torch.arange(phase.shape[-2], device=phase.device)) % phase.shape[-2]
    cols = [0] + ([width // 2] if width % 2 == 0 else [])
    out = phase.clone()
    for k in cols:
        out[..., :, k] = (phase[..., :, k] - phase[..., neg, k]) / 2
    return out


def spectral_image(phase: torch.Tensor, amplitude: torch.Tensor) -> torch.Tensor:
    """z = standardise(irfft2(m ⊙ e^{i standardise(φ)})) for phases (B, c, H, H//2+1) → (B, c, H, H)."""
    size = amplitude.shape[-2]
    p = hermitian_phase(_standardise(phase), size)
    return _standardise(torch.fft.irfft2(torch.polar(amplitude.expand_as(p), p), s=(size, size)))


def render(phase: torch.Tensor, amplitude: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """x = σ(C · z) in (0, 1): phases (B, c, H, H//2+1) → images (B, c_out, H, H)."""
    z = spectral_image(phase, amplitude)
    return torch.sigmoid(torch.einsum("ij,bihw->bjhw", colour, z))


def crop_boxes(n_images: int, n_crops: int, side_mean: float, cfg: MacoConfig, gen: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (B, n, 2) as fractions of the side (x, y) and sides (B, n) of random square crops."""
    centres = 0.5 + cfg.center_std * torch.randn(n_images, n_crops, 2, generator=gen)
    sides = (side_mean + cfg.scale_std * torch.randn(n_images, n_crops, generator=gen)).clamp(0.05, 1.0)
    return centres, sides


def crop_resize(images: torch.Tensor, centres: torch.Tensor, sides: torch.Tensor, out: int) -> torch.Tensor:
    """Bilinear crops of images (B, c, H, W) at centres (B, n, 2) / sides (B, n), each resized to
    out×out (zeros outside the image) → (B·n, c, out, out), image-major."""
    b, n = sides.shape
    lin = (torch.arange(out, dtype=images.dtype, device=images.device) + 0.5) / out * 2 - 1  # (out,)
    s = sides.to(images)[..., None, None]  # (B, n, 1, 1)
    c = (centres.to(images) * 2 - 1)  # (B, n, 2) in [-1, 1] coords
    gx = c[..., 0, None, None] + s * lin[None, None, None, :]  # (B, n, 1, out)
    gy = c[..., 1, None, None] + s * lin[None, None, :, None]  # (B, n, out, 1)
    grid = torch.stack(torch.broadcast_tensors(gx, gy), dim=-1)  # (B, n, out, out, 2)
    crops = F.grid_sample(images, grid.reshape(b, n * out, out, 2), mode="bilinear",
                          padding_mode="zeros", align_corners=False)  # (B, c, n·out, out)
    return crops.reshape(b, images.shape[1], n, out, out).transpose(1, 2).reshape(b * n, -1, out, out)


# --------------------------------------------------------------------------- optimisation
@dataclasses.dataclass
class MacoResult:
    images: np.ndarray
    """(B, H, W, c) float32 in [0, 1]."""
    transparency: np.ndarray
    """(B, H, W) float32 ≥ 0: Σ_steps |∂objective/∂x| summed over channels."""
    objective: np.ndarray
    """(steps, B) float32: each image's objective (mean over crops) at every step."""
    seconds: float


Objective = Callable[[torch.Tensor], torch.Tensor]
"""crops (B·n, c, S, S) in [0, 1], image-major → objective per crop (B·n,)."""


def visualise(objective: Objective, spec: Spectrum, n_images: int, input_size: int, cfg: MacoConfig,
              progress: ProgressFn | None = None, device: str | torch.device = "cpu",
              tracker: Tracker | None = None) -> MacoResult:
    """Optimise ``n_images`` phases at once, image b maximising objective(crops of image b)[b's crops].

    Each image's objective depends only on its own phase and Nadam acts element-wise, so this is
    the same as ``n_images`` separate runs, batched.
    """
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed)
    amp = torch.from_numpy(spec.amplitude).to(device)
    colour = torch.from_numpy(spec.colour).to(device)
    phase = torch.randn(n_images, *spec.amplitude.shape, generator=gen).to(device).requires_grad_(True)
    opt = torch.optim.NAdam([phase], lr=cfg.lr, maximize=True)
    sides = np.linspace(cfg.scale_start, cfg.scale_end, cfg.steps)
    transparency = torch.zeros(n_images, spec.size, spec.size, device=device)
    trace = np.zeros((cfg.steps, n_images), np.float32)
    own = tracker or Tracker(cfg.steps, "step", "MACO", sink=progress)
    start = own.done
    for step in range(cfg.steps):
        image = render(phase, amp, colour)  # (B, c, H, H)
        centres, side = crop_boxes(n_images, cfg.crops, float(sides[step]), cfg, gen)
        crops = crop_resize(image, centres.to(device), side.to(device), input_size)  # (B·n, c, S, S)
        noise = torch.randn(crops.shape, generator=gen) * cfg.noise_std
        noise += (torch.rand(crops.shape, generator=gen) - 0.5) * cfg.noise_std
        per_image = objective(crops + noise.to(device)).reshape(n_images, cfg.crops).mean(1)  # (B,)
        g_phase, g_image = torch.autograd.grad(per_image.sum(), [phase, image])
        phase.grad = g_phase
        opt.step()  # ascent (maximize=True)
        transparency += g_image.abs().sum(1)
        trace[step] = per_image.detach().cpu().numpy()
        own.update(start + step + 1)
    if tracker is None:
        own.close()
    with torch.no_grad():
        final = render(phase, amp, colour).permute(0, 2, 3, 1).cpu().numpy()
    return MacoResult(final.astype(np.float32), transparency.cpu().numpy(), trace, time.perf_counter() - t0)


def concept_objective(clf, directions: torch.Tensor) -> Objective:
    """⟨g(x), W_c / ‖W_c‖⟩ for crops of concept c's image: directions (B, C) → objective per crop."""
    unit = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def fn(crops: torch.Tensor) -> torch.Tensor:
        a = clf.g(clf.normalize(crops))  # (B·n, C)
        n = len(crops) // len(unit)
        return (a * unit.repeat_interleave(n, 0)).sum(1)

    return fn


def concept_images(clf, w: np.ndarray, cfg: MacoConfig | None = None, progress: ProgressFn | None = None
                   ) -> tuple[MacoResult, Spectrum]:
    """One MACO image per concept vector w (k, C) of classifier ``clf`` (its ``spectrum`` domain)."""
    from engine.device import pick_device

    cfg = cfg or MacoConfig()
    spec = spectrum(clf.spectrum, cfg.size_for(clf.input_size))
    if spec.channels != clf.channels:
        raise ValueError(f"MACO spectrum {spec.name!r} has {spec.channels} channel(s) but {clf.name} takes "
                         f"{clf.channels}; set the classifier's spectrum to one of {sorted(SPECTRA)}")
    dev = pick_device()
    per = max(1, MAX_BATCH_PIXELS // (cfg.crops * clf.input_size ** 2))
    groups = [list(range(i, min(i + per, len(w)))) for i in range(0, len(w), per)]
    clf.model.eval()
    clf.features.to(dev)
    for p in clf.features.parameters():
        p.requires_grad_(False)
    parts = []
    tracker = Tracker(cfg.steps * len(groups), "step", f"MACO {len(w)} concepts", sink=progress)
    try:
        for gi, idx in enumerate(groups):
            dirs = torch.from_numpy(np.asarray(w[idx], dtype=np.float32)).to(dev)
            gcfg = dataclasses.replace(cfg, seed=cfg.seed + gi)
            parts.append(visualise(concept_objective(clf, dirs), spec, len(idx), clf.input_size, gcfg,
                                   device=dev, tracker=tracker))
    finally:
        tracker.close()
        clf.features.cpu()
    res = MacoResult(np.concatenate([p.images for p in parts]), np.concatenate([p.transparency for p in parts]),
                     np.concatenate([p.objective for p in parts], axis=1), sum(p.seconds for p in parts))
    return res, spec


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, c) in [0, 1] → uint8 (H, W) for grey, (H, W, 3) for RGB."""
    img = np.clip(np.asarray(image) * 255 + 0.5, 0, 255).astype(np.uint8)
    return img[..., 0] if img.shape[-1] == 1 else img


def alpha_map(transparency: np.ndarray, q: float = 99.0) -> np.ndarray:
    """Transparency (H, W) → uint8 alpha, scaled so its q-th percentile is opaque."""
    t = np.asarray(transparency, dtype=np.float64)
    hi = float(np.percentile(t, q)) if t.size else 0.0
    return (np.clip(t / hi, 0, 1) * 255 + 0.5).astype(np.uint8) if hi > 0 else np.zeros(t.shape, np.uint8)
