"""The command line: build-defaults builds each method's default configs through ``Method.build``."""
from __future__ import annotations

import dataclasses
import os

import pytest

from engine.config import Config


def test_build_defaults_stages_build_every_methods_defaults():
    """Each stage names registered methods and stages; together they build every method's defaults."""
    from engine.commands import DEFAULT_STAGES, precompute_default_shapes
    from engine.methods import methods

    assert set(DEFAULT_STAGES) == {"shapes", "saes", "concepts", "geodesics", "dvr"}  # Home, pages and jobs use these
    named = [m for st in DEFAULT_STAGES.values() for m in st.methods]
    assert sorted(named) == sorted(methods().names())  # each method once
    assert all(set(st.needs) <= set(DEFAULT_STAGES) for st in DEFAULT_STAGES.values())
    assert DEFAULT_STAGES["shapes"].prepare is precompute_default_shapes and DEFAULT_STAGES["saes"].needs == ("shapes",)


@dataclasses.dataclass
class _Cfg(Config):
    name: str = "a"


def fake_stages(monkeypatch) -> tuple[list, dict]:
    """Two stages over two stand-in methods: ``first`` prepares what method ``one``'s defaults read
    (as the shapes stage precomputes the default cache), ``second`` needs it. Returns (builds, state):
    each build as (method, config name, $GEOLENS_DEVICE, $GEOLENS_RETRAIN)."""
    from engine import commands, methods
    from engine.core.method import Method
    from engine.core.registry import Registry

    built: list = []
    state = {"prepared": None}

    def method(name: str, defaults) -> Method:
        def build(cfg, progress=None, force=False):
            built.append((name, cfg.name, os.environ.get("GEOLENS_DEVICE"), os.environ.get("GEOLENS_RETRAIN")))

        return Method(name=name, title=name, page=f"pages/{name}.py", kind=name, config=_Cfg, add_arguments=lambda p: None,
                      config_from_args=lambda a: _Cfg(), build=build, find=lambda cfg: None, report=lambda a: {},
                      defaults=defaults)

    def prepare(device):
        """Make the default cache."""
        state["prepared"] = device or "auto"

    reg = Registry[Method]("method")
    reg.add("one", method("one", lambda: [_Cfg("x"), _Cfg("y")] if state["prepared"] else []))
    reg.add("two", method("two", lambda: [_Cfg("z")]))
    monkeypatch.setattr(methods, "methods", lambda: reg)
    monkeypatch.setattr(commands, "DEFAULT_STAGES", {"first": commands.Stage(("one",), prepare=prepare),
                                                     "second": commands.Stage(("one", "two"), needs=("first",))})
    monkeypatch.delenv("GEOLENS_DEVICE", raising=False)
    monkeypatch.delenv("GEOLENS_RETRAIN", raising=False)
    return built, state


def test_build_stages_prepare_then_build_each_default(monkeypatch):
    from engine.commands import build_stages

    built, state = fake_stages(monkeypatch)
    with pytest.raises(ValueError, match=r"build-defaults second: no default settings of \['one'\] to build yet; "
                                         r"build first first \(`geolens build-defaults --only first,second`\)"):
        build_stages(["second"])
    assert built == []
    steps = []
    build_stages(["first", "second"], "cpu", on_step=lambda i, n, label: steps.append((i, n, label)))
    assert state["prepared"] == "cpu"
    assert [b[:3] for b in built] == [("one", "x", "cpu"), ("one", "y", "cpu"), ("one", "x", "cpu"), ("one", "y", "cpu"),
                                      ("two", "z", "cpu")]
    # n grows once the preparation has made method one's defaults visible
    assert steps == [(0, 2, "first: Make the default cache."), (1, 6, "geolens one build name=x"),
                     (2, 6, "geolens one build name=y"), (3, 6, "geolens one build name=x"),
                     (4, 6, "geolens one build name=y"), (5, 6, "geolens two build")]
    assert "GEOLENS_DEVICE" not in os.environ  # restored after the builds


def test_build_defaults_cli_only_device_retrain(monkeypatch, capsys):
    from engine.cli import main

    built, state = fake_stages(monkeypatch)
    assert main(["build-defaults", "--only", "first", "--device", "cpu", "--retrain"]) == 0
    assert built == [("one", "x", "cpu", "1"), ("one", "y", "cpu", "1")] and state["prepared"] == "cpu"
    assert "[build-defaults 3/3] geolens one build name=y" in capsys.readouterr().out
    assert "GEOLENS_DEVICE" not in os.environ and "GEOLENS_RETRAIN" not in os.environ
    built.clear()
    assert main(["build-defaults", "--only", "second"]) == 0  # first is prepared now
    assert built == [("one", "x", None, None), ("one", "y", None, None), ("two", "z", None, None)]
    assert main(["build-defaults", "--only", "first,nope"]) == 2
    assert "unknown stage(s) ['nope']; choose from ['first', 'second']" in capsys.readouterr().err


def test_cache_methods_default_to_the_default_shapes_cache(shapes_cache, monkeypatch, tmp_path):
    """gap, sae and atoms open on the default Shapes cache of the default weights now in the cache folder."""
    from engine import default_model
    from engine.atoms.method import AtomsBuild
    from engine.core import names
    from engine.gap.method import GapBuild
    from engine.methods import methods
    from engine.sae.method import SaeBuild
    from tests.conftest import REDUCED_TRAIN

    # the session's reduced default model and its 600-pair cache stand in for the real ones
    monkeypatch.setattr(default_model, "recipe", lambda *a, **k: default_model.TrainConfig(**REDUCED_TRAIN))
    monkeypatch.setattr(names, "default_shapes_caches", lambda: [shapes_cache])
    name = shapes_cache.name
    ms = methods()
    assert names.default_shapes_cache().name == name
    assert ms.get("gap").defaults() == [GapBuild(cache=name)]
    assert ms.get("sae").defaults() == [SaeBuild(cache=name, beta=0.0), SaeBuild(cache=name, beta=4e-4)]
    assert ms.get("atoms").defaults() == [AtomsBuild(cache=name)]
    other = tmp_path / "retrained.safetensors"  # other weights: that cache is not the default one any more
    other.write_bytes(b"other weights")
    monkeypatch.setattr(default_model, "weights_path", lambda cfg: other)
    assert names.default_shapes_cache() is None and ms.get("gap").defaults() == ms.get("sae").defaults() == []
    other.unlink()
    assert names.default_shapes_cache() is None


def test_geodesics_ebm_flag_picks_the_objective():
    from engine.cli import build_parser
    from engine.geodesics.cli import config_from_args as _config

    parser = build_parser()
    assert _config(parser.parse_args(["report", "geodesics", "--dataset", "ucg"])).ebm_objective == "dsm"
    assert _config(parser.parse_args(["report", "geodesics", "--dataset", "urc"])).ebm_objective == "cd"
    cfg = _config(parser.parse_args(["geodesics", "precompute", "--dataset", "ucg", "--ebm", "cd"]))
    assert cfg.ebm_objective == "cd" and cfg.dataset == "ucg"
    assert cfg.solver_init == "line"
    cfg = _config(parser.parse_args(["report", "geodesics", "--dataset", "urc", "--init", "graph"]))
    assert cfg.solver_init == "graph"


def test_warm_compiles_umap_kernels_into_numbas_disk_cache():
    """`geolens warm` (run by make install) leaves UMAP's kernels in $NUMBA_CACHE_DIR."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-m", "engine", "warm"], cwd=root, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(root)}, timeout=600)
    assert out.returncode == 0, out.stderr
    cache = Path(os.environ["NUMBA_CACHE_DIR"])
    assert str(cache) in out.stdout
    for kernel in ("smooth_knn_dist", "compute_membership_strengths", "optimize_layout_euclidean_single_epoch"):
        assert list(cache.rglob(f"*{kernel}*.nbi")), kernel
