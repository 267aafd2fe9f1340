"""The SAE training config, saved as JSON beside every trained dictionary."""
from __future__ import annotations

import dataclasses
import math

from engine.config import Config, check_choice, check_positive
from engine.sae.registry import LEARNER_NAMES


@dataclasses.dataclass
class SAEConfig(Config):
    arch: str = "mp"
    """dictionary learner: mp | topk | batchtopk | archetypal"""
    atoms: int = 512
    """dictionary size m (the paper: 8·d)"""
    k: int = 20
    """MP greedy steps / TopK active atoms per code"""
    beta: float = 4e-4
    """weight of the alignment term; 0 = the plain SAE baseline"""
    epochs: int = 5
    """passes over the pairs (the paper: 5)"""
    min_steps: int = 2000
    """at least this many optimiser steps: small caches get more epochs than 5"""
    batch_pairs: int = 512
    """image–text pairs per batch (stacked into 2·batch_pairs rows)"""
    lr: float = 5e-4
    """Adam peak learning rate of the one-cycle schedule"""
    grad_clip: float = 1.0
    """gradient-norm clipping"""
    seed: int = 0
    delta: float = 0.1
    """archetypal only: bound on ‖Λ_i‖ (0 = strictly the convex hull of the centroids)"""
    n_centroids: int = 0
    """archetypal only: k-means centroids C (0 = as many as atoms, capped by the data)"""
    checkpoint_every: int = 200
    """steps between resumable checkpoints"""
    stream_block: int = 8192
    """pairs per block of the batch order (blocks are shuffled, then rows within ``stream_window``
    blocks); a cache is streamed a block at a time (``engine.sae.stream``)"""
    stream_window: int = 8
    """blocks whose rows are shuffled together (caches up to block × window pairs: one full permutation)"""

    def validate(self) -> None:
        check_choice("arch", self.arch, LEARNER_NAMES)
        for name in ("atoms", "k", "epochs", "batch_pairs", "checkpoint_every", "stream_block", "stream_window"):
            check_positive(name, getattr(self, name))
        check_positive("min_steps", self.min_steps, allow_zero=True)
        check_positive("lr", self.lr)
        check_positive("grad_clip", self.grad_clip)
        check_positive("beta", self.beta, allow_zero=True)
        check_positive("delta", self.delta, allow_zero=True)
        check_positive("n_centroids", self.n_centroids, allow_zero=True)
        if self.k > self.atoms:
            raise ValueError(f"k={self.k} exceeds atoms={self.atoms}; lower --k or raise --atoms")

    def learner_kwargs(self) -> dict:
        if self.arch == "archetypal":
            return {"delta": self.delta, "n_centroids": self.n_centroids or None}
        return {}

    def schedule(self, n_pairs: int) -> tuple[int, int]:
        """(steps per epoch, total steps) for ``n_pairs`` training pairs."""
        per_epoch = max(1, math.ceil(n_pairs / self.batch_pairs))
        epochs = max(self.epochs, math.ceil(self.min_steps / per_epoch))
        return per_epoch, per_epoch * epochs
