"""The method contract: every registered method is reachable as `geolens <method> build|report|list`,
its page is routed, and its CLI report is exactly ``Method.report`` of the built artifact."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from engine.config import Config
from engine.methods import methods
from tests.test_zz_pages_readonly import app_pages


@pytest.mark.parametrize("name", methods().names())
def test_method_contract(name, cache_root):
    m = methods().get(name)
    assert m.name == name and m.page in app_pages()
    p = argparse.ArgumentParser()
    m.add_arguments(p)
    try:
        args = p.parse_args([])
    except SystemExit:  # the method needs an input (e.g. --cache): no default settings to look up
        args = None
    if args is not None:
        cfg = m.config_from_args(args)
        assert isinstance(cfg, Config) and isinstance(cfg, m.config)
        before = sorted(cache_root.rglob("*"))
        found = m.find(cfg)                      # finding never builds or writes
        assert found is None or found.kind == m.kind
        assert sorted(cache_root.rglob("*")) == before
    assert all(isinstance(c, m.config) for c in m.defaults())
    assert all(a.kind == m.kind for a in m.list())


def test_geodesics_build_report_list_through_the_cli(cache_root, capsys):
    from engine.cli import main

    m = methods().get("geodesics")
    args = ["--dataset", "ucg", "--small"]
    assert main(["geodesics", "build", *args]) == 0
    capsys.readouterr()
    assert main(["geodesics", "report", *args, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    p = argparse.ArgumentParser()
    m.add_arguments(p)
    art = m.find(m.config_from_args(p.parse_args(args)))
    assert printed == json.loads(json.dumps(m.report(art), default=float))
    assert main(["geodesics", "list", "--json"]) == 0
    assert art.key in [r["key"] for r in json.loads(capsys.readouterr().out)]
    assert main(["geodesics", "report", "--dataset", "wcg", "--small"]) == 2     # not built: a clear error
    assert "run `geolens geodesics build`" in capsys.readouterr().err


def test_dvr_defaults_are_the_pipelines():
    """`geolens dvr build` with no options builds what ``engine.dvr.build.build()`` builds by default."""
    from engine.dvr import generators
    from engine.dvr.evaluate import EvalConfig
    from engine.dvr.method import DvrBuild
    from engine.dvr.networks import CriticConfig
    from engine.dvr.strokes import StrokeSetConfig

    cfg, = methods().get("dvr").defaults()
    assert cfg == DvrBuild() and cfg.train_params() is None and cfg.specs() == generators.default_specs()
    assert (cfg.stroke_config(), cfg.critic_config(), cfg.eval_config()) == (StrokeSetConfig(), CriticConfig(), EvalConfig())
    with pytest.raises(ValueError, match=r"unknown generator 'nope'; choose one of"):
        DvrBuild(only=("nope",))


def test_dvr_build_report_list_and_a_copied_cache(tmp_path, monkeypatch, capsys):
    """`geolens dvr build|report|list` on a tiny built-in set; the report is the page's
    (``results.report`` of the build's reference); a copy of the cache folder reads the same."""
    import shutil

    from engine import store
    from engine.cli import main
    from engine.dvr import evaluate, results
    from engine.dvr.networks import load_critics

    first = tmp_path / "cache"
    monkeypatch.setenv("GEOLENS_CACHE", str(first))  # its own cache folder: other tests read the newest dvr reference
    m = methods().get("dvr")
    args = ["--chars-per-alphabet", "4", "--simclr-epochs", "1", "--proto-episodes", "15", "--episodes", "30", "--way", "5",
            "--only", "copy,other_class,affine", "--strengths", "0.5,2", "--device", "cpu"]
    assert main(["dvr", "report", *args]) == 2
    assert "run `geolens dvr build`" in capsys.readouterr().err
    assert main(["dvr", "build", *args]) == 0
    p = argparse.ArgumentParser()
    m.add_arguments(p)
    cfg = m.config_from_args(p.parse_args(args))
    art = m.find(cfg)
    ref = store.resolve_stored(art.meta["ref"])
    assert ref.parent == first and art.name == ref.stem
    stamp = (art.path / "manifest.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["dvr-build", *args]) == 0                                   # the old spelling: found, not rebuilt
    assert json.loads(capsys.readouterr().out)["ref"] == str(ref)
    assert (art.path / "manifest.json").stat().st_mtime_ns == stamp
    assert main(["dvr", "report", *args, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(m.report(art), default=float)) == json.loads(json.dumps(results.report(ref)))
    assert {r["id"] for r in printed["models"]} == {"built-in/copy", "built-in/other_class", "built-in/affine_strength0p5",
                                                    "built-in/affine_strength2"}
    assert main(["dvr", "list", "--json"]) == 0
    assert [r["key"] for r in json.loads(capsys.readouterr().out)] == [art.key]

    meta = evaluate.read_meta(ref)  # no absolute path into the cache folder is stored
    assert not any(Path(meta[k]).is_absolute() for k in ("critics_folder", "data_root"))
    second = tmp_path / "copied"
    shutil.copytree(first, second)
    shutil.rmtree(first)
    monkeypatch.setenv("GEOLENS_CACHE", str(second))
    moved = m.find(cfg)
    assert moved.key == art.key and m.report(moved) == {**printed, "data_root": str(second / meta["data_root"])}
    assert load_critics(meta["critics_folder"]).key == meta["critics_key"]
    cls = results.per_class(store.resolve_stored(moved.meta["ref"]))["class"].iloc[0]
    assert all(Path(p).is_file() and Path(p).is_relative_to(second) for p in results.drawings(store.resolve_stored(moved.meta["ref"]), cls))
