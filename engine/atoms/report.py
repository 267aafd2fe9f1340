"""The atom browser's numbers for one (cache, SAE): class counts and the intervention table.

``atoms_report`` is what the page shows and what `geolens report atoms --json` prints; the
intervention table (six variants × gap measures and retrieval) is cached as JSON in the SAE's
folder, keyed by every input.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from engine import ENGINE_VERSION
from engine.atoms.interventions import intervention_table, variants
from engine.config import Config, atomic_write_text, stable_hash
from engine.embcache import EmbCache
from engine.gap.report import GapConfig
from engine.sae import store as sae_store
from engine.sae.metrics import encode_all
from engine.sae.pipeline import sae_dir

NOTE = ("every variant is L2-normalised before measuring; 'batched' = recall inside random batches of "
        "{batch} pairs (the paper's protocol), 'full_gallery' = against all {n} pairs")


@dataclasses.dataclass
class AtomsConfig(Config):
    eps: float = 0.05
    """modality-score threshold: text-only if μ < eps, image-only if μ > 1 − eps"""
    seed: int = 0
    """seed of subsamples and retrieval batches"""

    def validate(self) -> None:
        if not 0 <= self.eps < 0.5:
            raise ValueError(f"eps must be in [0, 0.5), got {self.eps}")


@dataclasses.dataclass
class Codes:
    """Everything the interventions need, rows aligned with ``pair_ids``."""
    x_img: np.ndarray  # (n, d)
    x_txt: np.ndarray  # (n, d)
    z_img: np.ndarray  # (n, m)
    z_txt: np.ndarray  # (n, m)
    D: np.ndarray  # (m, d)
    bias: np.ndarray  # (d,)
    pair_ids: np.ndarray  # (n,)


def load_codes(cache: EmbCache, sae: str) -> Codes:
    """Encode the cache's pairs with the SAE (CPU or CUDA as available)."""
    img, txt, pid = cache.pairs()
    model = sae_store.load_sae(cache, sae)
    z_img, _ = encode_all(model, img)
    z_txt, _ = encode_all(model, txt)
    D = model.dictionary().detach().cpu().numpy()
    return Codes(img, txt, z_img, z_txt, D, model.bias.detach().cpu().numpy(), pid)


def bimodal_mask(cache: EmbCache, sae: str, eps: float) -> np.ndarray:
    table = sae_store.atom_table(cache, sae, eps)
    return (table.sort_values("atom")["class"] == "bimodal").to_numpy()


def _key(cache: EmbCache, sae: str, cfg: AtomsConfig, gap: GapConfig) -> str:
    meta = sae_store.sae_meta(cache, sae)
    return stable_hash({"cache": cache.manifest["key"], "sae": sae, "sae_config": meta.get("config"),
                        "atoms": cfg.to_dict(), "gap": gap.to_dict(), "engine": ENGINE_VERSION})


def atoms_report(cache: EmbCache, sae: str, cfg: AtomsConfig | None = None, codes: Codes | None = None,
                 fresh: bool = False) -> dict:
    """Class counts at ``cfg.eps`` and the intervention table, cached beside the SAE."""
    cfg = cfg or AtomsConfig()
    gap = GapConfig(seed=cfg.seed)
    path = sae_dir(cache, sae) / f"interventions-{_key(cache, sae, cfg, gap)}.json"
    if path.exists() and not fresh:
        return json.loads(path.read_text())
    codes = codes or load_codes(cache, sae)
    mask = bimodal_mask(cache, sae, cfg.eps)
    rows = intervention_table(variants(codes.x_img, codes.x_txt, codes.z_img, codes.z_txt, codes.D, mask, codes.bias), gap)
    out = {"cache": cache.name, "sae": sae, "eps": cfg.eps, "class_counts": sae_store.class_counts(cache, sae, cfg.eps),
           "n_pairs": int(len(codes.pair_ids)), "note": NOTE.format(batch=gap.batch, n=len(codes.pair_ids)),
           "interventions": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]}
    atomic_write_text(path, json.dumps(out, indent=2))
    return out
