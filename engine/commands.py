"""Core commands: caches, precompute, train-default, build-defaults, export."""
from __future__ import annotations

import dataclasses
import json
from typing import Callable

from engine.config import Config, environ


def register(commands, reports) -> None:
    p = commands.add_parser("caches", help="list embedding caches with their provenance")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_caches)

    p = commands.add_parser("precompute", help="encode an image-caption dataset into a cache")
    p.add_argument("--dataset", default="shapes", help="'shapes' or a captions .csv/.jsonl/.parquet or COCO .json")
    p.add_argument("--images", help="image folder for relative paths (default: the captions file's folder)")
    p.add_argument("--allow-outside-images", action="store_true",
                   help="also read image paths that resolve outside the captions file's folder and --images "
                        "(refused and listed as skipped by default)")
    p.add_argument("--n", type=int, default=4000, help="pairs, for the Shapes world")
    p.add_argument("--seed", type=int, default=0, help="world seed, for the Shapes world")
    p.add_argument("--model", default="default", help="'default' (geolens-tiny, trained on first use) or an open_clip architecture")
    p.add_argument("--pretrained", help="pretrained tag or local .safetensors/.bin file")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=None,
                   help="local engine: DataLoader workers (default: 0 on CPU, 4 on CUDA); "
                        "ray engine: encoder actors (default 1; one per GPU)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | mps")
    p.add_argument("--force", action="store_true", help="recompute even if the cache exists")
    ray_args(p)
    p.set_defaults(func=_precompute)

    p = commands.add_parser("train-default", help="train the built-in default CLIP on the Shapes world (resumes an interrupted run)")
    p.add_argument("--recipe", default="gap", help="gap (temperature fixed at 1/200, keeps the modality gap; the default) "
                                                   "or learnable-temp (the earlier recipe, closes the gap)")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's optimiser steps")
    p.add_argument("--device", default=None)
    p.add_argument("--retrain", action="store_true", help="train even if these weights are already in the cache")
    p.add_argument("--publish", action="store_true", help="then ship the weights as an asset (assets/ + manifest.json)")
    p.set_defaults(func=_train_default)

    p = commands.add_parser("build-defaults", help="build every page's built-in defaults (each stage cached; reruns skip done work)")
    p.add_argument("--only", default=",".join(DEFAULT_STAGES), help=f"comma list of stages: {','.join(DEFAULT_STAGES)}")
    p.add_argument("--device", default=None)
    p.add_argument("--retrain", action="store_true",
                   help="train every model here instead of using the weights shipped under assets/")
    p.set_defaults(func=_build_defaults)

    p = commands.add_parser("warm", help="compile UMAP's numba kernels into numba's disk cache ($NUMBA_CACHE_DIR); make install runs it")
    p.set_defaults(func=_warm)

    p = commands.add_parser("export", help="write a cache's items and embeddings to Parquet")
    p.add_argument("--cache", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_export)


def model_spec(model: str, pretrained: str | None, device: str | None = None):
    from engine.default_model import default_spec
    from engine.encoders import ModelSpec

    if model == "default":
        if pretrained:
            raise ValueError("--pretrained goes with an open_clip architecture, not with --model default")
        return default_spec(device=device)
    return ModelSpec(model, pretrained)


def _caches(args) -> int:
    from engine.embcache import list_caches

    rows = []
    for c in list_caches():
        m = c.manifest
        rows.append({"name": c.name, "pairs": m["n_pairs"], "skipped": m["n_skipped"], "dim": m["dim"],
                     "dataset": m["dataset"], "model": {k: m["model"][k] for k in ("arch", "pretrained", "weights_hash")},
                     "created": m["created"], "mb": round(c.size_bytes() / 2**20, 1),
                     "artifacts": c.artifacts()[["kind", "name"]].to_dict("records")})
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no caches yet: run `geolens build-defaults` or `geolens precompute`")
    for r in rows if not args.json else []:
        print(f"{r['name']}\n  {r['pairs']} pairs ({r['skipped']} skipped), d={r['dim']}, {r['mb']} MB, {r['created']}\n"
              f"  dataset: {r['dataset']}\n  model: {r['model']}\n  artifacts: {r['artifacts']}")
    return 0


def ray_args(p) -> None:
    """--engine and the Ray job's options (engine.ray_precompute.RayConfig); also used by `sae encode`."""
    p.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local: this process; ray: a Ray Data job (pip install -e '.[ray]')")
    p.add_argument("--address", default=None, help="ray: cluster address (default: start a local cluster)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="ray: GPUs per encoder actor (0 = CPU actors)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="ray: CPUs per encoder actor")
    p.add_argument("--keep-shards", action="store_true", help="ray: keep the Parquet shards after the import")


def ray_config(args):
    from engine.ray_precompute import RayConfig

    return RayConfig(address=args.address, workers=1 if args.workers is None else args.workers, gpus_per_worker=args.gpus_per_worker,
                     cpus_per_worker=args.cpus_per_worker, batch_size=args.batch_size, keep_shards=args.keep_shards)


def _precompute(args) -> int:
    from engine.datasets.sources import resolve
    from engine.encoders import Encoder
    from engine.precompute import precompute

    source = resolve(args.dataset, n=args.n, seed=args.seed, images=args.images,
                     allow_outside_images=args.allow_outside_images)
    if args.engine == "ray":
        from engine.ray_precompute import ray_precompute

        cfg = ray_config(args)  # validates before the model loads
        enc = Encoder(model_spec(args.model, args.pretrained, args.device),
                      device="cpu")  # the driver only needs the model's identity and preprocessing
        res = ray_precompute(source, enc, cfg, force=args.force)
    else:
        enc = Encoder(model_spec(args.model, args.pretrained, args.device), device=args.device)
        res = precompute(source, enc, batch_size=args.batch_size, num_workers=args.workers, force=args.force)
    rate = f", {res.n_pairs / res.seconds:.0f} pairs/s" if res.seconds else " (already cached)"
    print(f"{res.cache.name}: {res.n_pairs} pairs, {res.n_skipped} skipped{rate}")
    if res.n_skipped:
        print(res.cache.skipped().head(20).to_string(index=False))
    return 0


def _train_default(args) -> int:
    from engine.default_model import recipe, train, weights_path

    cfg = recipe(args.recipe) if args.steps is None else recipe(args.recipe, steps=args.steps)
    path = weights_path(cfg)
    if args.retrain or not path.exists():
        path = train(cfg, device=args.device)
    else:
        print(f"{path} is already trained (--retrain trains it again)")
    meta = json.loads(path.with_suffix(".json").read_text())
    print(json.dumps({k: v for k, v in meta.items() if k != "history"}, indent=2))
    if args.publish:
        from engine.assets_cli import publish_default_model

        rec = publish_default_model(cfg, command=f"geolens train-default --recipe {args.recipe}"
                                    + (f" --steps {args.steps}" if args.steps is not None else "") + " --publish")
        print(f"published {', '.join(rec['files'])} to assets/")
    return 0


def precompute_default_shapes(device: str | None = None) -> None:
    """Precompute the default Shapes cache (4,000 pairs; geolens-tiny, installed or trained first if needed)."""
    from engine.datasets.sources import resolve
    from engine.encoders import Encoder
    from engine.precompute import precompute

    res = precompute(resolve("shapes"), Encoder(model_spec("default", None, device), device=device))
    print(f"{res.cache.name}: {res.n_pairs} pairs, {res.n_skipped} skipped", flush=True)


@dataclasses.dataclass(frozen=True)
class Stage:
    """A build-defaults stage: ``prepare(device)`` (if any) first, then ``Method.build`` of every
    ``defaults()`` config of each method in ``methods``; ``needs``: stages whose output those defaults use."""

    methods: tuple[str, ...]
    prepare: Callable[[str | None], None] | None = None
    needs: tuple[str, ...] = ()


DEFAULT_STAGES: dict[str, Stage] = {
    "shapes": Stage(("gap",), prepare=precompute_default_shapes),  # the gap page reads its stored report and map
    "saes": Stage(("sae", "atoms"), needs=("shapes",)),  # plain and aligned SAEs on the default cache, their atoms
    "concepts": Stage(("concepts",)),
    "geodesics": Stage(("geodesics",)),
    "dvr": Stage(("dvr",)),
}


def _brief(cfg: Config, among: list[Config]) -> str:
    """The short settings that tell ``cfg`` apart from the other configs ``among``, e.g. ``class_name=Bag``."""
    names = [f.name for f in dataclasses.fields(cfg) if len({repr(getattr(c, f.name)) for c in among}) > 1]
    return " ".join(f"{k}={getattr(cfg, k)}" for k in names if len(str(getattr(cfg, k))) <= 24)


def build_stages(stages: list[str], device: str | None = None,
                 on_step: Callable[[int, int, str], None] | None = None) -> None:
    """Build ``stages`` in order with ``Method.build`` (each build skips finished work and resumes).

    ``on_step(i, n, label)`` before each step: a stage's preparation, then one build per default
    config; ``n`` counts the configs known so far (a preparation can add some: the default cache).
    """
    from engine.device import ENV_DEVICE
    from engine.methods import methods

    unknown = [s for s in stages if s not in DEFAULT_STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {list(DEFAULT_STAGES)}")
    reg = methods()

    def builds(stage: str) -> list[tuple[str, Config]]:
        return [(name, cfg) for name in DEFAULT_STAGES[stage].methods for cfg in reg.get(name).defaults()]

    def steps_after(k: int) -> int:
        return sum(bool(DEFAULT_STAGES[s].prepare) + len(builds(s)) for s in stages[k + 1:])

    with environ(ENV_DEVICE, device):  # the device every build picks (engine.device.pick_device)
        i = 0
        for k, stage in enumerate(stages):
            st = DEFAULT_STAGES[stage]
            if st.prepare is not None:
                if on_step:
                    what = (st.prepare.__doc__ or st.prepare.__name__).strip().splitlines()[0]
                    on_step(i, i + 1 + len(builds(stage)) + steps_after(k), f"{stage}: {what}")
                st.prepare(device)
                i += 1
            todo, later = builds(stage), steps_after(k)
            missing = [n for n in st.methods if n not in {name for name, _ in todo}]
            if missing:
                fix = f"; build {', '.join(st.needs)} first (`geolens build-defaults --only {','.join([*st.needs, stage])}`)"
                raise ValueError(f"build-defaults {stage}: no default settings of {missing} to build yet"
                                 + (fix if st.needs else ""))
            for j, (name, cfg) in enumerate(todo):
                if on_step:
                    label = f"geolens {name} build {_brief(cfg, [c for n, c in todo if n == name])}"
                    on_step(i, i + len(todo) - j + later, label.strip())
                reg.get(name).build(cfg, None)  # None: tqdm bars (the job runner reads them too)
                i += 1


def _warm(args) -> int:
    import os

    from engine.gap.projection import warm_umap

    secs = warm_umap()
    print(f"numba kernels compiled and cached in {secs:.0f} s ({os.environ.get('NUMBA_CACHE_DIR') or 'beside their modules'})")
    return 0


def _build_defaults(args) -> int:
    from engine.shipped import ENV_RETRAIN

    stages = [s.strip() for s in args.only.split(",") if s.strip()]

    def show(i: int, n: int, label: str) -> None:
        print(f"[build-defaults {i + 1}/{n}] {label}", flush=True)

    with environ(ENV_RETRAIN, "1" if args.retrain else None):  # read by every trainer's asset hook (engine.shipped)
        build_stages(stages, args.device, show)
    return 0


def _export(args) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from engine import store
    from engine.embcache import open_cache

    cache = open_cache(args.cache)
    items = cache.items()
    ids, emb = cache.embeddings()
    assert (ids == items["id"].to_numpy()).all()
    table = pa.table({"id": items["id"], "modality": items["modality"], "pair_id": items["pair_id"],
                      "text": items["text"], "embedding": store.array_to_arrow(emb)})
    import os
    from pathlib import Path

    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.partial")
    try:  # atomic: an earlier export stays whole if this one fails half-way
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {len(items)} rows to {args.out}")
    return 0
