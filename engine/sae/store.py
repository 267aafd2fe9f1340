"""Read API over trained SAEs, for pages and reports (read-only; one connection per query).

Every function takes an ``EmbCache`` (or its name) and an SAE name as listed by ``list_saes``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from engine import store
from engine.embcache import EmbCache, open_cache
from engine.sae.config import SAEConfig
from engine.sae.learners import DictionaryLearner
from engine.sae.registry import make_learner
from engine.sae import tables
from engine.sae.pipeline import CONFIG, META, STATS, WEIGHTS, list_artifacts, sae_dir
from engine.sae.stats import classify

MODALITIES = ("image", "text")


def _cache(cache: EmbCache | str) -> EmbCache:
    return open_cache(cache) if isinstance(cache, str) else cache


def _stats(cache, name: str) -> Path:
    path = sae_dir(_cache(cache), name) / STATS  # sae_dir names the SAEs that exist when this one does not
    if not path.exists():
        raise FileNotFoundError(f"SAE {name!r} on cache {_cache(cache).name} has no {STATS}; "
                                f"retrain it with `geolens train-sae --cache {_cache(cache).name} --force`")
    return path


def list_saes(cache: EmbCache | str) -> pd.DataFrame:
    """The SAEs trained on the cache: name, key, arch, atoms, k, beta, seed, ev, class counts, path."""
    rows = []
    for art in _list(_cache(cache)):
        c, meta = art.config, art.meta
        rows.append({"name": art.name, "key": art.key, "arch": c["arch"], "atoms": c["atoms"], "k": c["k"],
                     "beta": c["beta"], "seed": c["seed"], "ev": meta.get("metrics", {}).get("ev"),
                     **meta.get("class_counts", {}), "path": str(art.path)})
    return pd.DataFrame(rows, columns=None if rows else ["name", "key", "arch", "atoms", "k", "beta", "seed", "ev", "path"])


def _list(cache: EmbCache):
    return list_artifacts(cache)


def sae_meta(cache: EmbCache | str, name: str) -> dict:
    """meta.json of the SAE: provenance, config, metrics, class counts, training history."""
    return json.loads((sae_dir(_cache(cache), name) / META).read_text())


def load_sae(cache: EmbCache | str, name: str, device: str | torch.device = "cpu") -> DictionaryLearner:
    """The trained learner in eval mode; encode/decode/dictionary as in ``engine.sae.learners``."""
    folder = sae_dir(_cache(cache), name)
    if not (folder / WEIGHTS).exists():
        raise FileNotFoundError(f"no weights for SAE {name!r} in {folder}; train it with `geolens train-sae`")
    cfg = SAEConfig.load_json(folder / CONFIG)
    d = json.loads((folder / META).read_text())["d"]
    model = make_learner(cfg.arch, d, cfg.atoms, cfg.k, **cfg.learner_kwargs())
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    return model.to(device).eval()


def atom_table(cache: EmbCache | str, name: str, eps: float | None = None) -> pd.DataFrame:
    """One row per atom: energies, μ, firing frequencies, energy shares, class (re-classified at eps)."""
    df = store.query_df(_stats(cache, name), "SELECT * FROM atoms ORDER BY atom")
    if eps is not None:
        alive = (df["freq_image"] + df["freq_text"]) > 0
        df["class"] = classify(df["mu"].to_numpy(), alive.to_numpy(), eps)
    return df


def class_counts(cache: EmbCache | str, name: str, eps: float | None = None) -> dict[str, int]:
    counts = atom_table(cache, name, eps)["class"].value_counts()
    return {c: int(counts.get(c, 0)) for c in ("bimodal", "image", "text", "dead")}


def top_items(cache: EmbCache | str, name: str, atom: int, modality: str, k: int = 50) -> pd.DataFrame:
    """The k most active items of ``modality`` for ``atom``: rank, id, value (descending).

    Read from the SAE's memory-mapped per-atom arrays (``engine.sae.tables``), O(k) at any size."""
    if modality not in MODALITIES:
        raise ValueError(f"modality={modality!r}; choose one of {MODALITIES}")
    folder = sae_dir(_cache(cache), name)
    if not tables.has_tables(folder):  # built by an older engine or by `geolens sae encode`: the DuckDB table
        return store.query_df(_stats(cache, name), "SELECT rank, id, value FROM top_items WHERE atom = ? AND modality = ? "
                              "AND rank < ? ORDER BY rank", [int(atom), modality, int(k)])
    return tables.atom_top_items(folder, atom, min(int(k), tables.N_TOP), modality).drop(columns="modality")


def item_codes(cache: EmbCache | str, name: str, item_id: int) -> pd.DataFrame:
    """The sparse code of one item: atom, value, class of the atom (largest first)."""
    folder = sae_dir(_cache(cache), name)
    if not tables.has_tables(folder):
        return store.query_df(_stats(cache, name),
                              "SELECT c.atom, c.value, a.class, a.mu FROM codes c JOIN atoms a USING (atom) "
                              "WHERE c.id = ? ORDER BY abs(c.value) DESC", [int(item_id)])
    code = tables.item_code(folder, item_id)
    atoms = atom_table(cache, name).set_index("atom")
    return code.assign(**{"class": atoms["class"].reindex(code["atom"]).to_numpy(),
                          "mu": atoms["mu"].reindex(code["atom"]).to_numpy()})


def items_using(cache: EmbCache | str, name: str, atom: int) -> pd.DataFrame:
    """Every item whose code uses ``atom``: id, value (largest first)."""
    folder = sae_dir(_cache(cache), name)
    if not tables.has_tables(folder):
        return store.query_df(_stats(cache, name), "SELECT id, value FROM codes WHERE atom = ? ORDER BY value DESC", [int(atom)])
    return tables.atom_codes(folder, atom)


def histogram(cache: EmbCache | str, name: str, atom: int) -> pd.DataFrame:
    """Non-zero activations of ``atom`` per modality: modality, bin, lo, hi, count."""
    return store.query_df(_stats(cache, name),
                          "SELECT modality, bin, lo, hi, count FROM histograms WHERE atom = ? ORDER BY modality, bin",
                          [int(atom)])


def dictionary(cache: EmbCache | str, name: str) -> np.ndarray:
    """The atoms D, (m, d)."""
    import contextlib

    with contextlib.closing(store.connect_ro(_stats(cache, name))) as con:
        return store.fetch_array(con, "SELECT vec FROM dictionary ORDER BY atom")


def anchors(cache: EmbCache | str, name: str, atom: int) -> pd.DataFrame:
    """Archetypal SAEs: the data items an atom is built from (rank, id, weight); empty otherwise."""
    path = _stats(cache, name)
    import contextlib

    with contextlib.closing(store.connect_ro(path)) as con:
        if not store.has_table(con, "anchors"):
            return pd.DataFrame(columns=["rank", "id", "weight"])
        return con.execute("SELECT rank, id, weight FROM anchors WHERE atom = ? ORDER BY rank", [int(atom)]).df()
