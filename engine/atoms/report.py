"""The atom browser's numbers for one (cache, SAE): class counts, the intervention table and the
bimodal-only joint map, built once into an ``engine.core.artifacts`` artifact of kind ``atoms``.

key = hash(AtomsConfig, GapConfig, the SAE artifact's key, ``VERSION``). Files:
  report.json       class counts at ε, the intervention table (six variants × gap measures and
                    retrieval), how many pairs it was measured on
  bimodal_map.npy   (2n, 2) PCA of the bimodal-only embeddings, images then captions, rows in
                    ``pair_ids.npy`` order (the page's "joint map of the bimodal-only embeddings")
  pair_ids.npy      (n,) the pairs measured

``build_atoms`` writes it (``geolens atoms build`` / ``geolens report atoms``); ``find_atoms`` and
``read_report`` only read (the page). Reconstructions are made in torch, chunked, from the sparse
codes (``engine.atoms.interventions.reconstruct``), never as a dense (n, m) code matrix; the
intervention metrics run on at most ``max_pairs`` seeded pairs (all of them on small caches).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from engine.atoms.interventions import intervention_table, reconstruct, variants_from
from engine.config import Config, atomic_write_text
from engine.core import artifacts
from engine.embcache import EmbCache
from engine.gap.report import GapConfig
from engine.sae import store as sae_store
from engine.sae.pipeline import find_sae

KIND = "atoms"
VERSION = "1"
REPORT, MAP, PAIRS = "report.json", "bimodal_map.npy", "pair_ids.npy"
NOTE = ("every variant is L2-normalised before measuring; 'batched' = recall inside random batches of "
        "{batch} pairs (the paper's protocol), 'full_gallery' = against all {n} pairs measured{sub}")


@dataclasses.dataclass
class AtomsConfig(Config):
    eps: float = 0.05
    """modality-score threshold: text-only if μ < eps, image-only if μ > 1 − eps"""
    seed: int = 0
    """seed of subsamples and retrieval batches"""
    max_pairs: int = 20000
    """the intervention table is measured on at most this many seeded pairs"""

    def validate(self) -> None:
        if not 0 <= self.eps < 0.5:
            raise ValueError(f"eps must be in [0, 0.5), got {self.eps}")
        if self.max_pairs < 2:
            raise ValueError(f"max_pairs must be at least 2, got {self.max_pairs}")


def bimodal_mask(cache: EmbCache, sae: str, eps: float) -> np.ndarray:
    table = sae_store.atom_table(cache, sae, eps)
    return (table.sort_values("atom")["class"] == "bimodal").to_numpy()


def _sae_artifact(cache: EmbCache, sae: str):
    art = find_sae(cache, sae)
    if art is None:
        sae_store.sae_dir(cache, sae)  # raises, naming the SAEs that exist
    return art


def _inputs(cache: EmbCache, sae: str, cfg: AtomsConfig) -> tuple[dict, list[str]]:
    return {"atoms": cfg.to_dict(), "gap": GapConfig(seed=cfg.seed).to_dict()}, [_sae_artifact(cache, sae).key]


def find_atoms(cache: EmbCache, sae: str, cfg: AtomsConfig | None = None):
    """The built atoms artifact for (cache, SAE, cfg), or None. Never writes."""
    config, inputs = _inputs(cache, sae, cfg or AtomsConfig())
    return artifacts.find(KIND, artifacts.artifact_key(KIND, config, inputs, VERSION))


def read_report(art) -> dict:
    """The JSON the page shows (``report.json`` of a built artifact)."""
    return json.loads(art.file(REPORT).read_text())


def bimodal_map(art) -> tuple[np.ndarray, np.ndarray]:
    """(xy (2n, 2): PCA of the bimodal-only embeddings, images then captions; pair ids (n,))."""
    return np.load(art.file(MAP)), np.load(art.file(PAIRS))


def build_atoms(cache: EmbCache, sae: str, cfg: AtomsConfig | None = None, force: bool = False, device=None):
    """Build (or find) the atoms artifact: class counts, interventions, bimodal-only map."""
    from engine.gap.metrics import normalise
    from engine.gap.projection import pca_2d, stack

    cfg = cfg or AtomsConfig()
    config, inputs = _inputs(cache, sae, cfg)
    found = artifacts.find(KIND, artifacts.artifact_key(KIND, config, inputs, VERSION))
    if found is not None and not force:
        return found
    gap = GapConfig(seed=cfg.seed)
    img, txt, pid = cache.pairs()
    n_all = len(pid)
    if n_all > cfg.max_pairs:
        rows = np.sort(np.random.default_rng(cfg.seed).choice(n_all, cfg.max_pairs, replace=False))
        img, txt, pid = img[rows], txt[rows], pid[rows]
    from engine.device import pick_device

    model = sae_store.load_sae(cache, sae, device=pick_device(device))
    mask = bimodal_mask(cache, sae, cfg.eps)
    rec_i, rec_t = reconstruct(model, img, mask), reconstruct(model, txt, mask)
    rows = intervention_table(variants_from(img, txt, rec_i, rec_t), gap)
    sub = f" (a seeded sample of {len(pid)} of {n_all} pairs)" if len(pid) < n_all else ""
    out = {"cache": cache.name, "sae": sae, "eps": cfg.eps, "class_counts": sae_store.class_counts(cache, sae, cfg.eps),
           "n_pairs": int(len(pid)), "n_pairs_total": int(n_all), "note": NOTE.format(batch=gap.batch, n=len(pid), sub=sub),
           "interventions": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]}
    xy = pca_2d(stack(normalise(rec_i["bimodal_only"]), normalise(rec_t["bimodal_only"])))
    with artifacts.writing(KIND, config, inputs, VERSION, name=f"{sae}-eps{cfg.eps:g}", resume=False) as w:
        atomic_write_text(w.file(REPORT), json.dumps(out, indent=2))
        np.save(w.file(MAP), np.asarray(xy, dtype=np.float32))
        np.save(w.file(PAIRS), np.asarray(pid, dtype=np.int64))
        w.meta.update({"cache": cache.name, "sae": sae, "class_counts": out["class_counts"], "n_pairs": out["n_pairs"]})
    return artifacts.find(KIND, w.key)


def atoms_report(cache: EmbCache, sae: str, cfg: AtomsConfig | None = None, fresh: bool = False) -> dict:
    """Class counts at ``cfg.eps`` and the intervention table (built first when missing, or ``fresh``)."""
    return read_report(build_atoms(cache, sae, cfg, force=fresh))
