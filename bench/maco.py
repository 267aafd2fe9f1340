"""Time of MACO concept images (engine/concepts/maco.py) against the bare network cost.

For each model, in this process, alternating:
- maco: ``maco.concept_images`` for ``--concepts`` random non-negative concept directions
  (spectrum read from the artifact store, estimated first if missing; that one-off is not timed);
- bare: the same number of steps of the classifier alone, forward + backward to its input, on
  random batches of the same size (crops × input pixels), i.e. the floor any feature
  visualisation with these settings pays.
Prints seconds per concept, wall and process CPU (the fair number on a shared machine), at
``--steps`` and scaled to 256 steps, and the CPU ratio maco / bare.

    OMP_NUM_THREADS=1 .venv/bin/python bench/maco.py --model fmnist-cnn --steps 256
    OMP_NUM_THREADS=1 .venv/bin/python bench/maco.py --model efficientnet-lite0 --steps 8 --concepts 1
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def bare(clf, n_images: int, steps: int, crops: int) -> float:
    import torch

    from engine.concepts.maco import MAX_BATCH_PIXELS

    per = max(1, MAX_BATCH_PIXELS // (crops * clf.input_size ** 2))
    groups = -(-n_images // per)
    t0 = time.perf_counter()
    for g in range(groups):
        b = min(per, n_images - g * per) * crops
        for _ in range(steps):
            x = torch.rand(b, clf.channels, clf.input_size, clf.input_size, requires_grad=True)
            (grad,) = torch.autograd.grad(clf.g(clf.normalize(x)).sum(), [x])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="fmnist-cnn")
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--crops", type=int, default=32)
    ap.add_argument("--concepts", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()

    import numpy as np
    import torch

    from engine.concepts import classifiers, maco

    clf = classifiers.load(args.model)
    for p in clf.model.parameters():
        p.requires_grad_(False)
    cfg = maco.MacoConfig(steps=args.steps, crops=args.crops)
    size = cfg.size_for(clf.input_size)
    maco.spectrum(clf.spectrum, size)  # one-off estimate (or read), not timed
    w = np.abs(np.random.default_rng(0).standard_normal((args.concepts, clf.head.in_features))).astype(np.float32)
    print(f"{args.model}: {args.concepts} concepts, {args.steps} steps × {args.crops} crops, image {size} px, "
          f"input {clf.input_size} px, torch threads {torch.get_num_threads()}")
    for r in range(args.rounds):
        c0 = time.process_time()
        res, _ = maco.concept_images(clf, w, cfg, progress=lambda p: None)
        c1 = time.process_time()
        t_bare = bare(clf, args.concepts, args.steps, args.crops)
        c2 = time.process_time()
        t_maco, cpu_maco, cpu_bare = res.seconds, c1 - c0, c2 - c1
        per, cper = t_maco / args.concepts, cpu_maco / args.concepts
        print(f"round {r}: maco {per:.2f} s/concept wall, {cper:.2f} s CPU "
              f"({cper * 256 / args.steps:.1f} s CPU at 256 steps); bare network {t_bare / args.concepts:.2f} s wall, "
              f"{cpu_bare / args.concepts:.2f} s CPU per concept; ratio maco/bare {cpu_maco / cpu_bare:.2f} (CPU); "
              f"objective {res.objective[:max(1, args.steps // 10)].mean():.3g} → "
              f"{res.objective[-max(1, args.steps // 10):].mean():.3g}")


if __name__ == "__main__":
    main()
