"""bench/scale.py end to end on a tiny cache: it runs and prints issue 14's keys with sane values.

Speed is not checked here (benches print ratios; timed tests are not kept)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_scale_bench_prints_every_key(tmp_path):
    env = {**os.environ, "GEOLENS_CACHE": str(tmp_path / "unused")}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--n", "1500", "--d", "32", "--device", "cpu",
                          "--sae-atoms", "64", "--sae-k", "4", "--compare-pairs", "600", "--compare-steps", "1", "--json",
                          "--keep", str(tmp_path / "root")],
                         capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout)  # --json: nothing else on stdout
    assert (got["n"], got["d"], got["device"]) == (1500, 32, "cpu")
    for key in ("write", "load", "report_gap", "layout", "page_first_open", "page_cached_open", "lasso_all", "sae_epoch"):
        assert got["seconds"][key] > 0, key
    assert got["full_recall"] == {"exact": True, "queries": 1500, "exact_limit": got["full_recall"]["exact_limit"]}
    assert got["atom_top_items_ms_p50"] > 0
    assert got["ratios"]["recall_vs_numpy"] > 0 and got["ratios"]["sae_vs_overcomplete"] > 0
    sae = got["sae"]
    # 1500 pairs in batches of 512: 3 steps make the epoch, all of them timed
    assert (sae["steps_per_epoch"], sae["steps_timed"], sae["extrapolated"]) == (3, 3, False)
    assert 0 < sae["compare"]["geolens"]["ev"] <= 1 and sae["compare"]["pairs"] == 600
    assert 0 < got["lasso_selected"] <= got["points"] == 3000
