"""The concept pipeline for one (model, class), written as one artifact (docs/METHODS.md §2).

One artifact ``concepts/<key>`` per model × class × settings (``engine.core.artifacts``; key = hash of
the config, the classifier's weights, the images and the MACO spectrum). Its manifest's ``meta`` holds
the classifier, stats, heat grid and timings; its ``concepts.duckdb`` the tables:
  concepts(concept, vector, pct_logit, sobol, size_gradient_input, size_sobol,
           map_x, map_y, top_classes)    one row per concept
  images(row, source_index, name, label, logit, prob, u, gradient_input, sobol, heat, thumb)
  layouts(importance, algo, row, x, y)   2-D embeddings of importance vectors
  crops(concept, rank, row, y, x, size, score, png)   top crops per concept
  fidelity(ordering, kind, step, value)  deletion / insertion curves
  maco(concept, image, alpha, objective) one MACO image per concept (PNG), its transparency (PNG),
                                         its objective at every step
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engine import ENGINE_VERSION, store
from engine.core import artifacts
from engine.config import Config, check_choice, check_positive, stable_hash
from engine.concepts import craft, fidelity, importance, layout, maco, render
from engine.concepts.classifiers import Classifier
from engine.concepts.images import ImageSet, load_images
from engine.concepts.sobol import SAMPLERS

VERSION = f"{ENGINE_VERSION}-concepts-2"
METHODS = ("gradient_input", "sobol")
Progress = Callable[[int, int, str], None]


@dataclasses.dataclass
class ConceptConfig(Config):
    """Settings of one concept cache (all part of its key)."""

    model: str = "fmnist-cnn"
    """Classifier registry name."""
    class_name: str = "Sneaker"
    """Class whose predicted images are explained."""
    images: str = ""
    """Image folder; '' = the classifier's built-in set (Fashion-MNIST test for fmnist-cnn)."""
    n_concepts: int = 10
    """k, the number of NMF concepts."""
    patch_size: int = 0
    """Crop side p in input pixels (stride 0.8 p); 0 = the classifier's default."""
    max_images: int = 1000
    """At most this many images predicted as the class are used."""
    sobol_n: int = 32
    """N, QMC design size per image (N(k+2) evaluations)."""
    sampler: str = "sobol"
    min_images: int = 10
    """A concept is 'important' if it is the top concept of at least this many images."""
    layouts: tuple = ("umap", "tsne")
    top_crops: int = 10
    nmf_max_iter: int = 500
    maco_steps: int = 256
    """MACO steps per concept image (docs/METHODS.md §2); 0 = no concept images."""
    maco_crops: int = 32
    """Random crops per MACO step."""
    maco_size: int = 0
    """Side of the MACO images in pixels; 0 = the model input × 512/224 (64 px for 28 px inputs)."""
    seed: int = 0

    def validate(self) -> None:
        for name in ("n_concepts", "max_images", "sobol_n", "top_crops", "nmf_max_iter"):
            check_positive(name, getattr(self, name))
        check_positive("patch_size", self.patch_size, allow_zero=True)
        check_positive("min_images", self.min_images, allow_zero=True)
        check_positive("maco_steps", self.maco_steps, allow_zero=True)
        self.maco_config()  # validates the MACO settings
        check_choice("sampler", self.sampler, SAMPLERS)
        self.layouts = tuple(self.layouts)
        for algo in self.layouts:
            check_choice("layout", algo, layout.LAYOUTS)
        if self.n_concepts < 2:
            raise ValueError("n_concepts must be ≥ 2")

    def maco_config(self) -> maco.MacoConfig:
        """The MACO settings of the concept images (steps, crops and size from this config)."""
        return maco.MacoConfig(steps=max(1, self.maco_steps), crops=self.maco_crops, image_size=self.maco_size,
                               seed=self.seed)


def _maco_identity(cfg: ConceptConfig, clf: Classifier) -> dict | None:
    """What the concept images depend on besides the concepts: MACO settings and the spectrum's key."""
    if not cfg.maco_steps:
        return None
    mc = cfg.maco_config()
    return {"config": mc.to_dict(), "spectrum": maco.spectrum_key(clf.spectrum, mc.size_for(clf.input_size))}


KIND = "concepts"
RUN_FILE = "concepts.duckdb"


def _key_parts(cfg: ConceptConfig, clf: Classifier, data: ImageSet) -> tuple[dict, list[str]]:
    """(config, input keys): the classifier's weights, the images and (with MACO) the spectrum, by content."""
    maco_id = _maco_identity(cfg, clf)
    inputs = [f"weights:{clf.weights_id}", f"images:{stable_hash(data.identity, 16)}"]
    if maco_id is not None:
        inputs.append(f"maco:{stable_hash(maco_id, 16)}")
    return cfg.to_dict(), inputs


def cache_key(cfg: ConceptConfig, clf: Classifier, data: ImageSet) -> str:
    config, inputs = _key_parts(cfg, clf, data)
    return artifacts.artifact_key(KIND, config, inputs, VERSION)


def cache_path(cfg: ConceptConfig, clf: Classifier, data: ImageSet) -> Path:
    """Where the finished run's tables are (whether or not it has been built)."""
    return artifacts.folder(KIND, cache_key(cfg, clf, data)) / RUN_FILE


@torch.no_grad()
def predict(clf: Classifier, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Logits (n, n_classes) of uint8 images."""
    out = [clf.model(clf.preprocess(images[i:i + batch])) for i in range(0, len(images), batch)]
    return torch.cat(out).numpy()


def _select(clf: Classifier, data: ImageSet, cls: int, max_images: int, pred: np.ndarray | None) -> np.ndarray:
    pred = predict(clf, data.images).argmax(1) if pred is None else pred
    rows = np.flatnonzero(pred == cls)[:max_images]
    if len(rows) < 2:
        raise ValueError(f"only {len(rows)} image(s) are predicted as {clf.class_names[cls]!r}; "
                         "pick another class or give a folder with more images of it")
    return rows


def _stage(progress: Progress | None, i: int, msg: str, total: int = 10) -> None:
    if progress:
        progress(i, total, msg)


def compute(cfg: ConceptConfig, clf: Classifier, data: ImageSet, progress: Progress | None = None,
            pred: np.ndarray | None = None) -> dict:
    """Run the pipeline in memory; returns every array the cache stores.

    ``pred`` (n_all,) are the classifier's predicted classes of ``data`` when already known.
    """
    t0 = time.perf_counter()
    cls = clf.class_index(cfg.class_name)
    patch = cfg.patch_size or clf.default_patch
    _stage(progress, 0, "classifying images")
    rows = _select(clf, data, cls, cfg.max_images, pred)
    x = clf.preprocess(data.images[rows])  # (n, c, S, S)
    _stage(progress, 1, f"crops + NMF on {len(rows)} images")
    bank = craft.extract(clf, x, cfg.n_concepts, patch, cfg.seed, cfg.nmf_max_iter)
    acts = craft.activations(clf, x)  # (n, C)
    u = craft.transform(acts, bank.W)  # (n, k)
    _stage(progress, 2, "gradient × input")
    head = clf.head
    dec = importance.logit_decomposition(u, bank.W, head, cls, acts)
    gx = importance.gradient_input(u, bank.W, head, cls, residual=acts - u @ bank.W)
    _stage(progress, 3, f"Sobol indices ({cfg.sobol_n * (cfg.n_concepts + 2)} masks per image)")
    sb = importance.sobol_importance(u, bank.W, head, cls, cfg.sobol_n, cfg.sampler, cfg.seed)
    _stage(progress, 4, "deletion / insertion")
    fid = fidelity.fidelity(u, bank.W, head, cls, {"gradient_input": gx, "sobol": sb}, cfg.seed)
    _stage(progress, 5, "2-D layouts")
    lay = {(m, a): layout.embed_2d(v, a, cfg.seed) for m, v in (("gradient_input", gx), ("sobol", sb))
           for a in cfg.layouts}
    _stage(progress, 6, "concept heatmaps")
    heat, grid = craft.heatmaps(clf, x, bank.W, patch)
    _stage(progress, 7, "concept map, top crops and classes")
    with torch.no_grad():
        probs = torch.softmax(head(torch.from_numpy(acts)), -1)[:, cls].numpy()
    images = None
    if cfg.maco_steps:
        _stage(progress, 8, f"MACO concept images ({cfg.maco_steps} steps)")
        on = (lambda p: _stage(progress, 8, f"MACO concept images · {p.text()}")) if progress else None
        images = maco.concept_images(clf, bank.W, cfg.maco_config(), on)
    return {
        "cls": cls, "rows": rows, "patch": patch, "bank": bank, "acts": acts, "u": u, "dec": dec,
        "gradient_input": gx, "sobol": sb, "fidelity": fid, "layouts": lay, "heat": heat, "grid": grid,
        "probs": probs, "map": layout.concept_map(bank.W, cfg.seed),
        "class_cos": importance.cosine(bank.W, head.weight.detach().numpy()),
        "recon_images": craft.relative_error(acts, u, bank.W), "maco": images, "seconds": time.perf_counter() - t0,
    }


def _concept_rows(cfg: ConceptConfig, clf: Classifier, r: dict) -> dict:
    k = cfg.n_concepts
    sizes = {m: importance.cluster_sizes(importance.top_concepts(r[m]), k, cfg.min_images)[0] for m in METHODS}
    top = [json.dumps([[clf.class_names[j], round(float(c[j]), 4)] for j in np.argsort(-c)[:5]]) for c in r["class_cos"]]
    return {
        "concept": np.arange(k, dtype=np.int32), "vector": r["bank"].W,
        "pct_logit": importance.percent_of_logit(r["gradient_input"], r["dec"]["logit"]),
        "sobol": r["sobol"].mean(axis=0), "size_gradient_input": sizes["gradient_input"].astype(np.int32),
        "size_sobol": sizes["sobol"].astype(np.int32), "map_x": r["map"][:, 0], "map_y": r["map"][:, 1],
        "top_classes": top,
    }


def _image_rows(data: ImageSet, r: dict) -> dict:
    rows = r["rows"]
    thumbs = [render.to_png(data.images[i], render.THUMB) for i in rows]
    labels = data.labels[rows] if data.labels is not None else np.full(len(rows), -1)
    return {
        "row": np.arange(len(rows), dtype=np.int32), "source_index": rows.astype(np.int64),
        "name": [data.names[i] for i in rows], "label": labels.astype(np.int64),
        "logit": r["dec"]["logit"], "prob": r["probs"].astype(np.float64), "u": r["u"],
        "gradient_input": r["gradient_input"].astype(np.float32), "sobol": r["sobol"].astype(np.float32),
        "heat": r["heat"].reshape(len(rows), -1), "thumb": thumbs,
    }


def _crop_rows(cfg: ConceptConfig, data: ImageSet, r: dict) -> dict:
    bank, rows, p = r["bank"], r["rows"], r["patch"]
    out: dict[str, list] = {c: [] for c in ("concept", "rank", "row", "y", "x", "size", "score", "png")}
    for c in range(cfg.n_concepts):
        for rank, j in enumerate(np.argsort(-bank.U[:, c])[: cfg.top_crops]):
            i, y, x0 = (int(v) for v in bank.crop_index[j])
            crop = data.images[rows[i]][y:y + p, x0:x0 + p]
            for name, v in zip(out, (c, rank, i, y, x0, p, float(bank.U[j, c]), render.to_png(crop, render.THUMB))):
                out[name].append(v)
    return out


def _fidelity_rows(r: dict) -> dict:
    out: dict[str, list] = {"ordering": [], "kind": [], "step": [], "value": []}
    for name, kinds in r["fidelity"].items():
        for kind, d in kinds.items():
            for s, v in enumerate(d["curve"]):
                for col, val in zip(out, (name, kind, s, float(v))):
                    out[col].append(val)
    return out


def _maco_rows(r: dict) -> dict:
    res, _ = r["maco"]
    return {"concept": np.arange(len(res.images), dtype=np.int32),
            "image": [render.to_png(maco.to_uint8(im)) for im in res.images],
            "alpha": [render.to_png(maco.alpha_map(t)) for t in res.transparency],
            "objective": [[float(v) for v in res.objective[:, c]] for c in range(len(res.images))]}


def _maco_meta(cfg: ConceptConfig, r: dict) -> dict | None:
    if r.get("maco") is None:
        return None
    res, spec = r["maco"]
    return {"config": cfg.maco_config().to_dict(), "size": spec.size, "spectrum": spec.name,
            "spectrum_key": spec.key, "spectrum_source": spec.source, "seconds": res.seconds,
            "seconds_per_concept": res.seconds / max(1, len(res.images))}


def write(w: artifacts.Writer, cfg: ConceptConfig, clf: Classifier, data: ImageSet, r: dict) -> None:
    """Write the pipeline's results into the artifact being written (tables; meta into its manifest)."""
    meta = {
        "config": cfg.to_dict(), "key": w.key, "version": VERSION,
        "classifier": {"name": clf.name, "weights_id": clf.weights_id, "input_size": clf.input_size,
                       "class_names": clf.class_names, "class_index": r["cls"]},
        "data": data.identity, "grid": r["grid"], "heat_shape": list(r["heat"].shape[1:]),
        "maco": _maco_meta(cfg, r),
        "stats": {"n_images": len(r["rows"]), "n_crops": len(r["bank"].U), "patch": r["patch"],
                  "stride": r["bank"].stride, "recon_error_crops": r["bank"].recon_error,
                  "recon_error_images": r["recon_images"], "seconds": r["seconds"]},
    }
    lay: dict[str, list] = {"importance": [], "algo": [], "row": [], "x": [], "y": []}
    for (m, a), xy in r["layouts"].items():
        lay["importance"] += [m] * len(xy)
        lay["algo"] += [a] * len(xy)
        lay["row"] += list(range(len(xy)))
        lay["x"] += xy[:, 0].tolist()
        lay["y"] += xy[:, 1].tolist()
    w.meta.update(json.loads(json.dumps(meta, default=float)))
    with store.writing(w.file(RUN_FILE)) as con:
        for t in ("concepts", "images", "layouts", "crops", "fidelity", "maco"):
            con.execute(f"DROP TABLE IF EXISTS {store.ident(t)}")
        store.insert_rows(con, "concepts", _concept_rows(cfg, clf, r))
        store.insert_rows(con, "images", _image_rows(data, r))
        store.insert_rows(con, "layouts", lay)
        store.insert_rows(con, "crops", _crop_rows(cfg, data, r))
        store.insert_rows(con, "fidelity", _fidelity_rows(r))
        if r.get("maco") is not None:
            store.insert_rows(con, "maco", _maco_rows(r))
    w.file(RUN_FILE + ".lock").unlink(missing_ok=True)


def run(cfg: ConceptConfig, clf: Classifier, data: ImageSet | None = None, progress: Progress | None = None,
        force: bool = False, pred: np.ndarray | None = None) -> Path:
    """The cache for ``cfg`` (computed and written unless it exists); returns its path."""
    data = data or load_images(cfg.images or clf.default_images, clf.input_size, clf.channels)
    path = cache_path(cfg, clf, data)
    if path.exists() and not force:
        return path
    r = compute(cfg, clf, data, progress, pred)
    _stage(progress, 9, "writing the cache")
    config, inputs = _key_parts(cfg, clf, data)
    with artifacts.writing(KIND, config, inputs, VERSION, name=f"{cfg.model} · {cfg.class_name}", resume=False) as w:
        write(w, cfg, clf, data, r)
    _stage(progress, 10, "done")
    return path
