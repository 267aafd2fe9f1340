"""Concept deletion and insertion curves: does an importance ordering pick the concepts that matter?

For each image, concepts are ordered by its local importance (most important first).
Deletion starts from u and zeroes concepts one by one; insertion starts from 0 and restores
them. After each step the class probability softmax(h(ũ W))_c is recorded; the score is the
area under the mean curve over steps 0..k (trapezoid, x scaled to [0, 1]). A good ordering
gives low deletion and high insertion AUC; a random ordering is the baseline.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

KINDS = ("deletion", "insertion")


def random_order(n: int, k: int, seed: int = 0) -> np.ndarray:
    """One random permutation of the k concepts per image → (n, k) importance-like scores."""
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((n, k)), axis=1).astype(np.float64)


@torch.no_grad()
def curve(u: np.ndarray, w: np.ndarray, head: nn.Module, cls: int, scores: np.ndarray, kind: str) -> np.ndarray:
    """Mean class probability after 0..k deletions/insertions in the order of ``scores`` → (k + 1,)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; choose one of {KINDS}")
    n, k = u.shape
    order = np.argsort(-scores, axis=1, kind="stable")  # (n, k), most important first
    keep = np.zeros((k + 1, n, k), dtype=np.float32)  # keep[s] = mask after s steps
    for s in range(k + 1):
        chosen = np.zeros((n, k), dtype=bool)
        np.put_along_axis(chosen, order[:, :s], True, axis=1)
        keep[s] = ~chosen if kind == "deletion" else chosen
    ut, wt = torch.from_numpy(u.astype(np.float32)), torch.from_numpy(w.astype(np.float32))
    a = (torch.from_numpy(keep) * ut[None]) @ wt  # (k + 1, n, C)
    p = torch.softmax(head(a), dim=-1)[..., cls]  # (k + 1, n)
    return p.mean(dim=1).double().numpy()


def auc(values: np.ndarray) -> float:
    """Trapezoid area of a curve sampled at k + 1 evenly spaced steps over [0, 1]."""
    v = np.asarray(values, dtype=np.float64)
    return float(((v[1:] + v[:-1]) / 2).mean()) if len(v) > 1 else float(v[0])


def fidelity(u: np.ndarray, w: np.ndarray, head: nn.Module, cls: int, orderings: dict[str, np.ndarray],
             seed: int = 0) -> dict[str, dict[str, dict]]:
    """Curves and AUCs for every named ordering plus a random one: {name: {kind: {curve, auc}}}."""
    all_orders = {**orderings, "random": random_order(*u.shape, seed=seed)}
    out: dict[str, dict[str, dict]] = {}
    for name, scores in all_orders.items():
        out[name] = {}
        for kind in KINDS:
            c = curve(u, w, head, cls, scores, kind)
            out[name][kind] = {"curve": c, "auc": auc(c)}
    return out
