"""Concepts page in real Chromium: the cluster graph renders, and clicking a point shows that image."""
from __future__ import annotations

import re

import pytest

from tests.conftest import wait_for_app


@pytest.fixture(scope="module")
def caches(cache_root):
    from tests.test_concepts_fixtures import tiny_caches

    return tiny_caches()


@pytest.mark.browser
def test_concepts_page_in_chromium(caches, server, page):
    page.goto(f"{server}/concepts?model=fmnist-cnn&class=Sneaker&layout=tsne")
    wait_for_app(page)
    page.get_by_text("Strategic cluster graph").wait_for()
    chart = page.locator("[data-testid='stPlotlyChart']").first
    points = chart.locator("g.trace.scatter path.point")
    page.get_by_text(re.compile(r"Selected image #0 ")).wait_for()
    points.nth(59).wait_for()
    # click a point of the cluster graph: the panel beside it switches to that image
    box = points.nth(30).bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stCaptionContainer\"]')]"
        ".some(e => /Selected image #(?!0 )\\d+ /.test(e.innerText))", timeout=60_000)
    # lasso part of the graph with the toolbar's lasso tool: the grid of the lassoed images appears
    chart.hover()
    chart.locator(".modebar-btn[data-title='Lasso Select']").first.click()
    bb = chart.locator(".nsewdrag").first.bounding_box()
    x0, y0, w, h = bb["x"], bb["y"], bb["width"], bb["height"]
    path = [(0.02, 0.02), (0.98, 0.02), (0.98, 0.98), (0.02, 0.98), (0.02, 0.03)]
    page.mouse.move(x0 + path[0][0] * w, y0 + path[0][1] * h)
    page.mouse.down()
    for fx, fy in path[1:]:
        page.mouse.move(x0 + fx * w, y0 + fy * h, steps=8)
    page.mouse.up()
    page.get_by_text(re.compile(r"Lassoed cluster: \d+ images, shared concept \d+")).wait_for()
