"""Concepts page (AppTest): class choice, a point click, the lasso grid, the gallery, and the numbers
equal `geolens report concepts … --json`."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, no_exception


@pytest.fixture(scope="module")
def caches(cache_root):
    from tests.test_concepts_fixtures import tiny_caches

    return tiny_caches()


def _page(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.switch_page("pages/concepts.py")
    return at.run()


def _table_matches_report(at: AppTest, path) -> None:
    from engine.concepts import cache

    rep = cache.report(path)
    df = next(d.value for d in at.dataframe if "% of logit" in d.value.columns)
    assert df["% of logit"].tolist() == rep["importance"]["gradient_input_pct_logit"]
    assert df["Sobol S_T"].tolist() == rep["importance"]["sobol_total"]
    assert df["cluster (grad×input)"].tolist() == rep["cluster_sizes"]["gradient_input"]
    auc = next(d.value for d in at.dataframe if "ordering" in d.value.columns).set_index("ordering")
    for kind, scores in rep["fidelity_auc"].items():
        for ordering, v in scores.items():
            assert auc.loc[ordering, kind] == v


def test_page_shows_the_report_numbers_and_switches_class(caches):
    at = _page({"model": "fmnist-cnn", "class": "Sneaker"})
    no_exception(at)
    assert "Strategic cluster graph" in [s.value for s in at.subheader]
    _table_matches_report(at, caches["Sneaker"])
    at.sidebar.selectbox(key="_sel_class").select("Trouser").run()
    no_exception(at)
    _table_matches_report(at, caches["Trouser"])
    assert at.query_params["class"] == ["Trouser"] or at.query_params["class"] == "Trouser"


def test_point_click_lasso_and_gallery(caches):
    at = _page({"model": "fmnist-cnn", "class": "Sneaker"})
    # a click on the cluster graph sets the image number (the chart's on_select callback does this)
    at.number_input(key="concept_img").set_value(7).run()
    no_exception(at)
    assert any(c.value.startswith("Selected image #7 ") for c in at.caption)
    # switch importance and layout
    at.sidebar.selectbox(key="_sel_imp").select("sobol").run()
    at.sidebar.selectbox(key="_sel_layout").select("tsne").run()
    no_exception(at)
    # gallery: the least important concept shows its top crops
    gal = at.selectbox(key="concept_gallery")
    gal.select_index(len(gal.options) - 1).run()
    no_exception(at)
    assert any(c.value.startswith("Top 10 crops of concept") for c in at.caption)
    # lasso: several points selected
    at.session_state["concept_lasso"] = [0, 1, 2, 3, 4]
    at.run()
    no_exception(at)
    assert any(s.value.startswith("Lassoed cluster: 5 images") for s in at.subheader)


def _snapshot(root) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_missing_class_shows_the_build_command_and_the_page_never_writes(caches, cache_root):
    before = _snapshot(cache_root)
    at = _page({"model": "fmnist-cnn", "class": "Coat"})  # not one of the default build's classes
    no_exception(at)
    info = " ".join(i.value for i in at.info)
    assert "No concept cache" in info and 'geolens precompute-concepts --model fmnist-cnn --class "Coat"' in info
    assert not at.button  # no compute button: building is the CLI's (and later the job runner's) job
    at = _page({"model": "fmnist-cnn", "class": "Sneaker"})
    at.selectbox(key="concept_gallery").select_index(1).run()
    no_exception(at)
    assert _snapshot(cache_root) == before


def test_gallery_shows_the_maco_image_beside_the_crops(caches):
    from engine.concepts import cache

    at = _page({"model": "fmnist-cnn", "class": "Sneaker"})
    no_exception(at)
    gal = int(at.selectbox(key="concept_gallery").value)
    rep = cache.report(caches["Sneaker"])["maco"]
    cap = next(c.value for c in at.caption if c.value.startswith("Feature visualisation (MACO"))
    assert f"{rep['steps']} steps" in cap and f"{rep['objective_last'][gal]:.3g}" in cap
    assert any(c.value.startswith("Every concept's MACO image") for c in at.caption)
