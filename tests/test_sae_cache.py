"""SAE on a real (small) Shapes cache: training artifacts, stats DuckDB, read API, CLI, checks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.sae import store as sae_store
from engine.sae.metrics import encode_all, explained_variance
from engine.sae.pipeline import STATS, default_config, sae_dir, train_on_cache
from engine.sae.sanity import SanityPlan, sanity_check
from engine.sae.synthetic import SyntheticConfig

SMALL = {"atoms": 96, "k": 8, "min_steps": 150, "batch_pairs": 128, "checkpoint_every": 50}


@pytest.fixture(scope="module")
def shapes_cache(cache_root, tiny_weights):
    """A 300-pair Shapes cache encoded by a randomly initialised geolens-tiny: real factors and
    embeddings without waiting for the default model's training (the SAE only needs pairs)."""
    from engine.datasets.sources import resolve
    from engine.encoders import Encoder, ModelSpec
    from engine.precompute import precompute

    return precompute(resolve("shapes", n=300, seed=11), Encoder(ModelSpec("geolens-tiny", str(tiny_weights[0]))),
                      batch_size=150).cache


@pytest.fixture(scope="module")
def trained(shapes_cache):
    """A plain and an aligned MP-SAE and an archetypal SAE on the small Shapes cache."""
    names = {}
    for key, kw in {"plain": {"beta": 0.0}, "aligned": {"beta": 4e-3},
                    "archetypal": {"arch": "archetypal", "beta": 4e-3}}.items():
        names[key], _ = train_on_cache(shapes_cache, default_config(shapes_cache, **SMALL, **kw), show_bar=False)
    return names


def test_artifacts_and_manifest_link(shapes_cache, trained):
    listed = sae_store.list_saes(shapes_cache)
    assert set(trained.values()) <= set(listed["name"])
    folder = sae_dir(shapes_cache, trained["aligned"])
    for f in ("weights.safetensors", "config.json", "meta.json", STATS):
        assert (folder / f).exists(), f
    assert not (folder / "checkpoint.pt").exists()
    meta = sae_store.sae_meta(shapes_cache, trained["aligned"])
    assert meta["config"]["beta"] == 4e-3 and meta["d"] == shapes_cache.manifest["dim"]
    assert 0.3 < meta["metrics"]["ev"] <= 1 and meta["metrics"]["l0"] <= 8
    assert sum(meta["class_counts"].values()) == 96
    # a second call with the same config reuses the artifact (no retraining)
    name, again = train_on_cache(shapes_cache, default_config(shapes_cache, **SMALL, beta=4e-3), show_bar=False)
    assert name == trained["aligned"] and again["seconds_total"] == meta["seconds_total"]


def test_loaded_model_reproduces_stored_metrics(shapes_cache, trained):
    model = sae_store.load_sae(shapes_cache, trained["aligned"])
    img, txt, _ = shapes_cache.pairs()
    x = np.concatenate([img, txt])
    _, x_hat = encode_all(model, x)
    ev = explained_variance(x, x_hat)
    assert ev == pytest.approx(sae_store.sae_meta(shapes_cache, trained["aligned"])["metrics"]["ev"], abs=1e-5)
    D = sae_store.dictionary(shapes_cache, trained["aligned"])
    assert np.allclose(D, model.dictionary().detach().numpy(), atol=1e-6)
    assert np.allclose(np.linalg.norm(D, axis=1), 1, atol=1e-5)  # MP atoms are unit norm


def test_stats_tables_agree_with_codes(shapes_cache, trained):
    name = trained["aligned"]
    model = sae_store.load_sae(shapes_cache, name)
    ids, x = shapes_cache.embeddings()
    with torch.no_grad():
        z = model.encode(torch.tensor(x)).numpy()
    items = shapes_cache.items().set_index("id")["modality"].reindex(ids).to_numpy()
    table = sae_store.atom_table(shapes_cache, name)
    e_img = (z[items == "image"] ** 2).mean(0)
    e_txt = (z[items == "text"] ** 2).mean(0)
    assert np.allclose(table["energy_image"], e_img, rtol=1e-4, atol=1e-7)
    assert np.allclose(table["energy_text"], e_txt, rtol=1e-4, atol=1e-7)
    alive = (e_img + e_txt) > 0
    assert np.allclose(table["mu"][alive], e_img[alive] / (e_img + e_txt)[alive], atol=1e-5)
    # top items: descending, ≥ 50 per modality for a frequently used atom, values equal to the codes
    atom = int(table["freq_image"].idxmax())
    top = sae_store.top_items(shapes_cache, name, atom, "image", k=50)
    assert len(top) == 50 and (np.diff(top["value"]) <= 0).all()
    col = dict(zip(ids, z[:, atom]))
    assert np.allclose(top["value"], [col[i] for i in top["id"]], atol=1e-5)
    # item codes: the sparse code of one item
    codes = sae_store.item_codes(shapes_cache, name, int(ids[0]))
    nz = np.flatnonzero(z[0])
    assert sorted(codes["atom"]) == sorted(nz) and set(codes["class"]) <= {"bimodal", "image", "text"}
    hist = sae_store.histogram(shapes_cache, name, atom)
    n_img = int((z[items == "image"][:, atom] != 0).sum())
    assert int(hist[hist.modality == "image"]["count"].sum()) == n_img
    # ε re-classification is live: a larger ε can only move atoms out of bimodal
    assert sae_store.class_counts(shapes_cache, name, 0.3)["bimodal"] <= sae_store.class_counts(shapes_cache, name, 0.01)["bimodal"]


def test_archetypal_anchors_are_items(shapes_cache, trained):
    name = trained["archetypal"]
    anchors = sae_store.anchors(shapes_cache, name, 0)
    assert len(anchors) == 5 and anchors["weight"].iloc[0] > 0
    assert set(anchors["id"]) <= set(shapes_cache.items()["id"])
    assert sae_store.anchors(shapes_cache, trained["plain"], 0).empty


def test_cli_train_list_and_shapes_check(shapes_cache, trained, capsys):
    assert main(["saes", "--cache", shapes_cache.name, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in listed} >= set(trained.values())
    assert main(["shapes-check", "--cache", shapes_cache.name, "--sae", trained["aligned"], "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["class_counts"] == sae_store.class_counts(shapes_cache, trained["aligned"])
    assert set(res["per_factor"]) == set(shapes_cache.factor_kinds())
    assert 0 <= res["agreement"] <= 1
    for f, r in res["per_factor"].items():
        assert -1 <= r["corr"] <= 1
    assert main(["train-sae", "--cache", shapes_cache.name, "--atoms", "96", "--k", "8", "--beta", "0.004",
                 "--min-steps", "150", "--batch-pairs", "128", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # same settings except checkpoint_every (part of the key): a new name, same kind of result
    assert out["class_counts"] and 0.3 < out["metrics"]["ev"] <= 1
    assert main(["shapes-check", "--cache", shapes_cache.name, "--sae", "nope"]) == 2


def test_sanity_check_reduced():
    plan = SanityPlan(seeds=(0, 1), data=SyntheticConfig(d=16, n_shared=6, n_bias=2, n_pairs=1500, t=0.9),
                      sae=default_sanity_sae())
    res = sanity_check(plan)
    for setting in ("iso_energy_holds", "iso_energy_broken"):
        for kind in ("plain", "aligned"):
            r = res[setting][kind]
            assert 0 < r["match_cosine"]["mean"] <= 1 and 0 <= r["label_accuracy"]["mean"] <= 1
            assert r["ev"]["mean"] > 0.5
    # recovered atoms are close to the truth on this easy problem
    assert res["iso_energy_holds"]["aligned"]["match_cosine"]["mean"] > 0.7
    assert set(res["verdict"]) >= {"holds_aligned_better_match_cosine", "broken_aligned_no_worse_label_accuracy"}


def default_sanity_sae():
    from engine.sae.config import SAEConfig

    return SAEConfig(atoms=40, k=4, beta=4e-3, min_steps=150, batch_pairs=256)


@pytest.mark.heavy
def test_full_sanity_check_aligned_helps_where_iso_energy_holds():
    """The full-size check (`geolens sanity-check`, ~5–15 min on 2 cores)."""
    res = sanity_check(SanityPlan())
    assert res["verdict"]["holds_aligned_better_label_accuracy"]
    assert res["verdict"]["broken_aligned_no_worse_match_cosine"]


def test_shipped_sae_installs_by_key_and_rebuilds_the_same_statistics(shapes_cache, trained, tmp_path, monkeypatch):
    """Only the weights ship: installing one on a fresh store re-encodes the cache to the same stats."""
    import shutil

    import duckdb

    from engine.core import artifacts, assets
    from engine.sae.pipeline import META, find_sae

    monkeypatch.setenv(assets.ENV_ASSETS, str(tmp_path / "assets"))
    art = find_sae(shapes_cache, trained["plain"])
    meta = json.loads(art.file(META).read_text())
    assets.publish("sae-plain", {"sae.safetensors": art.file("weights.safetensors")}, config=art.config,
                   config_key=art.key, command="geolens assets publish sae-plain", seed=0, train_seconds=1.0,
                   metrics={}, meta={k: meta[k] for k in ("train", "history")})
    kept = tmp_path / "kept"
    shutil.copytree(art.path, kept)
    shutil.rmtree(art.path)
    try:
        name, again = train_on_cache(shapes_cache, default_config(shapes_cache, **SMALL, beta=0.0), show_bar=False)
        new = artifacts.find("sae", art.key)
        assert name == trained["plain"] and again["from_asset"] == "sae.safetensors"
        assert not (new.path / "checkpoint.pt").exists() and again["train"] == meta["train"]
        assert again["metrics"] == pytest.approx(meta["metrics"], abs=1e-5)
        assert again["class_counts"] == meta["class_counts"]
        with duckdb.connect(str(kept / STATS), read_only=True) as a, duckdb.connect(str(new.file(STATS)), read_only=True) as b:
            q = "SELECT * FROM atoms ORDER BY 1"
            assert a.sql(q).fetchall() == b.sql(q).fetchall()
        monkeypatch.setenv("GEOLENS_RETRAIN", "1")  # a retrain of the same key trains, not installs
        _, retrained = train_on_cache(shapes_cache, default_config(shapes_cache, **SMALL, beta=0.0), force=True,
                                      show_bar=False)
        assert "from_asset" not in retrained
    finally:
        shutil.rmtree(art.path, ignore_errors=True)
        shutil.copytree(kept, art.path)
