"""The method contract: every registered method is reachable as `geolens <method> build|report|list`,
its page is routed, and its CLI report is exactly ``Method.report`` of the built artifact."""
from __future__ import annotations

import argparse
import json

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
