"""Modality-gap page: AppTest (the build command when nothing is built, numbers equal
`geolens report gap --json`, projection and colour switches in the URL, click, lasso over all
points and the paged grid) and a real-browser box selection."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, no_exception, wait_for_app


def _build(name: str) -> None:
    from engine.cli import main

    assert main(["gap", "build", "--cache", name]) == 0


def _page(query: dict) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page("pages/gap.py")
    return at.run()


def _cli_report(name: str, capsys) -> dict:
    from engine.cli import main

    capsys.readouterr()
    assert main(["report", "gap", "--cache", name, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _q(at: AppTest, key: str) -> str:
    v = at.query_params[key]
    return v[0] if isinstance(v, list) else v


def _df(at: AppTest, column: str):
    """The first dataframe on the page that has ``column``."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _assert_numbers_match(at: AppTest, rep: dict) -> None:
    cards = {m.label: m.value for m in at.metric}
    g, c = rep["gap"], rep["cosine"]
    assert cards["DiM"] == f"{g['DiM']:.4f}"
    assert cards["W (OT)"] == f"{g['W']:.4f}"
    assert cards["Pair cosine"] == f"{c['true_pairs']:.4f}"
    assert cards["Image cone"] == f"{c['intra_image']:.4f}"
    assert cards["Text cone"] == f"{c['intra_text']:.4f}"
    assert cards["Probe accuracy"] == f"{rep['probe']['accuracy']:.4f}"
    table = _df(at, "flavour")
    for flavour, label in (("batched", "random batches of 256"), ("full_gallery", "full gallery")):
        for direction in ("image_to_text", "text_to_image", "mean"):
            row = table[(table["flavour"] == label) & (table["direction"] == direction.replace("_", " "))].iloc[0]
            assert {k: row[k] for k in ("R@1", "R@5", "R@10")} == rep["retrieval"][flavour][direction]


def test_page_without_a_build_shows_the_build_command_and_writes_nothing(shapes_cache):
    from engine.core import artifacts
    from engine.gap import layout, report

    aside = []  # a build by an earlier test is moved aside for this test, then put back
    for art in (report.find(shapes_cache), layout.find_layout(shapes_cache)):
        if art is not None:
            os.replace(art.path, art.path.with_name(art.path.name + ".aside"))
            aside.append(art.path)
    try:
        before = sorted(str(p) for p in artifacts.root().rglob("*")) if artifacts.root().exists() else []
        at = _page({"cache": shapes_cache.name})
        no_exception(at)
        assert any(f"geolens gap build --cache {shapes_cache.name}" in c.value for c in at.code)
        assert not at.metric
        after = sorted(str(p) for p in artifacts.root().rglob("*")) if artifacts.root().exists() else []
        assert after == before
    finally:
        for p in aside:
            os.replace(p.with_name(p.name + ".aside"), p)


def test_page_numbers_equal_the_cli_report_and_views_switch(shapes_cache, capsys):
    _build(shapes_cache.name)
    rep = _cli_report(shapes_cache.name, capsys)
    assert rep["n_pairs"] == 600 and not rep["gap"]["W_subsampled"]
    at = _page({"cache": shapes_cache.name})
    no_exception(at)
    _assert_numbers_match(at, rep)
    assert _q(at, "cache") == shapes_cache.name and _q(at, "proj") == "pca" and _q(at, "colour") == "modality"
    assert any("1,200 of 1,200 points drawn" in c.value for c in at.caption)

    at.sidebar.selectbox(key="_sel_proj").select("umap").run()
    no_exception(at)
    assert _q(at, "proj") == "umap" and any(s.value == "Joint map (UMAP)" for s in at.subheader)
    at.sidebar.selectbox(key="_sel_colour").select("shape").run()
    at.sidebar.toggle(key="gap_segments").set_value(True).run()
    no_exception(at)
    assert _q(at, "colour") == "shape"
    assert any("600 of 600 true-pair segments" in c.value for c in at.caption)
    _assert_numbers_match(at, rep)

    # a link with projection and colouring opens the same view
    again = _page({"cache": shapes_cache.name, "proj": "umap", "colour": "background"})
    no_exception(again)
    assert again.sidebar.selectbox(key="_sel_proj").value == "umap"
    assert again.sidebar.selectbox(key="_sel_colour").value == "background"
    assert any(s.value == "Joint map (UMAP)" for s in again.subheader)


def test_click_and_selection_views(shapes_cache):
    _build(shapes_cache.name)
    at = _page({"cache": shapes_cache.name})
    # a click on a caption (row 600 + 5 = caption of the 6th pair): partner and nearest images
    at.session_state["gap_point"] = 605
    at.run()
    no_exception(at)
    pts_id = 2 * int(shapes_cache.pair_ids()[5]) + 1
    assert any(f"**#{pts_id}** — text" in m.value for m in at.markdown)
    assert any("cosine with its true partner" in c.value for c in at.caption)
    assert _q(at, "item") == str(pts_id)
    # a click on an image: a table of nearest captions with cosines, sorted
    at.session_state["gap_point"] = 5
    at.run()
    nn = _df(at, "true partner")
    assert len(nn) == 8 and list(nn["cosine"]) == sorted(nn["cosine"], reverse=True)
    # a box selection of 3 images and 2 captions fills the grid
    at.session_state["gap_selected"] = [0, 1, 2, 600, 601]
    at.run()
    no_exception(at)
    assert any(s.value == "Selection: 3 images and 2 captions" for s in at.subheader)
    assert len(_df(at, "pair_id")) == 2
    # a lasso (as the chart reports it: vertices in data coordinates) is resolved over every stored point
    from engine.gap import layout

    xy = np.asarray(layout.find_layout(shapes_cache).xy("pca"))
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
    # a triangle over the lower-left half of the map: both modalities, whichever side the gap puts them
    xs, ys = [x0 - 1, x1 + 1, x0 - 1], [y0 - 1, y0 - 1, y1 + 1]
    rows = layout.select_lasso(xy, xs, ys)
    assert 0 < len(rows) < 1200
    at.session_state["gap_geom"] = {"kind": "lasso", "x": xs, "y": ys}
    at.run()
    no_exception(at)
    n_img, n_txt = int(np.sum(rows < 600)), int(np.sum(rows >= 600))
    assert n_img and n_txt
    assert any(s.value == f"Selection: {n_img:,} images and {n_txt:,} captions" for s in at.subheader)
    assert any("lasso over all 1,200 points" in c.value for c in at.caption)
    assert len(_df(at, "text")) == min(n_txt, 100)  # the first page of captions


@pytest.mark.browser
def test_box_selection_in_chromium_fills_the_grid(shapes_cache, server, page):
    _build(shapes_cache.name)
    page.goto(f"{server}/gap?cache={shapes_cache.name}")
    wait_for_app(page)
    plot = page.locator("[data-testid='stPlotlyChart'] .js-plotly-plot").first
    plot.wait_for()
    plot.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    drag = plot.locator(".nsewdrag").first  # the plot area; the figure's dragmode is box select
    box = drag.bounding_box()
    page.mouse.move(box["x"] + 0.05 * box["width"], box["y"] + 0.05 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.95 * box["width"], box["y"] + 0.95 * box["height"], steps=12)
    page.mouse.up()
    heading = page.get_by_text("Selection:", exact=False).first
    heading.wait_for(timeout=120_000)
    wait_for_app(page)
    assert heading.inner_text().startswith("Selection: ") and "images and" in heading.inner_text()
    n_img = int(heading.inner_text().split()[1].replace(",", ""))
    assert n_img > 0
    # the item panel shows one image; the grid adds one thumbnail per selected image (up to 48)
    page.wait_for_function(f"() => document.querySelectorAll(\"[data-testid='stImage'] img\").length >= {min(n_img, 48) + 1}")
