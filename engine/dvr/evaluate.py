"""Score models and the human reference; write the DuckDB caches.

Two kinds of cache files under ``cache_root()``:

- ``dvr-ref-<ref key>.duckdb``: one per (data set, critics, episode settings). Holds ``meta``
  (data root, critics folder, σ for originality, training times), ``drawings`` (class, drawer,
  path; drawer 1 = exemplar) and the human reference scored from the real drawings only.
- ``dvr-run-<ref key>-<run key>.duckdb``: one per evaluated samples folder; run key =
  hash(folder contents, ref key, ENGINE_VERSION).

Both share the result tables ``models`` (one row per configuration), ``per_class``
(diversity, recognizability per class), ``sample_orig`` (originality per sample) and
``episodes`` (every fixed episode's query and outcome).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from engine import store
from engine.config import Config, check_positive, stable_hash
from engine.dvr import metrics
from engine.dvr.networks import Critics, embed
from engine.dvr.samples import ModelSamples, folder_signature, model_folders, read_model

ENGINE_VERSION = "dvr-eval-1"


@dataclasses.dataclass
class EvalConfig(Config):
    """Episode settings of the recognizability test."""

    way: int = metrics.WAY
    """Classes per test episode (20-way 1-shot)."""
    n_episodes: int = metrics.N_EPISODES
    """Fixed episodes per class."""
    episode_seed: int = metrics.EPISODE_SEED

    def validate(self) -> None:
        if self.way < 2:
            raise ValueError("way must be >= 2")
        check_positive("n_episodes", self.n_episodes)


@dataclasses.dataclass
class Scores:
    """A model's scores: diversity, recognizability (C,); originality (C, S); correct, query (C, E)."""

    diversity: np.ndarray
    recognizability: np.ndarray
    originality: np.ndarray
    correct: np.ndarray
    query: np.ndarray


def score(exemplars: np.ndarray, samples: np.ndarray, critics: Critics, scale: float, cfg: EvalConfig) -> Scores:
    """Score samples (C, S, 50, 50) against exemplars (C, 50, 50) with both critics."""
    f_s = embed(critics.simclr, samples)  # (C, S, 256)
    f_e = embed(critics.simclr, exemplars)  # (C, 256)
    p_s = embed(critics.protonet, samples)
    p_e = embed(critics.protonet, exemplars)
    eps = metrics.make_episodes(len(exemplars), cfg.way, cfg.n_episodes, cfg.episode_seed)
    correct, query = metrics.episode_correct(p_s, p_e, eps)
    return Scores(metrics.diversity_per_class(f_s), correct.mean(1), metrics.originality(f_s, f_e, scale), correct, query)


def _write_scores(con, model: dict, classes: list[str], sc: Scores) -> None:
    store.insert_rows(con, "models", {k: [v] for k, v in model.items()})
    name = model["model"]
    c_n, s_n = sc.originality.shape
    store.insert_rows(con, "per_class", {"model": [name] * c_n, "class": classes,
                                         "diversity": sc.diversity, "recognizability": sc.recognizability})
    store.insert_rows(con, "sample_orig", {"model": [name] * (c_n * s_n), "class": np.repeat(classes, s_n).tolist(),
                                           "sample": np.tile(np.arange(s_n), c_n), "originality": sc.originality.ravel()})
    e_n = sc.correct.shape[1]
    store.insert_rows(con, "episodes", {"model": [name] * (c_n * e_n), "class": np.repeat(classes, e_n).tolist(),
                                        "episode": np.tile(np.arange(e_n), c_n), "sample": sc.query.ravel(),
                                        "correct": sc.correct.ravel()})


def model_row(name: str, meta: dict, folder: str, n_samples: int, source: str) -> dict:
    params = meta.get("params", {}) or {}
    sweep = meta.get("sweep", "") or ""
    value = params.get(sweep) if sweep else None
    return {"model": name, "generator": meta.get("generator", name), "family": meta.get("family", "external"),
            "sweep": sweep, "sweep_value": float(value) if value is not None else float("nan"),
            "params": json.dumps(params, sort_keys=True), "folder": store.portable(folder), "n_samples": int(n_samples),
            "source": source}


def _kept_models(con, names: list[str]) -> list[str]:
    """Of ``names``, those whose scores a killed earlier run wrote completely (episodes are written
    last); every row of any other model is deleted so it is scored again."""
    tables = ("models", "per_class", "sample_orig", "episodes")
    present = {t for t in tables if store.has_table(con.cursor(), t)}
    kept: list[str] = []
    if present == set(tables):
        scored = {r[0] for r in con.execute("SELECT DISTINCT model FROM episodes").fetchall()}
        listed = {r[0] for r in con.execute("SELECT model FROM models").fetchall()}
        kept = [n for n in names if n in scored and n in listed]
    for t in present:
        if kept:
            con.execute(f"DELETE FROM {store.ident(t)} WHERE NOT list_contains(?::VARCHAR[], model)", [kept])
        else:
            con.execute(f"DELETE FROM {store.ident(t)}")
    return kept


def _write_meta(con, meta: dict) -> None:
    store.insert_rows(con, "meta", {"key": list(meta), "value": [json.dumps(v) for v in meta.values()]})


def ref_key(data_key: str, critics_key: str, cfg: EvalConfig) -> str:
    return stable_hash({"data": data_key, "critics": critics_key, "eval": cfg.to_dict(), "v": ENGINE_VERSION})


def ref_path(key: str) -> Path:
    return store.cache_root() / f"dvr-ref-{key}.duckdb"


def build_reference(data, critics: Critics, drawings: dict[str, list[str]], data_root: str, cfg: EvalConfig,
                    extra_meta: dict | None = None, force: bool = False) -> Path:
    """Score the human reference (real drawings only) and write ``dvr-ref-<key>.duckdb`` (``force``:
    again, though it exists).

    data: ``omniglot.OmniglotData``; drawings: class -> drawing paths (first = exemplar).
    σ for originality = global std of the SimCLR features of every real test drawing.
    """
    key = ref_key(data.key, critics.key, cfg)
    path = ref_path(key)
    if path.exists() and not force:
        return path
    scale = metrics.feature_scale(embed(critics.simclr, data.test_x).reshape(-1, critics.simclr.fc.out_features))
    sc = score(data.exemplars, data.humans, critics, scale, cfg)
    with store.writing(path) as con:
        for t in ("meta", "models", "per_class", "sample_orig", "episodes", "drawings"):
            con.execute(f"DROP TABLE IF EXISTS {store.ident(t)}")
        meta = {"ref_key": key, "data_key": data.key, "data_root": store.portable(data_root),
                "critics_key": critics.key, "critics_folder": store.portable(critics.folder), "scale": scale, "eval": cfg.to_dict(),
                "n_classes": len(data.test_names), "n_train_images": int(len(data.train_x)),
                "train_seconds": critics.seconds, **(extra_meta or {})}
        _write_meta(con, meta)
        human = model_row("human", {"generator": "human", "family": "human"}, data_root, data.humans.shape[1], "real drawings")
        _write_scores(con, human, data.test_names, sc)
        rows = [(c, d + 1, store.portable(p)) for c, ps in drawings.items() for d, p in enumerate(ps)]
        store.insert_rows(con, "drawings", {"class": [r[0] for r in rows], "drawer": [r[1] for r in rows],
                                            "path": [r[2] for r in rows]})
    return path


def read_meta(path: str | Path) -> dict:
    df = store.query_df(path, "SELECT key, value FROM meta")
    return {k: json.loads(v) for k, v in zip(df["key"], df["value"])}


def run_path(ref: Path, samples_root: str | Path, run_name: str) -> Path:
    """The cache of one samples folder: keyed by its contents, its run name and the reference."""
    meta = read_meta(ref)
    key = stable_hash({"folder": folder_signature(samples_root), "run": run_name, "ref": meta["ref_key"], "v": ENGINE_VERSION})
    return store.cache_root() / f"dvr-run-{meta['ref_key']}-{key}.duckdb"


def evaluate_folder(samples_root: str | Path, ref: Path, critics: Critics, run_name: str | None = None,
                    progress=None, force: bool = False) -> Path:
    """Evaluate every model folder under ``samples_root``; cached by the folder's contents (``force``:
    evaluate it again).

    ``progress(done_images, total_images)`` after each model.
    """
    samples_root = Path(samples_root).expanduser()
    meta = read_meta(ref)
    if critics.key != meta["critics_key"]:
        raise ValueError(f"critics {critics.key} do not match the reference's {meta['critics_key']}")
    run_name = run_name or samples_root.name
    out = run_path(ref, samples_root, run_name)
    if out.exists() and not force:
        return out
    folders = model_folders(samples_root)
    models: list[ModelSamples] = [read_model(f) for f in folders]
    total = sum(m.samples.shape[0] * (m.samples.shape[1] + 1) for m in models)
    cfg = EvalConfig.from_dict(meta["eval"])
    done = 0
    with store.writing(out) as con:
        kept = _kept_models(con, [m.name for m in models])  # models a killed run finished scoring
        if kept:
            import sys

            print(f"dvr: resuming the evaluation of {run_name} at model {len(kept) + 1} of {len(models)} "
                  f"({', '.join(kept)} already scored)", file=sys.stderr, flush=True)
        con.execute("DROP TABLE IF EXISTS meta")
        _write_meta(con, {"ref_key": meta["ref_key"], "samples_root": store.portable(samples_root),
                          "run": run_name, "models": [m.name for m in models]})
        for m in models:
            if m.samples.shape[0] < 2:
                raise ValueError(f"model {m.name}: recognizability needs >= 2 classes")
            if m.name not in kept:
                sc = score(m.exemplars, m.samples, critics, float(meta["scale"]), cfg)
                con.begin()  # one model's rows land together or not at all
                _write_scores(con, model_row(m.name, m.meta, m.folder, m.samples.shape[1], "samples folder"), m.classes, sc)
                con.commit()
            done += m.samples.shape[0] * (m.samples.shape[1] + 1)
            if progress:
                progress(done, total)
    return out
