"""``geolens assets list|verify|publish NAME``: the trained weights shipped under ``assets/``.

Each shippable model has an ``AssetRecipe`` in ``ASSETS``: the command that makes it, a
``build(retrain)`` that trains it through the project's own code (or reuses the copy already
trained in the cache) and returns its files, config key and metrics, and the tolerance within
which a retrain must reproduce the manifest's metrics (checked by the heavy test in
tests/test_assets.py). ``engine.core.assets`` does the copying, hashing and manifest.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

from engine.config import environ
from engine.core import assets
from engine.core.registry import Registry
from engine.shipped import ENV_RETRAIN


@dataclasses.dataclass(frozen=True)
class Built:
    """A trained model ready to publish: asset file name -> file in the cache, and how it was made."""

    files: dict[str, Path]
    config: dict
    config_key: str
    seed: int
    train_seconds: float
    metrics: dict[str, float]
    meta: dict | None = None
    """the trained artifact's manifest meta, restored with it from the asset (``artifacts.from_asset``)"""


@dataclasses.dataclass(frozen=True)
class AssetRecipe:
    command: str
    """the geolens command that trains and publishes this asset"""
    build: Callable[[bool], Built]
    """``build(retrain)``: train (or, unless ``retrain``, reuse the cached copy) and describe the result"""
    tolerance: dict[str, float]
    """metric -> largest absolute difference a retrain may show against the manifest"""


ASSETS: Registry[AssetRecipe] = Registry("asset")


# ----------------------------------------------------------------------------- geolens-tiny
def default_model_metrics(meta: dict) -> dict[str, float]:
    """Flat metrics of a default-model meta: the gap measures and zero-shot accuracy per factor."""
    geo = meta["geometry"]
    out = {k: round(float(geo[k]), 4) for k in ("dim", "cone_image", "cone_text", "pair_cosine",
                                                  "r1_image_to_text", "r1_text_to_image")}
    out.update({f"zero_shot_{f}": round(float(a), 4) for f, a in meta["zero_shot_accuracy"].items()})
    return out


def _default_model_built(cfg, retrain: bool) -> Built:
    from engine.default_model import asset_files, train, weights_path

    path = weights_path(cfg)
    if retrain or not path.exists() or not path.with_suffix(".json").exists():
        path = train(cfg)
    meta = json.loads(path.with_suffix(".json").read_text())
    if "geometry" not in meta:
        raise ValueError(f"{path.with_suffix('.json')} has no gap measures (trained by an older engine); "
                         "retrain it with --retrain")
    return Built(asset_files(cfg), cfg.to_dict(),
                 cfg.key(), cfg.seed, meta["train_seconds"], default_model_metrics(meta))


DEFAULT_MODEL_TOLERANCE = {"dim": 0.05, "cone_image": 0.05, "cone_text": 0.05, "pair_cosine": 0.05,
                           "r1_image_to_text": 0.05, "r1_text_to_image": 0.05, "zero_shot_shape": 0.03,
                           "zero_shot_colour": 0.03, "zero_shot_size": 0.03, "zero_shot_position": 0.03}
"""A CPU retrain with the same seed repeats the run up to float summation order (thread count,
BLAS); these bounds allow for that and flag any change of recipe or code."""


def publish_default_model(cfg, command: str, retrain: bool = False) -> dict:
    """Publish the default model trained with ``cfg`` (training it first if needed)."""
    from engine.default_model import asset_name

    return publish_built(asset_name(cfg), _default_model_built(cfg, retrain), command)


def _register_default_models() -> None:
    from engine.default_model import RECIPES, asset_name

    for recipe_name, cfg in RECIPES.items():
        ASSETS.add(asset_name(cfg), AssetRecipe(
            f"geolens train-default --recipe {recipe_name} --publish",
            lambda retrain, cfg=cfg: _default_model_built(cfg, retrain), DEFAULT_MODEL_TOLERANCE))


_register_default_models()


# ----------------------------------------------------------------------------- fmnist-cnn
def _fmnist_built(retrain: bool) -> Built:
    from engine.concepts import fmnist

    cfg = fmnist.FmnistTrainConfig()
    path = fmnist.weights_path(cfg)
    if retrain:
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)
    _, metrics = fmnist.load_or_train(cfg, progress=lambda done, total, msg: None)
    return Built(fmnist.asset_files(cfg), cfg.to_dict(), path.stem, cfg.seed, metrics["train_seconds"],
                 {"test_accuracy": round(float(metrics["test_accuracy"]), 4)})


ASSETS.add("fmnist-cnn", AssetRecipe("geolens assets publish fmnist-cnn", _fmnist_built, {"test_accuracy": 0.01}))


# ----------------------------------------------------------------------------- dvr generators
DVR_ASSETS = {"vae_ns": ("vae_ns", {}), "vae_ns-beta0.25": ("vae_ns", {"beta": 0.25}),
              "vae_ns-beta4": ("vae_ns", {"beta": 4.0}), "dagan": ("dagan", {}), "ddpm_cfg": ("ddpm_cfg", {})}
"""Shipped dvr generators: asset ``dvr-<label>`` -> (registry name, training parameters)."""


def _dvr_built(name: str, params: dict, retrain: bool) -> Built:
    """Train (or, unless ``retrain``, reuse) one dvr generator on the built-in stroke set."""
    import shutil

    from engine.core import artifacts
    from engine.device import pick_device
    from engine.dvr import build, generators, omniglot, strokes, trainer

    data = omniglot.load_split(build.dataset_root(None, strokes.StrokeSetConfig()))
    gen = generators.make(name, **params)
    cfg = gen.train_config()
    key = trainer.model_key(name, cfg, data.key, gen.model_cls.VERSION)
    if retrain:
        shutil.rmtree(artifacts.folder(trainer.KIND, key), ignore_errors=True)
    _, art = trainer.get_model(name, gen.model_cls, cfg, data.train_x, data.train_y, data.key, pick_device(None),
                               use_assets=not retrain, label=gen.label())
    return Built({f"dvr-{art.name}-{art.key[:8]}.safetensors": art.file(trainer.WEIGHTS)}, art.config, art.key,
                 int(art.config.get("seed", 0)), float(art.meta.get("train_seconds", 0.0)),
                 {"train_seconds": float(art.meta.get("train_seconds", 0.0))})


for _label, (_name, _params) in DVR_ASSETS.items():
    # Retrains are checked by their files' presence and the manifest's hashes only: their losses are nested
    # per-term records (no single number to hold to a tolerance yet).
    ASSETS.add(f"dvr-{_label}", AssetRecipe(
        f"geolens dvr-train {_name}" + "".join(f" --set {k}={v:g}" for k, v in _params.items()) + " --publish",
        lambda retrain, n=_name, p=_params: _dvr_built(n, p, retrain), {}))


# ----------------------------------------------------------------------------- dvr critics
def _critic_built(name: str, retrain: bool) -> Built:
    """Train (or reuse) the SimCLR or prototypical critic on the built-in stroke set's training split."""
    import json
    import shutil

    from engine.device import pick_device
    from engine.dvr import build, networks, omniglot, strokes

    data = omniglot.load_split(build.dataset_root(None, strokes.StrokeSetConfig()))
    cfg = networks.CriticConfig()
    folder = networks.critics_folder(data.key, cfg)
    if retrain:
        shutil.rmtree(folder, ignore_errors=True)
    with environ(ENV_RETRAIN, "1" if retrain else None):
        networks.get_critics(data.train_x, data.train_y, data.key, cfg, str(pick_device(None)))
    meta = json.loads((folder / f"{name}.json").read_text())
    return Built({f"dvr-critic-{name}-{folder.name[:8]}.safetensors": folder / f"{name}.safetensors"}, cfg.to_dict(),
                 f"{folder.name}/{name}", cfg.seed, float(meta.get("train_seconds", 0.0)),
                 {"train_seconds": round(float(meta.get("train_seconds", 0.0)), 1)},
                 {k: v for k, v in meta.items() if k != "from_asset"})


for _critic in ("simclr", "protonet"):
    # like the generators, a retrain is checked by its hash-free metrics only: the scores the critics give
    # are the dvr report's, checked by tests/test_dvr_*.py on the small set
    ASSETS.add(f"dvr-critic-{_critic}", AssetRecipe(f"geolens assets publish dvr-critic-{_critic}",
                                                    lambda retrain, n=_critic: _critic_built(n, retrain), {}))


# ----------------------------------------------------------------------------- SAEs on the default cache
SAE_ASSETS = {"sae-plain": 0.0, "sae-aligned": 4e-4}
"""The SAEs the atoms page opens on (MP-SAE on the default Shapes cache): asset -> alignment weight β.
Only the weights ship; installing one encodes the cache to rebuild its codes and statistics."""


def _sae_built(beta: float, retrain: bool) -> Built:
    import json

    from engine.datasets.sources import resolve
    from engine.default_model import default_spec
    from engine.encoders import Encoder
    from engine.precompute import precompute
    from engine.sae import pipeline

    cache = precompute(resolve("shapes"), Encoder(default_spec())).cache
    cfg = pipeline.default_config(cache, beta=beta)
    name, meta = pipeline.train_on_cache(cache, cfg, force=retrain)
    art = pipeline.find_sae(cache, name)
    meta = json.loads(art.file(pipeline.META).read_text())
    return Built({f"sae-{'aligned' if beta else 'plain'}-{art.key[:8]}.safetensors": art.file(pipeline.WEIGHTS)},
                 art.config, art.key, int(cfg.seed), float(meta["train"].get("seconds", 0.0)),
                 {k: round(float(v), 4) for k, v in meta["metrics"].items() if isinstance(v, (int, float))},
                 {k: meta[k] for k in ("train", "history")})


for _name, _beta in SAE_ASSETS.items():
    ASSETS.add(_name, AssetRecipe(f"geolens assets publish {_name}", lambda retrain, b=_beta: _sae_built(b, retrain),
                                  {"ev": 0.01, "ev_image": 0.01, "ev_text": 0.01, "l0": 1.0, "dead_fraction": 0.02}))


# ----------------------------------------------------------------------------- geodesic EBMs and autoencoder
GEODESIC_ASSETS = ("ucg", "urc")
"""The default geodesics runs whose trained models ship: ``geodesics-ebm-<dataset>`` and, for the
characters, ``geodesics-ae`` (the URC graph-start run shares the URC models)."""


def _geodesics_built(dataset: str, part: str, retrain: bool) -> Built:
    """Train (or reuse) the default run's EBM (``part`` = "ebm") or autoencoder ("ae") and describe it.

    Metrics a retrain must repeat: the EBM's mean energy on its data and on Gaussian points with
    the data's mean and spread (off the data); the autoencoder's mean binary cross-entropy."""
    import torch

    from engine.core import artifacts
    from engine.core.progress import staged
    from engine.geodesics import autoencoder, ebm, spaces
    from engine.geodesics.runconfig import RunConfig

    cfg = RunConfig.preset(dataset)
    with environ(ENV_RETRAIN, "1" if retrain else None):  # retrain: model_artifact trains, ignoring the asset
        space = spaces.build_space(cfg, staged(None))  # tqdm bars: rate and time left
    if part == "ebm":
        kind, key = "ebm", ebm.ebm_key(space.keys["data"], cfg.ebm_config())
        gen = torch.Generator().manual_seed(0)
        off = space.data.mean(0) + space.data.std(0) * torch.randn(1000, space.data.shape[1], generator=gen)
        with torch.no_grad():
            metrics = {"energy_data": float(space.ebm(space.data).mean()), "energy_off": float(space.ebm(off).mean())}
    else:
        kind, key = "ae", autoencoder.ae_key(space.keys["ae_data"], cfg.ae_config())
        imgs = torch.as_tensor(spaces.D.rotated_characters("urc", cfg.n_data, seed=cfg.seed)[0], dtype=torch.float32)
        with torch.no_grad():
            logits = space.ae.logits(space.ae.encode(imgs))
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logits.reshape(imgs.shape), imgs)
        metrics = {"reconstruction_bce": float(bce)}
    art = artifacts.find(kind, key)
    assert art is not None, f"{kind}/{key} should have been built by build_space"
    return Built({f"geodesics-{part}-{dataset if part == 'ebm' else 'urc'}-{key[:8]}.safetensors": art.file(artifacts.WEIGHTS)},
                 art.config, key, int(art.config.get("seed", 0)), float(art.meta.get("train_seconds", 0.0)),
                 {k: round(v, 4) for k, v in metrics.items()}, art.meta)


for _ds in GEODESIC_ASSETS:
    ASSETS.add(f"geodesics-ebm-{_ds}", AssetRecipe(
        f"geolens assets publish geodesics-ebm-{_ds}", lambda retrain, d=_ds: _geodesics_built(d, "ebm", retrain),
        {"energy_data": 0.05, "energy_off": 0.05}))
ASSETS.add("geodesics-ae", AssetRecipe(
    "geolens assets publish geodesics-ae", lambda retrain: _geodesics_built("urc", "ae", retrain),
    {"reconstruction_bce": 0.01}))


# ----------------------------------------------------------------------------- publish / verify
def publish_built(name: str, built: Built, command: str) -> dict:
    return assets.publish(name, built.files, config=built.config, config_key=built.config_key, command=command,
                          seed=built.seed, train_seconds=built.train_seconds, metrics=built.metrics,
                          meta=built.meta)


def metric_differences(name: str, metrics: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Metrics of a retrain that differ from the manifest by more than the asset's tolerance:
    metric -> (manifest value, retrained value)."""
    shipped = assets.entry(name)["metrics"]
    tol = ASSETS.get(name).tolerance
    return {k: (shipped[k], metrics.get(k, float("nan"))) for k in tol
            if not abs(shipped[k] - metrics.get(k, float("nan"))) <= tol[k]}


def verify() -> list[str]:
    """Every problem with ``assets/``: missing or altered files, unknown names, the size budget."""
    out = []
    for name in assets.manifest()["assets"]:
        out += assets.problems(name)
    total = assets.total_bytes()
    if total > assets.BUDGET_BYTES:
        out.append(f"assets/ holds {total / 2**20:.1f} MiB, over the {assets.BUDGET_BYTES / 2**20:.0f} MiB budget")
    return out


def register(commands, reports) -> None:
    p = commands.add_parser("assets", help="trained weights shipped under assets/: list, verify, publish")
    sub = p.add_subparsers(dest="assets_command", required=True, metavar="ACTION")
    q = sub.add_parser("list", help="shipped assets with size, command, training time and metrics")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_list)
    q = sub.add_parser("verify", help="check every manifest hash and the size budget (exit 1 on a problem)")
    q.set_defaults(func=_verify)
    q = sub.add_parser("publish", help="train (or reuse the cached copy of) a model and ship it")
    q.add_argument("name", help=f"one of {ASSETS.names()}")
    q.add_argument("--retrain", action="store_true", help="train again even if the cache holds the model")
    q.set_defaults(func=_publish)


def _list(args) -> int:
    man = assets.manifest()["assets"]
    rows = []
    for name, e in sorted(man.items()):
        size = sum((assets.assets_dir() / f).stat().st_size for f in e["files"] if (assets.assets_dir() / f).exists())
        rows.append({"name": name, "mb": round(size / 2**20, 2), "ok": not assets.problems(name),
                     "command": e["command"], "train_seconds": e["train_seconds"], "metrics": e["metrics"]})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no assets in {assets.assets_dir()}; make one with `geolens assets publish NAME` ({ASSETS.names()})")
    for r in rows:
        print(f"{r['name']}: {r['mb']} MB, {'ok' if r['ok'] else 'DAMAGED'}, trained in {r['train_seconds']} s\n"
              f"  made by: {r['command']}\n  metrics: {r['metrics']}")
    print(f"total {assets.total_bytes() / 2**20:.1f} MiB of {assets.BUDGET_BYTES / 2**20:.0f} MiB")
    return 0


def _verify(args) -> int:
    found = verify()
    for line in found:
        print(line)
    if not found:
        print(f"{len(assets.manifest()['assets'])} assets ok, {assets.total_bytes() / 2**20:.1f} MiB")
    return 1 if found else 0


def _publish(args) -> int:
    rec = ASSETS.get(args.name)
    entry = publish_built(args.name, rec.build(args.retrain), rec.command)
    print(f"published {args.name}: {', '.join(entry['files'])}; metrics {entry['metrics']}")
    return 0
