"""dvr end to end on a tiny built-in set: sanity properties, caches, CLI report, page (AppTest + Chromium)."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, no_exception, wait_for_app


@pytest.fixture(scope="session")
def dvr(cache_root):
    """Tiny stroke set (45 test classes, 6 drawers), tiny critics and generators, evaluated."""
    from engine.dvr import build, evaluate, generators, strokes
    from engine.dvr.networks import CriticConfig

    specs = [generators.ModelSpec("copy"), generators.ModelSpec("other_class"),
             generators.ModelSpec("affine", (("strength", 0.5),), "strength"),
             generators.ModelSpec("affine", (("strength", 2.0),), "strength"),
             generators.ModelSpec("vae_ns", (("beta", 1.0),), "beta"),
             generators.ModelSpec("dagan", (("psi", 1.0),), "psi"),
             generators.ModelSpec("ddpm_cfg", (("w", 0.0),), "w"), generators.ModelSpec("ddpm_cfg", (("w", 2.0),), "w")]
    tiny = dict(steps=3, channels=8, batch_classes=4, targets_per_class=2)
    return build.build(
        stroke_cfg=strokes.StrokeSetConfig(chars_per_alphabet=4, drawers=6),
        critic_cfg=CriticConfig(widths=(8, 8, 16, 16), simclr_epochs=1, simclr_batch=64, proto_episodes=15, proto_way=10),
        train_params={"vae_ns": {**tiny, "hidden": 16}, "dagan": tiny, "ddpm_cfg": {**tiny, "emb": 16, "sample_steps": 3}},
        eval_cfg=evaluate.EvalConfig(n_episodes=200), specs=specs, n_samples=5)


def _by_id(rep: dict) -> dict:
    return {m["id"]: m for m in rep["models"]}


def _small_folder(dvr, dest: Path, family: str = "gan") -> Path:
    """A user samples folder: two models copied from the built-in ones, 6 classes each."""
    for src, name in (("affine_strength0p5", "jitter"), ("copy", "copycat")):
        for cls in sorted(p for p in (dvr.samples_root / src).iterdir() if p.is_dir())[:6]:
            shutil.copytree(cls, dest / name / cls.name)
        (dest / name / "model.json").write_text(json.dumps({"family": family}))
    return dest


def test_sanity_properties(dvr):
    from engine.dvr import results

    rep = results.report(dvr.ref)
    m = _by_id(rep)
    assert m["built-in/copy"]["diversity"] == 0.0 and m["built-in/copy"]["recognizability"] == 1.0
    assert abs(m["built-in/other_class"]["recognizability"] - 1 / 20) < 0.04
    assert rep["n_test_classes"] == 45 and rep["human"]["n_classes"] == 45
    assert m["built-in/affine_strength2"]["diversity"] > m["built-in/affine_strength0p5"]["diversity"]


def test_human_point_from_real_drawings_only(dvr):
    from engine import store
    from engine.dvr import evaluate, metrics, omniglot, results
    from engine.dvr.networks import embed, load_critics

    meta = evaluate.read_meta(dvr.ref)
    critics = load_critics(meta["critics_folder"])
    pc = results.per_class(dvr.ref)
    human = pc[pc["id"] == "human"].set_index("class")
    draw = store.query_df(dvr.ref, "SELECT class, drawer, path FROM drawings ORDER BY class, drawer")
    for cls in list(human.index[:5]):
        stored = draw[(draw["class"] == cls) & (draw["drawer"] > 1)]["path"].tolist()
        assert not any(Path(p).is_absolute() for p in stored)  # relative to the cache root: the folder can move
        paths = [str(store.resolve_stored(p)) for p in stored]
        assert len(paths) == 5 and all(str(Path(meta["data_root"])) in p for p in paths)
        f = embed(critics.simclr, omniglot.load_images([Path(p) for p in paths]))[None]
        assert metrics.diversity_per_class(f)[0] == pytest.approx(human.loc[cls, "diversity"], rel=1e-4)
    # evaluating model samples never changes the human point
    before = results.human_point(dvr.ref)
    assert results.models(dvr.ref).query("id == 'human'")["source"].item() == "real drawings"
    assert results.human_point(dvr.ref) == before


def test_report_cli_json_and_eval_cache(dvr, tmp_path):
    from engine.cli import main
    from engine.dvr import evaluate, results
    from engine.dvr.networks import load_critics

    folder = _small_folder(dvr, tmp_path / "mine")
    critics = load_critics(evaluate.read_meta(dvr.ref)["critics_folder"])
    out = evaluate.evaluate_folder(folder, dvr.ref, critics)
    stamp = out.stat().st_mtime_ns
    assert evaluate.evaluate_folder(folder, dvr.ref, critics) == out and out.stat().st_mtime_ns == stamp
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["report", "dvr", "--json", "--ref", str(dvr.ref)]) == 0
    printed = json.loads(buf.getvalue())
    assert printed == json.loads(json.dumps(results.report(dvr.ref)))
    m = _by_id(printed)
    assert m["mine/copycat"]["diversity"] == 0.0 and m["mine/copycat"]["n_classes"] == 6
    assert m["mine/jitter"]["family"] == "gan"


def test_bad_folder_message(dvr, tmp_path):
    from engine.dvr import evaluate
    from engine.dvr.networks import load_critics

    critics = load_critics(evaluate.read_meta(dvr.ref)["critics_folder"])
    (tmp_path / "m" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="exemplar.png"):
        evaluate.evaluate_folder(tmp_path, dvr.ref, critics)


def test_page_apptest(dvr, cache_root):
    from streamlit.testing.v1 import AppTest

    from engine.dvr import results

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.switch_page("pages/dvr.py")
    at.run()
    no_exception(at)
    rep = results.report(dvr.ref)
    table = at.dataframe[0].value
    ids = table["id"].tolist()
    assert ids[0] == "human" and ids[1:] == [m["id"] for m in rep["models"]]
    for m in rep["models"]:
        row = table[table["id"] == m["id"]].iloc[0]
        assert row["diversity"] == m["diversity"] and row["recognizability"] == m["recognizability"]
        assert row["diversity_std"] == m["diversity_std"] and row["recognizability_std"] == m["recognizability_std"]
    assert table.iloc[0]["diversity"] == rep["human"]["diversity"]
    at.selectbox(key="_sel_dvr_model").select("built-in/affine_strength2").run()
    no_exception(at)
    assert at.query_params["dvr_model"] == "built-in/affine_strength2"
    folder = _small_folder(dvr, cache_root / "inputs" / "apptest_run")  # under the data root
    at.text_input(key="dvr_folder").input(str(folder))
    at.button[0].click().run()
    no_exception(at)
    assert any("Evaluated and cached" in s.value for s in at.success), [e.value for e in at.error]
    ids = at.dataframe[0].value["id"].tolist()
    assert "apptest_run/jitter" in ids


@pytest.mark.browser
def test_page_browser(dvr, server, page, cache_root):
    folder = _small_folder(dvr, cache_root / "inputs" / "browser_run")
    page.goto(f"{server}/dvr")
    wait_for_app(page)
    page.get_by_text("Every configuration").wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    page.get_by_text("humans", exact=True).first.wait_for()  # the star's legend entry
    page.get_by_label("Samples folder (path on the server)").fill(str(folder))
    page.get_by_role("button", name="Evaluate").click()
    page.get_by_text("Evaluated and cached").wait_for(timeout=120_000)
    page.get_by_text("browser_run/copycat").first.wait_for(state="attached", timeout=60_000)  # a table cell
