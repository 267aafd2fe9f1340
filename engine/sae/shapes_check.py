"""The Shapes-world check: do bimodal atoms track shared factors, unimodal atoms modality-only ones?

For atom a and factor f (value set V_f), on the items of modality mod:
  r_mod(a, f) = max_{v ∈ V_f} corr(z_a(item), 1[f(item) = v])     (Pearson, over items of mod)
An atom's score for f is r(a, f) = max(r_image(a, f), r_text(a, f)), restricted to the modality
that can express f (image-only factors: images; text-only factors: texts; shared: both).
Each alive atom gets its best factor argmax_f r(a, f); the check reports, per atom class, the
fraction whose best factor is shared / image-only / text-only, and ``agreement``: the fraction of
alive atoms whose class matches the kind of their best factor (bimodal↔shared, image↔image,
text↔text). Per factor it reports the best-correlated atom and its class.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from engine.embcache import EmbCache
from engine.sae import store as sae_store

KIND_OF_CLASS = {"bimodal": "shared", "image": "image", "text": "text"}


def indicator_corr(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """max over label values of Pearson corr(z[:, a], 1[labels = v]): z (n, m), labels (n,) -> (m,)."""
    zc = z - z.mean(0)
    zn = np.sqrt((zc ** 2).sum(0))  # (m,)
    best = np.full(z.shape[1], -np.inf)
    for v in np.unique(labels):
        ind = (labels == v).astype(np.float64)
        ic = ind - ind.mean()
        inn = np.sqrt((ic ** 2).sum())
        if inn == 0:
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (zc * ic[:, None]).sum(0) / (zn * inn)
        best = np.maximum(best, np.nan_to_num(r, nan=0.0))
    return np.where(np.isfinite(best), best, 0.0)


def dense_codes(codes: pd.DataFrame, ids: np.ndarray, m: int) -> np.ndarray:
    """Long (id, atom, value) -> dense (len(ids), m) in the order of ``ids``."""
    pos = pd.Series(np.arange(len(ids)), index=ids)
    codes = codes[codes["id"].isin(ids)]
    z = np.zeros((len(ids), m), dtype=np.float64)
    z[pos.reindex(codes["id"]).to_numpy(), codes["atom"].to_numpy()] = codes["value"].to_numpy()
    return z


def factor_scores(z_img: np.ndarray, z_txt: np.ndarray, factors: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """(m, n_factors) table of r(a, f); rows of z_img / z_txt / factors are the same pairs."""
    out = {}
    for f, kind in kinds.items():
        labels = factors[f].to_numpy()
        r_img = indicator_corr(z_img, labels) if kind in ("shared", "image") else np.zeros(z_img.shape[1])
        r_txt = indicator_corr(z_txt, labels) if kind in ("shared", "text") else np.zeros(z_txt.shape[1])
        out[f] = np.maximum(r_img, r_txt)
    return pd.DataFrame(out)


def summarise(scores: pd.DataFrame, classes: np.ndarray, kinds: dict[str, str]) -> dict:
    alive = classes != "dead"
    best_f = scores.idxmax(axis=1).to_numpy()
    best_r = scores.max(axis=1).to_numpy()
    best_kind = np.array([kinds[f] for f in best_f], dtype=object)
    by_class = {}
    for c in ("bimodal", "image", "text"):
        sel = classes == c
        n = int(sel.sum())
        by_class[c] = {"n": n, "mean_best_corr": round(float(best_r[sel].mean()), 4) if n else None,
                       "best_factor_kind": {k: round(float((best_kind[sel] == k).mean()), 4) if n else None
                                            for k in ("shared", "image", "text")}}
    agree = np.array([KIND_OF_CLASS.get(c) == k for c, k in zip(classes, best_kind)])
    per_factor = {}
    for f, kind in kinds.items():
        col = scores[f].where(alive, -np.inf)
        a = int(col.idxmax())
        per_factor[f] = {"kind": kind, "best_atom": a, "atom_class": str(classes[a]), "corr": round(float(col[a]), 4)}
        for c in ("bimodal", "image", "text"):
            sub = scores[f][classes == c]
            per_factor[f][f"best_{c}_corr"] = round(float(sub.max()), 4) if len(sub) else None
    return {"n_alive": int(alive.sum()),
            "agreement": round(float(agree[alive].mean()), 4) if alive.any() else None,
            "by_class": by_class, "per_factor": per_factor}


def shapes_check(cache: EmbCache, sae: str, eps: float | None = None) -> dict:
    """Run the check on a cache that has ground-truth factors and a trained SAE ``sae``."""
    kinds = cache.factor_kinds()
    if not kinds:
        raise ValueError(f"cache {cache.name} has no ground-truth factors; the Shapes check needs a Shapes cache "
                         "(`geolens precompute --dataset shapes`)")
    atoms = sae_store.atom_table(cache, sae, eps)
    factors = cache.factors().set_index("pair_id")
    pair_ids = cache.pair_ids()
    codes = sae_store.store.query_df(sae_store._stats(cache, sae), "SELECT id, atom, value FROM codes")
    m = len(atoms)
    z_img = dense_codes(codes, 2 * pair_ids, m)
    z_txt = dense_codes(codes, 2 * pair_ids + 1, m)
    scores = factor_scores(z_img, z_txt, factors.loc[pair_ids], kinds)
    classes = atoms["class"].to_numpy().astype(object)
    counts = {c: int((classes == c).sum()) for c in ("bimodal", "image", "text", "dead")}
    return {"cache": cache.name, "sae": sae, "class_counts": counts, **summarise(scores, classes, kinds)}
