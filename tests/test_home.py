"""Home page: lists caches with provenance, keeps the active cache in the URL; the default model learns."""
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import APP, no_exception, wait_for_app


def test_default_model_zero_shot_on_reduced_run(default_weights):
    """Reduced schedule (800 steps); the full one (1500 steps) is measured by `geolens train-default`."""
    import json

    meta = json.loads(open(default_weights.pretrained.replace(".safetensors", ".json")).read())
    acc = meta["zero_shot_accuracy"]
    assert set(acc) == {"shape", "colour", "size", "position"}
    assert min(acc.values()) >= 0.7, acc
    assert sum(acc.values()) / 4 >= 0.85, acc


def test_home_lists_caches_and_syncs_url(shapes_cache):
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    no_exception(at)
    assert any(shapes_cache.name == o for o in at.selectbox[0].options)
    at.selectbox[0].select(shapes_cache.name).run()
    no_exception(at)
    assert at.query_params["cache"] == shapes_cache.name
    assert [m.value for m in at.metric][:1] == ["600"]


@pytest.mark.browser
def test_home_in_chromium(shapes_cache, server, page):
    page.goto(f"{server}/?cache={shapes_cache.name}")
    wait_for_app(page)
    page.get_by_text("Active cache (used by every page)").first.wait_for()
    assert page.locator("[data-testid='stMetricValue']").first.inner_text() == "600"
    assert page.get_by_text("Modality gap").first.is_visible()  # navigation lists the method pages
