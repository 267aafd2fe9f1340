"""Interventions on sparse codes: keep some atoms, decode, measure the gap and retrieval.

With codes Z (n, m) and dictionary D (m, d), the embedding decoded from a set of atoms S is
x̃ = Σ_{k∈S} z_k D_k. Variants (docs/METHODS.md §1):
- reconstructed  x̂ = Z D;
- bimodal-only   S = bimodal atoms;  unimodal-only  S = the complement;
- mean-centred   x̂ − mean of its own modality;
- shifted        x̂_I − Δ/2 and x̂_T + Δ/2 with Δ = mean(x̂_I) − mean(x̂_T).
Every variant is L2-normalised before it is measured (embeddings are compared by cosine).
"""
from __future__ import annotations

import numpy as np

from engine.gap import metrics
from engine.gap.metrics import normalise
from engine.gap.report import GapConfig

VARIANTS = ("original", "reconstructed", "bimodal_only", "unimodal_only", "mean_centred", "shifted")


def decode_subset(Z: np.ndarray, D: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Σ_{k: keep[k]} z_k D_k for every row. Z (n, m), D (m, d), keep (m,) bool -> (n, d)."""
    keep = np.asarray(keep, dtype=bool)
    return Z[:, keep] @ D[keep]


def variants(x_img: np.ndarray, x_txt: np.ndarray, Z_img: np.ndarray, Z_txt: np.ndarray, D: np.ndarray,
             bimodal: np.ndarray, bias: np.ndarray | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The embeddings of every variant, images and captions, before normalisation.

    ``bias`` (d,) is the decoder bias of SAEs that have one: part of the reconstruction
    x̂ = Z D + b, not of the atom subsets (x̃ = Σ_{k∈S} z_k D_k, as in the paper).
    """
    every = np.ones(D.shape[0], dtype=bool)
    b = 0.0 if bias is None else bias
    rec_i, rec_t = decode_subset(Z_img, D, every) + b, decode_subset(Z_txt, D, every) + b
    delta = rec_i.mean(0) - rec_t.mean(0)
    return {
        "original": (x_img, x_txt),
        "reconstructed": (rec_i, rec_t),
        "bimodal_only": (decode_subset(Z_img, D, bimodal), decode_subset(Z_txt, D, bimodal)),
        "unimodal_only": (decode_subset(Z_img, D, ~np.asarray(bimodal, bool)), decode_subset(Z_txt, D, ~np.asarray(bimodal, bool))),
        "mean_centred": (rec_i - rec_i.mean(0), rec_t - rec_t.mean(0)),
        "shifted": (rec_i - delta / 2, rec_t + delta / 2),
    }


def intervention_table(vs: dict[str, tuple[np.ndarray, np.ndarray]], cfg: GapConfig | None = None) -> list[dict]:
    """One row per variant: DiM, W, pair cosine, probe accuracy, recall@k batched and full-gallery."""
    cfg = cfg or GapConfig()
    rows = []
    for name, (i, t) in vs.items():
        i, t = normalise(i), normalise(t)
        row = {"variant": name, "DiM": metrics.centroid_distance(i, t), "W": metrics.wasserstein(i, t, cfg.w_max, cfg.seed).value,
               "pair_cosine": metrics.mean_pair_cosine(i, t),
               "probe_accuracy": metrics.probe_accuracy(i, t, cfg.probe_test_fraction, cfg.probe_max, cfg.seed).accuracy}
        recalls = {"batched": metrics.recall_batched(i, t, cfg.ks, cfg.batch, cfg.seed), "full_gallery": metrics.recall_full(i, t, cfg.ks)}
        for flavour, r in recalls.items():
            for k, v in r["mean"].items():
                row[f"{flavour}_{k}"] = v
        rows.append(row)
    return rows


def compose(x_img: np.ndarray, x_edit: np.ndarray) -> np.ndarray:
    """Composed query x̂_image + x̂_edit, normalised. (n, d), (d,) or (n, d) -> (n, d)."""
    return normalise(np.atleast_2d(x_img) + x_edit)


def ood_score(queries: np.ndarray, gallery: np.ndarray, k: int = 5) -> np.ndarray:
    """Cosine distance of each query to its k-th nearest gallery embedding (lower = more in-distribution)."""
    sims = normalise(np.atleast_2d(queries)) @ normalise(gallery).T
    kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1]
    return 1.0 - kth


def reconstruct(model, x: np.ndarray, bimodal: np.ndarray, chunk: int = 4096, device=None) -> dict[str, np.ndarray]:
    """The SAE's decodings of x (n, d) in torch, ``chunk`` rows at a time on the model's device:
    ``reconstructed`` x̂ = z D + b, ``bimodal_only`` Σ_{k∈B} z_k D_k, ``unimodal_only`` the complement
    (no bias, as in the paper). Memory O(chunk · m + n · d): no dense (n, m) code matrix is kept."""
    import torch

    from engine.sae.train import cpu_threads

    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(dev).eval()
    keep = torch.tensor(np.asarray(bimodal, dtype=bool), device=dev)
    out = {k: np.empty((len(x), model.d), dtype=np.float32) for k in ("reconstructed", "bimodal_only", "unimodal_only")}
    with torch.no_grad(), cpu_threads(dev, model):
        D = model.dictionary()
        for s in range(0, len(x), chunk):
            z = model.encode(torch.as_tensor(np.asarray(x[s:s + chunk], dtype=np.float32), device=dev))
            zb = z * keep
            bim = zb @ D
            uni = (z - zb) @ D
            out["bimodal_only"][s:s + chunk] = bim.cpu().numpy()
            out["unimodal_only"][s:s + chunk] = uni.cpu().numpy()
            out["reconstructed"][s:s + chunk] = (bim + uni + model.bias).cpu().numpy()
    return out


def variants_from(x_img: np.ndarray, x_txt: np.ndarray, rec_img: dict, rec_txt: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``variants`` from the decodings of ``reconstruct`` (images, captions), before normalisation."""
    rec_i, rec_t = rec_img["reconstructed"], rec_txt["reconstructed"]
    delta = rec_i.mean(0, dtype=np.float64) - rec_t.mean(0, dtype=np.float64)
    return {
        "original": (x_img, x_txt),
        "reconstructed": (rec_i, rec_t),
        "bimodal_only": (rec_img["bimodal_only"], rec_txt["bimodal_only"]),
        "unimodal_only": (rec_img["unimodal_only"], rec_txt["unimodal_only"]),
        "mean_centred": (rec_i - rec_i.mean(0, dtype=np.float64), rec_t - rec_t.mean(0, dtype=np.float64)),
        "shifted": (rec_i - delta / 2, rec_t + delta / 2),
    }
