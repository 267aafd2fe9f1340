"""The whole pipeline behind `geolens dvr build`: data -> critics -> human reference -> built-in
generators' samples folder -> its evaluation. Every stage is cached and resumes."""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Callable

from engine import store
from engine.config import stable_hash
from engine.device import pick_device, seed_everything
from engine.dvr import evaluate, generators, omniglot, samples, strokes
from engine.dvr.networks import CriticConfig, Critics, get_critics

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclasses.dataclass
class BuildResult:
    ref: Path
    run: Path
    samples_root: Path
    seconds: dict


def dataset_root(omniglot_root: str | None, stroke_cfg: strokes.StrokeSetConfig, progress: Progress | None = None) -> Path:
    """Real Omniglot when a root is given, else the built-in stroke set (written once, cached)."""
    if omniglot_root:
        root = Path(omniglot_root).expanduser()
        omniglot.scan(root)  # raises with the expected layout when wrong
        return root
    cb = (lambda d, t: progress("strokes", d, t)) if progress else None
    return strokes.build_stroke_set(stroke_cfg, progress=cb)


def drawings_by_class(root: Path) -> dict[str, list[str]]:
    _, test = omniglot.paper_split(omniglot.scan(root))
    return {c.name: [str(p) for p in c.paths] for c in test}


def _spec_seed(spec: generators.ModelSpec) -> int:
    return int(stable_hash(spec.label, 8), 16)


def _generator(spec: generators.ModelSpec, train_params: dict[str, dict]) -> generators.Generator:
    """The spec's generator, with ``train_params[name]`` (training-config overrides) under the spec's own params."""
    return generators.make(spec.generator, **{**train_params.get(spec.generator, {}), **dict(spec.params)})


def write_builtin_samples(data: omniglot.OmniglotData, specs: list[generators.ModelSpec],
                          train_params: dict[str, dict] | None, ref_key: str, n_samples: int, device: str | None,
                          progress: Progress | None = None, force: bool = False) -> tuple[Path, dict]:
    """Fit each built-in generator on the training classes and write its samples folder (``force``:
    sample every generator again, even those already written).

    Trained generators (``generators.trained_names()``) come from the model store, else shipped
    assets, else are trained here (resuming an interrupted training); ``train_params`` maps a
    generator name to training-config overrides (e.g. ``{"vae_ns": {"steps": 100}}``).
    """
    train_params = train_params or {}
    resolved = []
    for s in specs:
        g = _generator(s, train_params)
        resolved.append([dataclasses.astuple(s), g.train_config().to_dict() if isinstance(g, generators.Trained) else {},
                         g.model_cls.VERSION if isinstance(g, generators.Trained) else ""])
    key = stable_hash({"ref": ref_key, "specs": resolved, "n": n_samples, "v": evaluate.ENGINE_VERSION})
    root = store.cache_root() / "dvr" / f"samples-{key}"
    dev = pick_device(device)
    seconds: dict = {}
    done = [] if force else [s.label for s in specs if (root / s.slug / samples.MODEL_JSON).exists()]
    if done:  # a killed build keeps every generator whose samples were written; say where this run picks up
        import sys

        where = f"at generator {len(done) + 1} of {len(specs)}" if len(done) < len(specs) else f"after all {len(specs)} generators"
        print(f"dvr-build: resuming {where} ({', '.join(done)} already sampled)", file=sys.stderr, flush=True)
    for i, spec in enumerate(specs):
        folder = root / spec.slug
        if spec.label in done:
            seconds[spec.label] = json.loads((folder / samples.MODEL_JSON).read_text()).get("fit_seconds", 0.0)
            continue
        gen = _generator(spec, train_params)
        seed_everything(_spec_seed(spec))
        if isinstance(gen, generators.Trained):
            cb = (lambda p, s=spec: progress(f"fit {s.label}", int(p.done), int(p.total or 0))) if progress else None
            gen.fit(data.train_x, data.train_y, dev, cb, data_key=data.key)
        else:
            gen.fit(data.train_x, data.train_y, dev)
        out = gen.sample(data.exemplars, n_samples, _spec_seed(spec), data.humans)  # (C, n, 50, 50)
        meta = {"generator": spec.generator, "family": gen.family, "sweep": spec.sweep,
                "params": dict(spec.params), "label": spec.label, "fit_seconds": gen.fit_seconds_}
        if isinstance(gen, generators.Trained):
            meta.update({"model": gen.label(), "artifact": gen.artifact_.key, "train_config": gen.train_config().to_dict(),
                         "train_ink": gen.artifact_.meta.get("ink")})
        # ink mass of these samples against the human drawings': a blank-drawing model shows here
        meta.update({"sample_ink": float((out >= 0.5).mean()), "human_ink": float((data.humans >= 0.5).mean()),
                     "blank_fraction": float(((out >= 0.5).reshape(*out.shape[:2], -1).sum(-1) < 5).mean())})
        if folder.exists():  # an interrupted earlier write: start the model over
            shutil.rmtree(folder)
        samples.write_model(root, spec.slug, data.test_names, data.exemplars, out, meta)
        seconds[spec.label] = gen.fit_seconds_
        if progress:
            progress("generators", i + 1, len(specs))
    return root, seconds


def build(omniglot_root: str | None = None, stroke_cfg: strokes.StrokeSetConfig | None = None,
          critic_cfg: CriticConfig | None = None, train_params: dict[str, dict] | None = None,
          eval_cfg: evaluate.EvalConfig | None = None, specs: list[generators.ModelSpec] | None = None,
          n_samples: int = 20, device: str | None = None, progress: Progress | None = None,
          force: bool = False) -> BuildResult:
    """Run (or resume) every stage; returns the cache paths and the measured seconds per stage.

    ``force`` draws the samples and scores the reference and the samples again; the data set and
    the trained critics and generators are reused (``build-defaults --retrain`` trains them again).
    """
    stroke_cfg = stroke_cfg or strokes.StrokeSetConfig()
    critic_cfg = critic_cfg or CriticConfig()
    eval_cfg = eval_cfg or evaluate.EvalConfig()
    specs = specs if specs is not None else generators.default_specs()
    secs: dict = {}
    t0 = time.perf_counter()
    root = dataset_root(omniglot_root, stroke_cfg, progress)
    secs["dataset"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = omniglot.load_split(root, progress=(lambda d, t: progress("load", d, t)) if progress else None)
    secs["load"] = time.perf_counter() - t0
    critics: Critics = get_critics(data.train_x, data.train_y, data.key, critic_cfg, device,
                                   progress=(lambda s, d, t, _l: progress(f"train {s}", d, t)) if progress else None)
    secs.update({f"train_{k}": v for k, v in critics.seconds.items()})
    source = "omniglot" if omniglot_root else "builtin-strokes"
    ref = evaluate.build_reference(data, critics, drawings_by_class(root), str(root), eval_cfg, {"source": source}, force)
    sroot, fit_secs = write_builtin_samples(data, specs, train_params, evaluate.read_meta(ref)["ref_key"], n_samples, device,
                                            progress, force)
    secs["fit"] = fit_secs
    t0 = time.perf_counter()
    run = evaluate.evaluate_folder(sroot, ref, critics, run_name="built-in", force=force,
                                   progress=(lambda d, t: progress("evaluate", d, t)) if progress else None)
    secs["evaluate"] = time.perf_counter() - t0
    return BuildResult(ref, run, sroot, secs)

