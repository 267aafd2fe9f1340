"""Vector arithmetic (composed retrieval, docs/METHODS.md §1): image + edit text, with and without
keeping only the edit's bimodal atoms.

query_full     = x̂_image + x̂_edit
query_bimodal  = x̂_image + bimodal-only(x̂_edit)
Both are L2-normalised and searched among the real image embeddings; the out-of-distribution
score of a query is its cosine distance to its 5th nearest real image (lower = more in-distribution).
"""
from __future__ import annotations

import numpy as np
import torch

from engine.atoms.interventions import compose, decode_subset, ood_score
from engine.datasets.shapes import SHARED
from engine.gap.metrics import normalise


def encode_codes(model, x: np.ndarray) -> np.ndarray:
    """SAE codes of x (n, d) -> (n, m)."""
    with torch.no_grad():
        return model.encode(torch.as_tensor(np.atleast_2d(x), dtype=torch.float32)).numpy()


def edit_queries(model, D: np.ndarray, bias: np.ndarray, bimodal: np.ndarray, x_img: np.ndarray,
                 x_edit: np.ndarray) -> dict[str, np.ndarray]:
    """Composed queries for images x_img (n, d) and one edit embedding x_edit (d,)."""
    z_img, z_edit = encode_codes(model, x_img), encode_codes(model, x_edit)
    img_hat = z_img @ D + bias
    edit_hat = z_edit @ D + bias
    edit_bim = decode_subset(z_edit, D, bimodal)
    return {"image+edit": compose(img_hat, edit_hat[0]), "image+bimodal(edit)": compose(img_hat, edit_bim[0])}


def search(queries: np.ndarray, gallery: np.ndarray, top: int = 10, exclude: np.ndarray | None = None):
    """Top gallery rows per query by cosine: (indices (n, top), cosines (n, top)); ``exclude`` (n,) row per query."""
    sims = normalise(queries) @ normalise(gallery).T
    if exclude is not None:
        sims[np.arange(len(sims)), exclude] = -np.inf
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :top]
    return idx, np.take_along_axis(sims, idx, 1)


def shapes_edit_benchmark(model, D, bias, bimodal, x_img: np.ndarray, factors, encode_text, n: int = 300,
                          seed: int = 0, ks=(10, 50)) -> dict:
    """Composed retrieval on the Shapes world, scored like FashionIQ: (R@10 + R@50) / 2.

    For n random source images, one shared factor is changed to another value; the edit text is
    that value (e.g. "blue"). A hit is a retrieved image whose shared factors equal the source's
    with the change applied. ``factors`` is a DataFrame aligned with x_img rows.
    """
    rng = np.random.default_rng(seed)
    keys = factors[list(SHARED)].astype(str).agg("|".join, axis=1).to_numpy()
    out = {name: {"hits": {k: [] for k in ks}, "ood": []} for name in ("image+edit", "image+bimodal(edit)")}
    edit_cache: dict[str, np.ndarray] = {}
    for src in rng.choice(len(x_img), size=min(n, len(x_img)), replace=False):
        f = dict(factors.iloc[src][list(SHARED)].astype(str))
        factor = list(SHARED)[rng.integers(len(SHARED))]
        value = rng.choice([v for v in SHARED[factor] if v != f[factor]])
        target = "|".join(value if k == factor else f[k] for k in SHARED)
        if value not in edit_cache:
            edit_cache[value] = encode_text([value])[0]
        qs = edit_queries(model, D, bias, bimodal, x_img[src:src + 1], edit_cache[value])
        for name, q in qs.items():
            idx, _ = search(q, x_img, top=max(ks), exclude=np.array([src]))
            for k in ks:
                out[name]["hits"][k].append(bool((keys[idx[0, :k]] == target).any()))
            out[name]["ood"].append(float(ood_score(q, x_img)[0]))
    res = {}
    for name, o in out.items():
        r = {f"R@{k}": float(np.mean(o["hits"][k])) for k in ks}
        res[name] = {**r, "score": float(np.mean(list(r.values()))), "ood_mean": float(np.mean(o["ood"]))}
    return {"n_queries": int(min(n, len(x_img))), "edits": "one shared factor changed; edit text = the new value", **res}
