"""Shipped assets: the manifest's hashes and size budget, the install/retrain hooks, and (heavy)
a retrain of every asset reproducing the manifest's metrics."""
import json
import os
from pathlib import Path

import pytest

from engine.core import assets

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "assets"


def test_every_shipped_asset_matches_its_manifest_and_fits_the_budget(monkeypatch):
    monkeypatch.setenv(assets.ENV_ASSETS, str(SHIPPED))
    from engine.assets_cli import ASSETS, verify

    man = assets.manifest()["assets"]
    for name, entry in man.items():
        assert name in ASSETS, f"{name} has no recipe in engine.assets_cli.ASSETS"
        assert entry["files"], name
        for fname, digest in entry["files"].items():
            assert assets.sha256(SHIPPED / fname) == digest, f"assets/{fname} does not match the manifest"
        assert entry["command"].startswith("geolens "), entry["command"]
        assert set(ASSETS.get(name).tolerance) <= set(entry["metrics"]), name
        assert {"host", "platform", "torch"} <= set(entry["machine"]) and entry["train_seconds"] > 0
    on_disk = {p.name for p in SHIPPED.glob("*") if p.is_file()} - {"manifest.json"} if SHIPPED.exists() else set()
    listed = {f for e in man.values() for f in e["files"]}
    assert on_disk == listed, f"files in assets/ not in the manifest: {on_disk - listed}; missing: {listed - on_disk}"
    assert assets.total_bytes() <= 40 * 2**20
    assert verify() == []


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(assets.ENV_ASSETS, str(tmp_path / "assets"))
    monkeypatch.delenv("GEOLENS_RETRAIN", raising=False)
    return tmp_path


def _fake_default_model(tmp_path, cfg, text="weights") -> dict:
    """Files standing in for a trained default model (the hooks copy bytes; they never parse them)."""
    src = tmp_path / "built"
    src.mkdir(exist_ok=True)
    (src / "w.safetensors").write_text(text)
    (src / "w.json").write_text(json.dumps({"geometry": {}}))
    from engine.default_model import asset_name

    name = asset_name(cfg)
    return {f"{name}.safetensors": src / "w.safetensors", f"{name}.json": src / "w.json"}


def test_default_spec_installs_the_matching_asset_and_retrain_ignores_it(sandbox, monkeypatch):
    from engine import default_model as dm
    from engine.shipped import is_shipped_copy

    cfg = dm.RECIPES.get("gap")
    assets.publish("geolens-tiny", _fake_default_model(sandbox, cfg), config=cfg.to_dict(), config_key=cfg.key(),
                   command="geolens train-default --recipe gap --publish", seed=0, train_seconds=1.0, metrics={})
    trained = []
    monkeypatch.setattr(dm, "train", lambda c, **kw: trained.append(c))
    spec = dm.default_spec(cfg)
    assert trained == [] and Path(spec.pretrained) == dm.weights_path(cfg)
    assert Path(spec.pretrained).read_text() == "weights" and is_shipped_copy("geolens-tiny", Path(spec.pretrained))
    # another recipe has another key: the asset does not fit it, so it trains
    other = dm.recipe("gap", steps=7)
    dm.default_spec(other)
    assert trained == [other]
    # --retrain: the installed copy of the shipped weights counts as absent
    monkeypatch.setenv("GEOLENS_RETRAIN", "1")
    dm.default_spec(cfg)
    assert trained == [other, cfg]


def test_altered_asset_is_refused_with_a_message(sandbox, monkeypatch):
    from engine import default_model as dm
    from engine.assets_cli import verify

    cfg = dm.RECIPES.get("gap")
    files = _fake_default_model(sandbox, cfg)
    assets.publish("geolens-tiny", files, config=cfg.to_dict(), config_key=cfg.key(), command="geolens x",
                   seed=0, train_seconds=1.0, metrics={})
    (sandbox / "assets" / "geolens-tiny.safetensors").write_text("tampered")
    assert assets.lookup("geolens-tiny", cfg.key()) is None
    (problem,) = verify()
    assert "geolens-tiny.safetensors has sha256" in problem and "the manifest says" in problem
    trained = []
    monkeypatch.setattr(dm, "train", lambda c, **kw: trained.append(c))
    dm.default_spec(cfg)
    assert trained == [cfg] and not dm.weights_path(cfg).exists()


def test_publish_refuses_to_pass_the_budget(sandbox, monkeypatch):
    monkeypatch.setattr(assets, "BUDGET_BYTES", 10)
    big = sandbox / "big.bin"
    big.write_bytes(b"x" * 11)
    with pytest.raises(ValueError, match="past"):
        assets.publish("big", {"big.bin": big}, config={}, config_key="k", command="geolens x", seed=0,
                       train_seconds=1, metrics={})


def test_metric_differences_use_the_tolerance(sandbox):
    from engine import default_model as dm
    from engine.assets_cli import DEFAULT_MODEL_TOLERANCE, metric_differences

    cfg = dm.RECIPES.get("gap")
    shipped = {k: 0.5 for k in DEFAULT_MODEL_TOLERANCE}
    assets.publish("geolens-tiny", _fake_default_model(sandbox, cfg), config=cfg.to_dict(), config_key=cfg.key(),
                   command="geolens x", seed=0, train_seconds=1.0, metrics=shipped)
    assert metric_differences("geolens-tiny", {**shipped, "dim": 0.54}) == {}
    assert metric_differences("geolens-tiny", {**shipped, "dim": 0.56}) == {"dim": (0.5, 0.56)}
    assert "cone_text" in metric_differences("geolens-tiny", {k: v for k, v in shipped.items() if k != "cone_text"})


def test_assets_cli_lists_and_verifies(sandbox, capsys):
    from engine import default_model as dm
    from engine.cli import main

    assert main(["assets", "verify"]) == 0
    cfg = dm.RECIPES.get("gap")
    assets.publish("geolens-tiny", _fake_default_model(sandbox, cfg), config=cfg.to_dict(), config_key=cfg.key(),
                   command="geolens x", seed=0, train_seconds=1.0, metrics={"dim": 0.6})
    capsys.readouterr()
    assert main(["assets", "list", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["name"] == "geolens-tiny" and row["ok"] and row["metrics"] == {"dim": 0.6}
    (sandbox / "assets" / "geolens-tiny.json").unlink()
    assert main(["assets", "verify"]) == 1
    assert "geolens-tiny.json is missing" in capsys.readouterr().out


@pytest.mark.heavy
@pytest.mark.parametrize("name", sorted(json.loads((SHIPPED / "manifest.json").read_text())["assets"])
                         if (SHIPPED / "manifest.json").exists() else [])
def test_retraining_an_asset_reproduces_its_manifest_metrics(name, tmp_path, monkeypatch):
    """Full-size retrain (minutes to an hour on CPU) in an empty cache, same command code path."""
    monkeypatch.setenv("GEOLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(assets.ENV_ASSETS, str(SHIPPED))
    monkeypatch.setenv("GEOLENS_RETRAIN", "1")
    from engine.assets_cli import ASSETS, metric_differences

    built = ASSETS.get(name).build(True)
    assert built.config_key == assets.entry(name)["config_key"]
    assert metric_differences(name, built.metrics) == {}, os.environ.get("GEOLENS_CACHE")


def test_model_artifacts_install_a_shipped_asset_by_key_and_retrain_ignores_it(sandbox, monkeypatch):
    """The store path every trained model takes (artifacts.model_artifact), on a tiny geodesics EBM."""
    import torch

    from engine.core import artifacts
    from engine.geodesics import ebm

    cfg = ebm.EBMConfig(objective="dsm", width=8, depth=1, iters=3, batch_size=16)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    trained = ebm.get_ebm("tiny-data", x, cfg)
    key = ebm.ebm_key("tiny-data", cfg)
    art = artifacts.find("ebm", key)
    assert art.meta["dim"] == 2 and art.meta["train_seconds"] > 0
    assets.publish("geodesics-ebm-tiny", {"e.safetensors": art.file(artifacts.WEIGHTS)}, config=art.config,
                   config_key=key, command="geolens x", seed=0, train_seconds=1.0, metrics={}, meta=art.meta)
    assert assets.name_for_key(key) == "geodesics-ebm-tiny" and assets.name_for_key("other") is None

    import shutil

    shutil.rmtree(art.path)  # a fresh machine: only the shipped asset
    shipped = ebm.get_ebm("tiny-data", x, cfg, train=False)
    for a, b in zip(trained.state_dict().values(), shipped.state_dict().values()):
        torch.testing.assert_close(a, b)
    again = artifacts.find("ebm", key)
    assert again.meta["from_asset"] == "e.safetensors" and again.meta["dim"] == 2
    assert ebm.get_ebm("other-data", x, cfg, train=False) is None  # another key: no asset applies

    monkeypatch.setenv("GEOLENS_RETRAIN", "1")  # the installed copy no longer counts, and the asset is skipped
    assert ebm.get_ebm("tiny-data", x, cfg, train=False) is None
    ebm.get_ebm("tiny-data", x, cfg)
    assert "from_asset" not in artifacts.find("ebm", key).meta


def test_republishing_under_a_new_file_name_drops_the_old_file(sandbox):
    src = sandbox / "built"
    src.mkdir()
    for name in ("a.safetensors", "b.safetensors"):
        (src / name).write_text(name)
    kw = dict(config={}, config_key="k", command="geolens x", seed=0, train_seconds=1.0, metrics={})
    assets.publish("sae-x", {"sae-x-aaaa.safetensors": src / "a.safetensors"}, **kw)
    assets.publish("sae-x", {"sae-x-bbbb.safetensors": src / "b.safetensors"}, **kw)
    folder = sandbox / "assets"
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "sae-x-bbbb.safetensors"]
    assert list(assets.manifest()["assets"]["sae-x"]["files"]) == ["sae-x-bbbb.safetensors"]
