"""Every long build resumes after `kill -9`: the command runs as a subprocess on tiny settings, is
SIGKILLed once a checkpoint exists, and is run again; the rerun says where it resumed from, and its
result equals an uninterrupted run's (or, where the output is not a single array, is complete and
keeps what the killed run had finished)."""
from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from tests.conftest import ROOT


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def kill_when(argv: list[str], ready: Callable[[Path], bool], log: Path, timeout: float = 240) -> None:
    """Start ``geolens argv``; SIGKILL it as soon as ``ready(log)`` holds (stderr goes to ``log``)."""
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "engine", *argv], cwd=ROOT, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ready(log):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return
            if proc.poll() is not None:
                pytest.fail(f"geolens {' '.join(argv)} ended (rc {proc.returncode}) before a checkpoint existed; "
                            f"make the run longer\n{log.read_text()[-2000:]}")
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        pytest.fail(f"no checkpoint within {timeout} s\n{log.read_text()[-2000:]}")


def rerun(argv: list[str]) -> str:
    """Run ``geolens argv`` to the end; returns its stderr (fails on a non-zero exit)."""
    out = subprocess.run([sys.executable, "-m", "engine", *argv], cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stderr


# ---- train-sae -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_cache(cache_root, tiny_weights):
    from engine.datasets.sources import resolve
    from engine.encoders import Encoder, ModelSpec
    from engine.precompute import precompute

    return precompute(resolve("shapes", n=64, seed=4), Encoder(ModelSpec("geolens-tiny", str(tiny_weights[0]))),
                      batch_size=64).cache


SAE_ARGS = ["--atoms", "64", "--k", "4", "--batch-pairs", "16", "--epochs", "1", "--min-steps", "1200", "--beta", "4e-4"]


def test_train_sae_resumes_after_kill(tiny_cache, tmp_path):
    from safetensors.torch import load_file

    from engine.core import artifacts
    from engine.sae.pipeline import CHECKPOINT, KIND, WEIGHTS, default_config, sae_dir, sae_key, train_on_cache

    cfg = default_config(tiny_cache, atoms=64, k=4, batch_pairs=16, epochs=1, min_steps=1200, beta=4e-4)
    argv = ["train-sae", "--cache", tiny_cache.name, "--name", "killed", *SAE_ARGS]
    key = sae_key(tiny_cache, cfg, "killed")
    partial = artifacts.folder(KIND, key).with_name(key + artifacts.PARTIAL)  # where a run in progress lives
    kill_when(argv, lambda log: (partial / CHECKPOINT).exists(), tmp_path / "kill.log")
    assert artifacts.find(KIND, key) is None  # nothing half-trained is visible
    err = rerun(argv)
    m = re.search(r"train-sae: resuming at step (\d+) of 1200", err)
    assert m and int(m.group(1)) > 0 and int(m.group(1)) % 200 == 0, err[-2000:]
    folder = sae_dir(tiny_cache, "killed")
    assert not (folder / CHECKPOINT).exists() and not partial.exists()
    train_on_cache(tiny_cache, cfg, name="uninterrupted", show_bar=False)
    a, b = load_file(str(folder / WEIGHTS)), load_file(str(sae_dir(tiny_cache, "uninterrupted") / WEIGHTS))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=1e-5, err_msg=k)


# ---- precompute-concepts -------------------------------------------------------------------
@pytest.fixture(scope="module")
def fmnist_folder(tmp_path_factory) -> Path:
    """90 Fashion-MNIST test images (30 trousers, sneakers, bags): a few classes, so a few caches."""
    from PIL import Image

    from engine.concepts.fmnist import load_split

    d = tmp_path_factory.mktemp("fmnist-imgs")
    x, y = load_split("test")
    for c in (1, 7, 8):
        for i in np.flatnonzero(y == c)[:30]:
            Image.fromarray(x[i]).save(d / f"{c}_{i}.png")
    return d


CONCEPT_ARGS = ["--min-class-images", "20", "--max-images", "30", "--sobol-n", "8", "--concepts", "3",
                "--layouts", "tsne", "--maco-steps", "0", "--epochs", "1", "--n-train", "3000"]


def test_precompute_concepts_resumes_after_kill(cache_root, fmnist_folder, tmp_path):
    from engine import store
    from engine.concepts import cache

    argv = ["precompute-concepts", "--images", str(fmnist_folder), *CONCEPT_ARGS]
    done_line = re.compile(r"^(.+): (artifacts/concepts/\S+/concepts\.duckdb) \(", re.M)
    kill_when(argv, lambda log: bool(done_line.search(log.read_text())), tmp_path / "kill.log")
    first_class, first_file = done_line.search((tmp_path / "kill.log").read_text()).groups()
    first = store.cache_root() / first_file
    stamp = (first.stat().st_mtime_ns, hashlib.sha256(first.read_bytes()).hexdigest())
    err = rerun(argv)
    m = re.search(r"precompute-concepts: resuming: (\d+) of (\d+) classes already cached \((.+?)\); computing the other (\d+)", err)
    assert m, err[-2000:]
    n_cached, n_classes = int(m.group(1)), int(m.group(2))
    assert n_cached >= 1 and n_classes > n_cached and first_class in m.group(3).split(", ")
    files = dict(done_line.findall(err))
    assert len(files) == n_classes and files[first_class] == first_file
    assert (first.stat().st_mtime_ns, hashlib.sha256(first.read_bytes()).hexdigest()) == stamp  # not recomputed
    for f in files.values():  # every class's cache is complete and readable
        rep = cache.report(store.cache_root() / f)
        assert rep


# ---- geodesics precompute ------------------------------------------------------------------
def test_geodesics_precompute_resumes_after_kill(cache_root, tmp_path):
    from engine import store
    from engine.geodesics import pipeline
    from engine.geodesics.runconfig import RunConfig

    cfg = RunConfig.preset("ucg", small=True, seed=3)
    order = pipeline.solve_order(cfg)
    argv = ["geodesics", "precompute", "--dataset", "ucg", "--small", "--seed", "3"]
    # the fourth metric's bar appears once the first three are solved and written (linear shows no bar)
    kill_when(argv, lambda log: f"geodesics {order[3]}:" in log.read_text(), tmp_path / "kill.log")
    err = rerun(argv)
    m = re.search(rf"geodesics: resuming at metric (\d+) of {len(order)} \((.+?) already solved\)", err)
    assert m and int(m.group(1)) >= 4, err[-2000:]
    kept = m.group(2).split(", ")
    assert kept == order[: len(kept)]
    assert f"geodesics {order[0]}" not in err  # finished metrics are not solved again
    path = pipeline.precompute(cfg)
    with store.connect_ro(path) as con:
        resumed = {m: store.fetch_array(con, "SELECT path FROM paths WHERE metric = ? ORDER BY pair_id", [m]) for m in order}
    assert len(pipeline.summary(path)) > 0
    path = pipeline.precompute(cfg, force=True)  # an uninterrupted run (its models come from the same cache)
    with store.connect_ro(path) as con:
        for m in order:
            ref = store.fetch_array(con, "SELECT path FROM paths WHERE metric = ? ORDER BY pair_id", [m])
            np.testing.assert_allclose(resumed[m], ref, atol=1e-5, err_msg=m)


# ---- dvr-build -------------------------------------------------------------------------------
DVR_ARGS = ["--chars-per-alphabet", "4", "--simclr-epochs", "1", "--proto-episodes", "15", "--episodes", "30",
            "--way", "5", "--only", "copy,other_class,affine", "--strengths", "0.5,1,2"]


def test_dvr_build_resumes_after_kill(cache_root, tmp_path):
    import json

    from engine.dvr import results, samples

    argv = ["dvr-build", *DVR_ARGS]
    # the 'generators' bar appears once the first generator's samples folder is written
    kill_when(argv, lambda log: "generators:" in log.read_text(), tmp_path / "kill.log")
    t_rerun = time.time_ns()
    out = subprocess.run([sys.executable, "-m", "engine", *argv], cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    m = re.search(r"dvr-build: resuming (?:at generator \d+ of 5|after all 5 generators) \((.+?) already sampled\)", out.stderr)
    assert m, out.stderr[-2000:]
    assert "train simclr" not in out.stderr and "train protonet" not in out.stderr  # critics come from the cache
    res = json.loads(out.stdout[out.stdout.index("{"):])
    root = Path(res["samples"])
    for label in m.group(1).split(", "):  # what the killed run finished is kept, not redone
        spec = next(p for p in root.iterdir() if (p / samples.MODEL_JSON).exists()
                    and json.loads((p / samples.MODEL_JSON).read_text())["label"] == label)
        assert (spec / samples.MODEL_JSON).stat().st_mtime_ns < t_rerun
    rep = results.report(Path(res["ref"]))
    ids = {r["id"] for r in rep["models"]}
    assert len([i for i in ids if i.startswith("built-in/")]) == 5, ids
    _evaluation_resumes_per_model(Path(res["ref"]), root, tmp_path)


def _evaluation_resumes_per_model(ref: Path, built: Path, tmp_path: Path) -> None:
    """An evaluation interrupted after its first model keeps that model's scores and scores the rest;
    the result equals an uninterrupted evaluation."""
    import contextlib
    import io
    import shutil

    from engine import store
    from engine.dvr import evaluate
    from engine.dvr.networks import load_critics

    folder = tmp_path / "mine"
    for name in sorted(p.name for p in built.iterdir() if p.is_dir())[:3]:
        shutil.copytree(built / name, folder / name)
    critics = load_critics(evaluate.read_meta(ref)["critics_folder"])
    calls: list[int] = []

    def stop_after_first(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 1:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        evaluate.evaluate_folder(folder, ref, critics, run_name="interrupted", progress=stop_after_first)
    err, scored, real_score = io.StringIO(), [], evaluate.score
    evaluate.score = lambda *a, **k: scored.append(1) or real_score(*a, **k)
    try:
        with contextlib.redirect_stderr(err):
            resumed = evaluate.evaluate_folder(folder, ref, critics, run_name="interrupted")
    finally:
        evaluate.score = real_score
    assert re.search(r"dvr: resuming the evaluation of interrupted at model 2 of 3 \(\S+ already scored\)", err.getvalue())
    assert len(scored) == 2  # the kept model is not scored again
    full = evaluate.evaluate_folder(folder, ref, critics, run_name="uninterrupted")
    for table, order in (("per_class", "model, class"), ("episodes", "model, class, episode"), ("models", "model")):
        a = store.query_df(resumed, f"SELECT * FROM {table} ORDER BY {order}")
        b = store.query_df(full, f"SELECT * FROM {table} ORDER BY {order}")
        assert a.drop(columns=[c for c in a if c == "folder"]).equals(b.drop(columns=[c for c in b if c == "folder"])), table
