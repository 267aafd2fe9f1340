"""bench/load.py's pure helpers: percentiles, the table, page list, protocol message parsing.

The bench itself (a server, 20 clients, a writer) is not run here."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from streamlit.proto.Alert_pb2 import Alert
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.NumberInput_pb2 import NumberInput
from streamlit.proto.Radio_pb2 import Radio
from streamlit.proto.Selectbox_pb2 import Selectbox
from streamlit.proto.Slider_pb2 import Slider

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_load", ROOT / "bench" / "load.py")
load = importlib.util.module_from_spec(_spec)
sys.modules["bench_load"] = load  # dataclasses look their module up
_spec.loader.exec_module(load)


@pytest.mark.parametrize("q", [0, 50, 95, 100, 37.5])
def test_percentile_matches_numpy(q):
    xs = [0.3, 5.0, 1.0, 2.0, 0.1, 9.5, 4.0]
    assert load.percentile(xs, q) == pytest.approx(np.percentile(xs, q))


def test_percentile_by_hand_and_empty():
    assert load.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5  # halfway between 2 and 3
    assert load.percentile([1.0, 2.0], 95) == pytest.approx(1.95)
    assert math.isnan(load.percentile([], 50))


def test_app_pages_reads_app_py(tmp_path):
    stems = [s for s, _ in load.app_pages()]
    assert stems[0] == "home" and "gap" in stems and len(stems) == len(set(stems))
    bad = tmp_path / "app.py"
    bad.write_text("X = 1\n")
    with pytest.raises(ValueError, match="no PAGES"):
        load.app_pages(bad)


def test_widget_key():
    assert load.widget_key("$$ID-8f3a1b2c-_sel_colour") == "_sel_colour"
    assert load.widget_key("$$ID-8f3a1b2c-my-key") == "my-key"
    assert load.widget_key("$$ID-8f3a1b2c-None") is None
    assert load.widget_key("plain") is None


def test_next_value_per_widget():
    sb = Selectbox(id="a", options=["modality", "shape", "colour"], raw_value="shape")
    assert load.next_value("selectbox", sb) == "colour"
    sb.raw_value = "colour"
    assert load.next_value("selectbox", sb) == "modality"  # wraps around
    assert load.next_value("selectbox", Selectbox(id="a", options=["only"])) is None
    assert load.next_value("radio", Radio(id="r", options=["Atoms", "Map"], default=0)) == "Map"
    sl = Slider(id="s", min=5, max=16, step=1, value=[16])
    assert load.next_value("slider", sl) == [15]  # at the top: one step down
    ni = NumberInput(id="n", has_min=True, min=0, has_max=True, max=10, step=2, value=4)
    assert load.next_value("number_input", ni) == 6


def test_widget_state_encodes_the_frontend_fields():
    assert load.widget_state("selectbox", "w", "shape").string_value == "shape"
    assert list(load.widget_state("slider", "w", [3.0]).double_array_value.data) == [3.0]
    ni = NumberInput(id="n", data_type=NumberInput.INT)
    st = load.widget_state("number_input", "n", 7.0, ni)
    assert st.WhichOneof("value") == "int_value" and st.int_value == 7
    with pytest.raises(ValueError, match="no widget state"):
        load.widget_state("file_uploader", "w", b"")


def _delta(build) -> ForwardMsg:
    m = ForwardMsg()
    build(m.delta.new_element)
    return m


def test_absorb_counts_exceptions_alerts_widgets_and_finish():
    run, pages = load.RunResult(), {}
    exc = _delta(lambda el: (setattr(el.exception, "type", "KeyError"), setattr(el.exception, "message", "'x'")))
    err = _delta(lambda el: (setattr(el.alert, "format", Alert.ERROR), setattr(el.alert, "body", "bad file")))
    info = _delta(lambda el: (setattr(el.alert, "format", Alert.INFO), setattr(el.alert, "body", "not built")))
    sel = _delta(lambda el: el.selectbox.CopyFrom(Selectbox(id="$$ID-ab-_sel_colour", options=["a", "b"])))
    nav = ForwardMsg()
    p = nav.navigation.app_pages.add(page_script_hash="h1", url_pathname="home", is_default=True)
    nav.navigation.app_pages.add(page_script_hash="h2", url_pathname="gap")
    info_changed = ForwardMsg()
    info_changed.page_info_changed.query_string = "cache=x"
    done = ForwardMsg()
    done.script_finished = ForwardMsg.FINISHED_SUCCESSFULLY
    for m in (exc, err, info, sel, nav, info_changed, done):
        load.absorb(m, run, pages)
    assert run.exceptions == ["KeyError: 'x'"] and run.error_alerts == ["bad file"]
    assert run.widgets["_sel_colour"][0] == "selectbox" and run.finished and run.status == "FINISHED_SUCCESSFULLY"
    assert pages == {"home": "h1", "gap": "h2", "": "h1"} and p.is_default
    assert run.query_string == "cache=x"
    s = load._sample(0, 0, "gap", "page", 0.5, run)
    assert s["errors"] == 1 and not s["ok"] and s["error_alerts"] == 1


def test_summarize_and_table():
    def sample(page, phase, secs, rnd=0, errors=0):
        return {"page": page, "phase": phase, "seconds": secs, "round": rnd, "ok": errors == 0,
                "errors": errors, "error_alerts": 0}

    samples = [sample("gap", "page", 1.0), sample("gap", "page", 3.0), sample("gap", "interaction", 0.2),
               sample("gap", "interaction", 0.4, rnd=1), sample("home", "page", 2.0),
               sample("home", "interaction", 9.0, errors=1)]
    s = load.summarize(samples)
    rows = {(r["phase"], r["page"]): r for r in s["rows"]}
    assert rows[("page", "gap")]["p50_s"] == 2.0 and rows[("page", "ALL")]["n"] == 3
    assert rows[("interaction", "ALL")]["n"] == 2  # the failed run is counted as an error, not a latency
    assert rows[("interaction_cached", "ALL")]["p50_s"] == 0.4
    assert s["errors"] == 1 and s["runs"] == 6
    t = load.table(s)
    assert "| page | gap | 2 | 2.000 | 2.900 | 3.000 |" in t
