"""Friendly names for what selectors show, and what each default stage has produced.

A cache file is named by its content hash (``shapes-n4000-s0__geolens-tiny-…-c18c39223b4f``);
people see ``Shapes · geolens-tiny · 4,000 pairs`` and get the file name as a tooltip.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping


def _model_label(model: Mapping[str, Any]) -> str:
    arch = str(model.get("arch") or "?")
    pre = model.get("pretrained")
    if not pre:
        return f"{arch} (random init)"
    if pre == "local-file":  # identities name local weights by hash, not path; geolens-tiny's are the default
        return arch if arch == "geolens-tiny" else f"{arch} (local weights)"
    stem = Path(str(pre)).stem if ("/" in str(pre) or str(pre).endswith((".safetensors", ".bin", ".pt"))) else str(pre)
    return arch if stem.startswith(arch) else f"{arch} ({stem})"


def _dataset_label(dataset: Mapping[str, Any]) -> str:
    src = str(dataset.get("source") or "?")
    if src == "shapes":
        return "Shapes" + (f" (seed {dataset['seed']})" if dataset.get("seed") not in (None, 0) else "")
    return Path(str(dataset.get("file") or src)).stem


def cache_label(manifest: Mapping[str, Any]) -> str:
    """``dataset · model · n`` of an embedding cache's manifest, e.g. ``Shapes · geolens-tiny · 4,000 pairs``."""
    n = manifest.get("n_pairs")
    n_text = f"{int(n):,} pairs" if n is not None else "? pairs"
    return f"{_dataset_label(manifest.get('dataset') or {})} · {_model_label(manifest.get('model') or {})} · {n_text}"


def cache_labels(caches) -> dict[str, str]:
    """``{cache name: friendly label}`` for ``EmbCache`` objects; equal labels get the key's start appended."""
    labels = {c.name: cache_label(c.manifest) for c in caches}
    seen: dict[str, int] = {}
    for lab in labels.values():
        seen[lab] = seen.get(lab, 0) + 1
    return {name: (lab if seen[lab] == 1 else f"{lab} · {name.rsplit('-', 1)[-1][:6]}") for name, lab in labels.items()}


# ----------------------------------------------------------------------------- default stages
def default_shapes_caches():
    from engine.datasets.sources import resolve
    from engine.embcache import list_caches

    want = resolve("shapes").identity()
    return [c for c in list_caches() if c.manifest.get("dataset") == want and c.manifest.get("model", {}).get("arch") == "geolens-tiny"]


def default_shapes_cache():
    """The default Shapes cache of the default weights now in the cache folder (what `geolens
    build-defaults --only shapes` precomputes), or None. Reads only (hashes the weights file)."""
    from engine.config import file_hash
    from engine.default_model import recipe, weights_path

    weights = weights_path(recipe())
    if not weights.exists():
        return None
    h = file_hash(weights)
    return next((c for c in default_shapes_caches() if c.manifest.get("model", {}).get("weights_hash") == h), None)


def store_stamp() -> tuple[int, ...]:
    """A value that changes whenever a cache, artifact or dvr reference is added, replaced, removed or
    rewritten: the modification times of the cache root, its DuckDB files and the store's kind folders
    (artifacts appear by a rename into their kind's folder). A few ``stat`` calls: pages key their
    cached reads on it instead of re-reading on a timer."""
    from engine.store import cache_root

    root = cache_root()
    if not root.exists():
        return ()
    arts = root / "artifacts"
    paths = [root, *sorted(root.glob("*.duckdb")), arts, *(sorted(arts.iterdir()) if arts.is_dir() else [])]
    out = []
    for p in paths:
        try:
            out.append(p.stat().st_mtime_ns)
        except FileNotFoundError:  # removed between the listing and the stat: that is a change too
            out.append(-1)
    return tuple(out)


def default_stage_outputs(stage: str) -> list[str]:
    """Friendly names of what ``geolens build-defaults --only <stage>`` produced; [] if incomplete.

    Reads only (lists files and manifests); never trains or encodes.
    """
    if stage == "shapes":
        return [cache_label(c.manifest) for c in default_shapes_caches()]
    if stage == "saes":
        from engine.sae.store import list_saes

        out = []
        for c in default_shapes_caches():
            saes = list_saes(c)
            betas = {float(b) for b in saes["beta"]} if len(saes) else set()
            if {0.0, 4e-4} <= betas:
                out += [f"{cache_label(c.manifest)} · {n}" for n in saes["name"]]
        return out
    if stage == "concepts":
        from engine.concepts.cache import list_caches

        have = {(c["model"], c["class_name"]) for c in list_caches()}
        want = [("fmnist-cnn", "Sneaker"), ("fmnist-cnn", "Bag")]
        return [f"{m} · {c}" for m, c in want] if set(want) <= have else []
    if stage == "geodesics":
        from engine.geodesics import pipeline

        out, got = [], set()
        for ds in ("ucg", "urc"):
            for p in pipeline.list_runs(ds):
                try:
                    cfg = pipeline.run_config(p)
                except Exception:  # a broken or foreign file: not a finished default run
                    continue
                got.add((ds, cfg.solver_init))
                out.append(geodesic_run_label(p, cfg))
        return out if {("ucg", "line"), ("urc", "line"), ("urc", "graph")} <= got else []
    if stage == "dvr":
        from engine.dvr.results import list_refs

        return [p.stem for p in list_refs()]
    raise ValueError(f"unknown stage {stage!r}")


def geodesic_run_label(path: Path, cfg=None) -> str:
    """``URC · 200 pairs · graph start`` for a geodesics run cache."""
    if cfg is None:
        from engine.geodesics import pipeline

        cfg = pipeline.run_config(Path(path))
    return f"{cfg.dataset.upper()} · {cfg.n_pairs:,} pairs · {cfg.solver_init} start"
