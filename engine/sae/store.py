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
from engine.sae.learners import DictionaryLearner, make_learner
from engine.sae.pipeline import CONFIG, META, STATS, WEIGHTS, sae_dir
from engine.sae.stats import classify

MODALITIES = ("image", "text")


def _cache(cache: EmbCache | str) -> EmbCache:
    return open_cache(cache) if isinstance(cache, str) else cache


def _stats(cache, name: str) -> Path:
    path = sae_dir(_cache(cache), name) / STATS
    if not path.exists():
        raise FileNotFoundError(f"no SAE {name!r} on cache {_cache(cache).name}; "
                                f"train one with `geolens train-sae --cache {_cache(cache).name}`")
    return path


def list_saes(cache: EmbCache | str) -> pd.DataFrame:
    """The SAEs linked from the cache: name, arch, atoms, k, beta, seed, ev, class counts, path."""
    rows = []
    for r in _cache(cache).artifacts("sae").itertuples():
        cfg = json.loads(r.config)
        c, m = cfg["config"], cfg.get("metrics", {})
        rows.append({"name": r.name, "arch": c["arch"], "atoms": c["atoms"], "k": c["k"], "beta": c["beta"],
                     "seed": c["seed"], "ev": m.get("ev"), **cfg.get("class_counts", {}), "path": r.path})
    return pd.DataFrame(rows, columns=None if rows else ["name", "arch", "atoms", "k", "beta", "seed", "ev", "path"])


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
    """The k most active items of ``modality`` for ``atom``: rank, id, value (descending)."""
    if modality not in MODALITIES:
        raise ValueError(f"modality={modality!r}; choose one of {MODALITIES}")
    return store.query_df(_stats(cache, name),
                          "SELECT rank, id, value FROM top_items WHERE atom = ? AND modality = ? AND rank < ? ORDER BY rank",
                          [int(atom), modality, int(k)])


def item_codes(cache: EmbCache | str, name: str, item_id: int) -> pd.DataFrame:
    """The sparse code of one item: atom, value, class of the atom (largest first)."""
    return store.query_df(_stats(cache, name),
                          "SELECT c.atom, c.value, a.class, a.mu FROM codes c JOIN atoms a USING (atom) "
                          "WHERE c.id = ? ORDER BY abs(c.value) DESC", [int(item_id)])


def items_using(cache: EmbCache | str, name: str, atom: int) -> pd.DataFrame:
    """Every item whose code uses ``atom``: id, value."""
    return store.query_df(_stats(cache, name), "SELECT id, value FROM codes WHERE atom = ? ORDER BY value DESC", [int(atom)])


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
