"""Throughput of `geolens precompute` against the bare model forward pass on the same batches.

Both run in this process, alternating, on the same Shapes pairs and the same model:
- bare: images already rendered and preprocessed, captions already listed; only
  encode_images + encode_texts per batch are timed;
- precompute: the whole pipeline (render/load, preprocess, thumbnails, encode, DuckDB writes).
Prints pairs/s for each and the ratio (goal >= 0.9 on CPU).

    .venv/bin/python bench/precompute.py --arch ViT-B-32 --n 512
    .venv/bin/python bench/precompute.py --arch geolens-tiny --n 4000
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="ViT-B-32", help="open_clip architecture (random init, no download)")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    os.environ["GEOLENS_CACHE"] = tempfile.mkdtemp(prefix="bench-precompute-")

    import torch

    from engine.datasets.sources import resolve
    from engine.encoders import Encoder, ModelSpec
    from engine.precompute import precompute

    enc = Encoder(ModelSpec(args.arch))
    src = resolve("shapes", n=args.n, seed=0)
    pairs = [src[i] for i in range(args.n)]
    pix = torch.stack([enc.preprocess(p.image) for p in pairs])
    caps = [p.caption for p in pairs]
    B = args.batch_size

    def bare() -> float:
        t = time.perf_counter()
        for i in range(0, args.n, B):
            enc.encode_images(pix[i:i + B])
            enc.encode_texts(caps[i:i + B])
        return args.n / (time.perf_counter() - t)

    def full() -> float:
        res = precompute(src, enc, batch_size=B, num_workers=args.workers, force=True)
        return res.n_pairs / res.seconds

    bare()  # warm-up
    b, f = [], []
    for _ in range(args.rounds):
        b.append(bare())
        f.append(full())
    bb, ff = max(b), max(f)
    print(f"model {args.arch}, {args.n} pairs, batch {B}, device {enc.device}, torch threads {torch.get_num_threads()}")
    print(f"bare forward: {bb:8.1f} pairs/s   (rounds: {', '.join(f'{x:.1f}' for x in b)})")
    print(f"precompute:   {ff:8.1f} pairs/s   (rounds: {', '.join(f'{x:.1f}' for x in f)})")
    print(f"ratio precompute / bare = {ff / bb:.3f}")


if __name__ == "__main__":
    main()
