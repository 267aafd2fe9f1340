"""Per-atom statistics of a trained dictionary over a cache's items, written to DuckDB.

With codes z over the items of each modality (docs/METHODS.md §1):
  energy_image_k = E_img[z_k²],  energy_text_k = E_txt[z_k²]
  μ_k = energy_image_k / (energy_image_k + energy_text_k)
  class: dead if atom k never fires; text if μ_k < ε; image if μ_k > 1 − ε; bimodal otherwise
  freq_<mod>_k = P_<mod>(z_k ≠ 0);  share_<mod>_k = energy_<mod>_k / Σ_j energy_<mod>_j

stats.duckdb tables (one file per SAE, in the SAE's folder):
  meta(key VARCHAR, value VARCHAR)        JSON values: config, metrics, eps, cache, n_top, bins
  atoms(atom, energy_image, energy_text, mu, freq_image, freq_text, share_image, share_text,
        class, norm)                      class at the stored eps (pages re-classify live)
  dictionary(atom INTEGER, vec FLOAT[d])  the atoms D
  top_items(atom, modality, rank, id, value)   up to n_top most active items per atom and modality
  histograms(atom, modality, bin, lo, hi, count)  non-zero activations, bins shared by modalities
  codes(id, atom, value)                  every item's sparse code (non-zeros only)
  anchors(atom, rank, id, weight)         archetypal SAEs: data items behind each atom's centroids
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from engine import store

CLASSES = ("bimodal", "image", "text", "dead")
DEFAULT_EPS = 0.05


def classify(mu: np.ndarray, alive: np.ndarray, eps: float = DEFAULT_EPS) -> np.ndarray:
    """Atom classes from modality scores μ (m,) and an alive mask (m,)."""
    if not 0 <= eps < 0.5:
        raise ValueError(f"eps={eps} must be in [0, 0.5)")
    mu = np.nan_to_num(np.asarray(mu, dtype=np.float64), nan=0.5)
    out = np.where(mu < eps, "text", np.where(mu > 1 - eps, "image", "bimodal")).astype(object)
    out[~np.asarray(alive, dtype=bool)] = "dead"
    return out


def sparse_codes(z: np.ndarray, ids: np.ndarray) -> pd.DataFrame:
    """Dense codes z (N, m) of items ``ids`` (N,) -> long table (id, atom, value) of the non-zeros."""
    rows, atoms = np.nonzero(z)
    return pd.DataFrame({"id": ids[rows].astype(np.int64), "atom": atoms.astype(np.int32),
                         "value": z[rows, atoms].astype(np.float32)})


def atom_stats(codes: pd.DataFrame, modality_of: pd.Series, n_items: dict[str, int], m: int,
               eps: float = DEFAULT_EPS) -> pd.DataFrame:
    """The per-atom table from a long code table and each item's modality."""
    df = codes.assign(modality=modality_of.reindex(codes["id"]).to_numpy())
    sq, cnt = {}, {}
    for mod in ("image", "text"):
        part = df[df["modality"] == mod]
        sq[mod] = np.bincount(part["atom"], weights=part["value"].astype(np.float64) ** 2, minlength=m)
        cnt[mod] = np.bincount(part["atom"], minlength=m)
    return atom_frame(sq, cnt, n_items, eps)


def atom_frame(energy: dict[str, np.ndarray], count: dict[str, np.ndarray], n_items: dict[str, int],
               eps: float = DEFAULT_EPS) -> pd.DataFrame:
    """The per-atom table from each modality's summed squared codes and non-zero counts (m,):
    energies and frequencies per item, shares, μ and class."""
    m = len(energy["image"])
    out = pd.DataFrame({"atom": np.arange(m, dtype=np.int32)})
    for mod in ("image", "text"):
        sq, n = energy[mod], max(n_items.get(mod, 0), 1)
        out[f"energy_{mod}"] = sq / n
        out[f"freq_{mod}"] = count[mod] / n
        out[f"share_{mod}"] = sq / sq.sum() if sq.sum() > 0 else 0.0
    tot = out["energy_image"] + out["energy_text"]
    out["mu"] = np.where(tot > 0, out["energy_image"] / tot.where(tot > 0, 1.0), np.nan)
    alive = (out["freq_image"] + out["freq_text"]) > 0
    out["class"] = classify(out["mu"].to_numpy(), alive.to_numpy(), eps)
    return out


def top_items(codes: pd.DataFrame, modality_of: pd.Series, n_top: int) -> pd.DataFrame:
    """Up to n_top most active items per (atom, modality): (atom, modality, rank, id, value)."""
    df = codes.assign(modality=modality_of.reindex(codes["id"]).to_numpy())
    df = df.sort_values(["atom", "modality", "value", "id"], ascending=[True, True, False, True])
    df = df.groupby(["atom", "modality"], sort=False).head(n_top).copy()
    df["rank"] = df.groupby(["atom", "modality"]).cumcount().astype(np.int32)
    return df[["atom", "modality", "rank", "id", "value"]].reset_index(drop=True)


def histograms(codes: pd.DataFrame, modality_of: pd.Series, bins: int = 20) -> pd.DataFrame:
    """Histogram of each atom's non-zero activations per modality, same bin edges for both."""
    df = codes.assign(modality=modality_of.reindex(codes["id"]).to_numpy())
    rng = df.groupby("atom")["value"].agg(["min", "max"])
    lo = np.minimum(rng["min"], 0.0)
    hi = np.maximum(rng["max"], lo + 1e-6)
    a_lo, a_hi = lo.reindex(df["atom"]).to_numpy(), hi.reindex(df["atom"]).to_numpy()
    b = np.clip(((df["value"] - a_lo) / (a_hi - a_lo) * bins).astype(int), 0, bins - 1)
    counts = df.assign(bin=b.astype(np.int32)).groupby(["atom", "modality", "bin"]).size().rename("count").reset_index()
    width = (hi - lo) / bins
    counts["lo"] = (lo.reindex(counts["atom"]).to_numpy() + counts["bin"] * width.reindex(counts["atom"]).to_numpy()).astype(np.float32)
    counts["hi"] = (counts["lo"] + width.reindex(counts["atom"]).to_numpy()).astype(np.float32)
    return counts[["atom", "modality", "bin", "lo", "hi", "count"]]


def compute_stats(model, ids: np.ndarray, x: np.ndarray, modality: np.ndarray, eps: float = DEFAULT_EPS,
                  n_top: int = 64, bins: int = 20, chunk: int = 8192, device=None) -> dict:
    """Every table of stats.duckdb (except meta/anchors) for items ``ids`` (N,) with embeddings x (N, d).

    Encodes ``chunk`` items at a time in torch (``engine.sae.tables.encode_tables``); the per-atom
    arrays of ``engine.sae.tables`` come back under ``"arrays"`` for ``write_tables``.
    """
    from engine.sae.tables import array_chunks, encode_tables

    t = encode_tables(model, array_chunks(np.asarray(ids), x, np.asarray(modality) == "image", chunk), n_top, device)
    return tables_from(model, t, eps, bins)


def tables_from(model, t, eps: float = DEFAULT_EPS, bins: int = 20) -> dict:
    """stats.duckdb's tables from an ``engine.sae.tables.Tables`` pass."""
    from engine.sae.tables import histograms_from

    D = model.dictionary().detach().cpu().numpy()
    atoms = t.atom_table(eps)
    atoms["norm"] = np.linalg.norm(D, axis=1).astype(np.float32)
    return {"atoms": atoms, "top_items": t.top_items_frame(), "histograms": histograms_from(t, bins),
            "codes": t.codes(), "dictionary": D, "arrays": t}


def write_stats(path: Path, tables: dict, meta: dict, anchors: pd.DataFrame | None = None) -> Path:
    """Write the tables of ``compute_stats`` (plus meta, anchors) atomically to ``path``."""
    path = Path(path)
    with store.writing(path) as con:
        for t in ("meta", "atoms", "dictionary", "top_items", "histograms", "codes", "anchors"):
            con.execute(f"DROP TABLE IF EXISTS {store.ident(t)}")  # a resumed partial file starts clean
        keys = sorted(meta)
        store.insert_rows(con, "meta", {"key": keys, "value": [json.dumps(meta[k], default=float) for k in keys]})
        for name in ("atoms", "top_items", "histograms", "codes"):
            con.register("_df", tables[name])
            con.execute(f"CREATE TABLE {store.ident(name)} AS SELECT * FROM _df")
            con.unregister("_df")
        D = tables["dictionary"]
        store.insert_rows(con, "dictionary", {"atom": np.arange(len(D), dtype=np.int32), "vec": D})
        if anchors is not None:
            con.register("_df", anchors)
            con.execute("CREATE TABLE anchors AS SELECT * FROM _df")
            con.unregister("_df")
    return path
