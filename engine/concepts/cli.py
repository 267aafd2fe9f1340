"""CLI of the concept method: train-fmnist, precompute-concepts, report concepts."""
from __future__ import annotations

import argparse
import sys


def config_args(p: argparse.ArgumentParser, class_required: bool) -> None:
    p.add_argument("--model", default="fmnist-cnn", help="classifier (fmnist-cnn, efficientnet-lite0, …)")
    p.add_argument("--class", dest="class_name", required=class_required, default=None,
                   help="class to explain" + ("" if class_required else " (default: every class)"))
    p.add_argument("--images", default="", help="image folder (needed for ImageNet models)")
    p.add_argument("--concepts", type=int, default=10, help="k, NMF concepts")
    p.add_argument("--patch", type=int, default=0, help="crop size in pixels (0 = model default)")
    p.add_argument("--max-images", type=int, default=1000)
    p.add_argument("--sobol-n", type=int, default=32, help="QMC design size per image")
    p.add_argument("--layouts", default="umap,tsne", help="comma list of umap, tsne")
    p.add_argument("--maco-steps", type=int, default=256, help="MACO steps per concept image (0 = no images)")
    p.add_argument("--maco-size", type=int, default=0, help="MACO image side in pixels (0 = input × 512/224)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="fmnist-cnn training epochs (default 2)")
    p.add_argument("--n-train", type=int, default=None, help="fmnist-cnn training images (default 60000)")


def register(commands, reports) -> None:
    p = commands.add_parser("train-fmnist", help="train (or load) the Fashion-MNIST CNN; prints accuracy and time")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.set_defaults(func=_train)

    p = commands.add_parser("precompute-concepts", help="CRAFT concepts + importances for a model's classes")
    config_args(p, class_required=False)
    p.add_argument("--min-class-images", type=int, default=10,
                   help="with no --class: skip classes predicted for fewer images")
    p.add_argument("--force", action="store_true", help="recompute even if the cache exists")
    p.set_defaults(func=_precompute)

    p = reports.add_parser("concepts", help="importances, cluster sizes and fidelity of one class")
    config_args(p, class_required=True)
    p.set_defaults(func=_report)


def _train_cfg(args):
    from engine.concepts.fmnist import FmnistTrainConfig

    kw = {k: v for k, v in (("epochs", args.epochs), ("n_train", args.n_train),
                            ("width", getattr(args, "width", None))) if v is not None}
    return FmnistTrainConfig(**kw)


def _tqdm_progress(desc: str):
    from tqdm import tqdm

    bar = tqdm(total=1, desc=desc, file=sys.stderr, unit="step", dynamic_ncols=True)

    def cb(done: int, total: int, msg: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(msg, refresh=False)
        bar.refresh()

    return bar, cb


def _train(args) -> int:
    from engine.concepts import fmnist

    cfg = _train_cfg(args)
    bar, cb = _tqdm_progress("training fmnist-cnn")
    _, metrics = fmnist.load_or_train(cfg, progress=cb)
    bar.close()
    print(f"fmnist-cnn: test accuracy {metrics['test_accuracy']:.4f}, trained in {metrics['train_seconds']:.0f} s "
          f"({metrics['epochs']} epochs on {metrics['n_train']} images); weights {fmnist.weights_path(cfg)}")
    return 0


def _load(args):
    from engine.concepts import classifiers

    bar, cb = _tqdm_progress(f"loading {args.model}")
    clf = classifiers.load(args.model, progress=cb, train=_train_cfg(args))
    bar.close()
    return clf


def config(args, class_name: str):
    from engine.concepts.precompute import ConceptConfig

    return ConceptConfig(model=args.model, class_name=class_name, images=args.images, n_concepts=args.concepts,
                         patch_size=args.patch, max_images=args.max_images, sobol_n=args.sobol_n,
                         layouts=tuple(s for s in args.layouts.split(",") if s), maco_steps=args.maco_steps,
                         maco_size=args.maco_size, seed=args.seed)


def _precompute(args) -> int:
    import time

    import numpy as np
    from tqdm import tqdm

    from engine import store
    from engine.concepts import precompute
    from engine.concepts.images import load_images

    clf = _load(args)
    data = load_images(args.images or clf.default_images, clf.input_size, clf.channels)
    pred = precompute.predict(clf, data.images).argmax(1)
    if args.class_name:
        classes = [clf.class_names[clf.class_index(args.class_name)]]
    else:
        counts = np.bincount(pred, minlength=len(clf.class_names))
        classes = [c for c, n in zip(clf.class_names, counts) if n >= args.min_class_images]
    cached = [] if args.force else [c for c in classes if precompute.cache_path(config(args, c), clf, data).exists()]
    if cached:  # one cache per class: a killed run keeps the classes it finished
        tqdm.write(f"precompute-concepts: resuming: {len(cached)} of {len(classes)} classes already cached "
                   f"({', '.join(cached)}); computing the other {len(classes) - len(cached)}", file=sys.stderr)
    for name in tqdm(classes, desc="classes", file=sys.stderr, unit="class"):
        t0 = time.perf_counter()
        bar, cb = _tqdm_progress(f"  {name}")
        path = precompute.run(config(args, name), clf, data, cb, force=args.force, pred=pred)
        bar.close()
        tqdm.write(f"{name}: {path.relative_to(store.cache_root())} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return 0


def _report(args) -> dict:
    from engine.concepts import cache, precompute

    clf = _load(args)
    bar, cb = _tqdm_progress(f"concepts of {args.class_name}")
    path = precompute.run(config(args, clf.class_names[clf.class_index(args.class_name)]), clf, progress=cb)
    bar.close()
    return cache.report(path)
