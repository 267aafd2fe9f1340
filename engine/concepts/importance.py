"""Concept importance (docs/METHODS.md §2): Sobol total indices and gradient × input in concept space.

With f = h ∘ g, activations A = g(x) ≈ u W and h the last linear layer (weights w, bias b):

- gradient × input: local importance of concept i for image x is u_i ∂h(uW + r)_c/∂u_i,
  which for a linear h is exactly u_i (W_i · w_c), so
  logit_c(x) = Σ_i u_i (W_i · w_c) + r · w_c + b_c  with residual r = g(x) − u W.
  Global importance = Σ_images local / Σ_images logit_c ("% of logit" on the Lens website).
- Sobol: masks m ∈ [0, 1]^k from a QMC design, y(m) = h((u ⊙ m) W)_c, Jansen total
  indices per image; global importance = their mean over the class's images.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engine.concepts import sobol


def _t(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    return a.float() if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a, dtype=np.float32))


def gradient_input(u: np.ndarray, w: np.ndarray, head: nn.Module, cls: int,
                   residual: np.ndarray | None = None) -> np.ndarray:
    """u ⊙ ∂h(uW + r)_cls/∂u, computed with autograd for any differentiable head → (n, k)."""
    ut = _t(u).clone().requires_grad_(True)  # (n, k)
    a = ut @ _t(w)  # (n, C)
    if residual is not None:
        a = a + _t(residual)
    head.zero_grad(set_to_none=True)
    y = head(a)[:, cls].sum()
    (grad,) = torch.autograd.grad(y, ut)
    return (ut * grad).detach().numpy()


def logit_decomposition(u: np.ndarray, w: np.ndarray, head: nn.Linear, cls: int, activations: np.ndarray
                        ) -> dict[str, np.ndarray]:
    """Exact split of the class logit for a linear head: per-concept terms, residual term, bias.

    terms (n, k) = u_i (W_i · w_c); residual (n,) = (A − uW) · w_c; bias = b_c; logit (n,) = h(A)_c.
    """
    wc = head.weight.detach()[cls].double().numpy()  # (C,)
    b = float(head.bias.detach()[cls]) if head.bias is not None else 0.0
    terms = u.astype(np.float64) * (w.astype(np.float64) @ wc)[None]  # (n, k)
    resid = (activations.astype(np.float64) - u.astype(np.float64) @ w.astype(np.float64)) @ wc
    with torch.no_grad():
        logit = head(_t(activations))[:, cls].double().numpy()
    return {"terms": terms, "residual": resid, "bias": np.full(len(u), b), "logit": logit}


def percent_of_logit(local: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Global importance in % of logit: 100 · Σ_images local_i / Σ_images logit → (k,)."""
    total = float(np.sum(logits))
    if abs(total) < 1e-12:
        return np.zeros(local.shape[1])
    return 100.0 * local.sum(axis=0) / total


@torch.no_grad()
def sobol_importance(u: np.ndarray, w: np.ndarray, head: nn.Module, cls: int, n: int = 32,
                     sampler: str = "sobol", seed: int = 0, chunk: int = 256) -> np.ndarray:
    """Per-image Sobol total indices of the k concepts for y(m) = h((u ⊙ m) W)_cls → (n_images, k)."""
    wt = _t(w)
    out = []
    for i in range(0, len(u), chunk):
        ub = _t(u[i:i + chunk])  # (b, k)

        def fn(masks: np.ndarray) -> np.ndarray:  # (M, k) → (M, b)
            m = _t(masks)
            a = (m[:, None, :] * ub[None]) @ wt  # (M, b, C)
            return head(a)[..., cls].double().numpy()

        st = sobol.total_indices(fn, d=w.shape[0], n=n, sampler=sampler, seed=seed)  # (k, b)
        out.append(st.T)
    return np.concatenate(out, axis=0) if out else np.zeros((0, w.shape[0]))


def top_concepts(local: np.ndarray) -> np.ndarray:
    """Each image's most important concept (argmax of its importance vector) → (n,)."""
    return local.argmax(axis=1)


def is_important(sizes: np.ndarray, min_images: int = 10) -> np.ndarray:
    """The Lens rule (docs/METHODS.md §2): a concept is 'important' if it is the top concept of at least
    ``min_images`` images; ``sizes`` (k,) are the images per top concept → bool (k,)."""
    return np.asarray(sizes) >= min_images


def cluster_sizes(top: np.ndarray, k: int, min_images: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Images per top concept (k,) and which concepts are 'important' (``is_important``)."""
    sizes = np.bincount(top, minlength=k)
    return sizes, is_important(sizes, min_images)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of a (m, d) with every row of b (n, d) → (m, n)."""
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return an @ bn.T
