"""First run, timed: from an empty cache folder (assets present) to Home served and each page ready.

Does what ``make app`` does after the install — starts the job runner with the default builds
queued, then ``streamlit run app.py`` — on a fresh temporary ``$GEOLENS_CACHE``, and watches it in
headless Chromium (Debian's ``/usr/bin/chromium``). numba's compile cache is the installation's
(``$NUMBA_CACHE_DIR``, else ``cache/numba`` as the Makefile sets it), which ``make install`` fills
by running ``geolens warm``:

- ``home_served_s``: seconds from the start until Home has rendered in the browser;
- ``pages[name]``: seconds from the start until the page has filled in by itself: its pending
  box (job progress) is gone, the script is idle, no exception shows, and a figure, number or
  table is on screen. ``null`` if that did not happen within ``--timeout``.

Each page stays open in its own tab the whole time, as a visitor's would: the pages fill in on
their own (``st.fragment(run_every=...)``) when their jobs finish. It runs the full default
build, so it takes as long as that build (tens of minutes on 2 CPU cores)::

    python bench/first_run.py [--json] [--timeout 5400] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]
PAGES = {"gap": "gap", "atoms": "atoms", "concepts": "concepts", "geodesics": "geodesics", "dvr": "dvr"}
PENDING_MARK = "geolens-pending"  # ui.jobs.PENDING_MARK (not imported: the bench must not import the app)
CONTENT = "[data-testid='stPlotlyChart'], [data-testid='stMetric'], [data-testid='stDataFrame'], [data-testid='stImage']"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log(msg: str, t0: float) -> None:
    print(f"[first_run {time.monotonic() - t0:7.1f} s] {msg}", file=sys.stderr, flush=True)


def page_state(tab) -> str:
    """'ready', 'pending', 'running' (script busy), 'error: …' or 'empty' for one open tab."""
    if tab.locator("[data-testid='stException']").count():
        return "error: " + tab.locator("[data-testid='stException']").first.inner_text()[:200].replace("\n", " ")
    if tab.get_by_text(PENDING_MARK).count():
        return "pending"
    if tab.locator("[data-testid='stStatusWidget']").count():
        return "running"
    return "ready" if tab.locator(CONTENT).count() else "empty"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print only the JSON result")
    ap.add_argument("--timeout", type=float, default=5400, help="give up on pages not ready after this many seconds")
    ap.add_argument("--poll", type=float, default=5.0, help="seconds between looks at the tabs")
    ap.add_argument("--keep", action="store_true", help="keep the temporary cache folder (its path goes to stderr)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill` still stops the server and the runner

    cache = Path(tempfile.mkdtemp(prefix="geolens-first-run-"))
    # numba's compile cache is the installation's, as `make install` (`geolens warm`) left it
    env = {**os.environ, "GEOLENS_CACHE": str(cache), "PYTHONPATH": str(ROOT),
           "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR") or str(ROOT / "cache" / "numba"),
           "MPLCONFIGDIR": str(cache / "mpl")}
    port = _port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    _log(f"cache folder {cache}", t0)
    runner = subprocess.Popen([sys.executable, "-m", "engine.core.jobs", "run", "--submit-defaults", "--idle-exit", "60"],
                              cwd=ROOT, env=env, stdout=open(cache / "runner.out", "wb"), stderr=subprocess.STDOUT)
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                               "--server.address", "127.0.0.1"], cwd=ROOT, env=env,
                              stdout=open(cache / "streamlit.out", "wb"), stderr=subprocess.STDOUT)
    result: dict = {"home_served_s": None, "pages": {name: None for name in PAGES}}
    states: dict = {}
    try:
        while True:
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=2)
                break
            except OSError:
                if time.monotonic() - t0 > args.timeout:
                    raise RuntimeError("streamlit never answered its health check")
                time.sleep(0.25)
        _log("server answers", t0)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            home = ctx.new_page()
            home.set_default_timeout(int(args.timeout * 1000))
            home.goto(url)
            home.get_by_text("Modality gap").first.wait_for()
            home.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")
            result["home_served_s"] = round(time.monotonic() - t0, 1)
            _log(f"Home served at {result['home_served_s']} s", t0)
            tabs, reloaded = {}, {}
            for name, path in PAGES.items():
                tab = ctx.new_page()
                tab.set_default_timeout(120_000)
                tab.goto(f"{url}/{path}", wait_until="commit")
                tabs[name] = tab
                reloaded[name] = time.monotonic()
            while time.monotonic() - t0 < args.timeout and any(v is None for v in result["pages"].values()):
                for name, tab in tabs.items():
                    if result["pages"][name] is not None:
                        continue
                    try:
                        st = page_state(tab)
                    except Exception as exc:  # a tab mid-navigation: look again next round
                        st = f"unreadable ({type(exc).__name__})"
                    if st != states.get(name):
                        _log(f"{name}: {st}", t0)
                        states[name] = st
                    if st == "ready":
                        result["pages"][name] = round(time.monotonic() - t0, 1)
                    elif st.startswith("error") and time.monotonic() - reloaded[name] > 120:
                        reloaded[name] = time.monotonic()  # a failed run does not refresh itself: reload it
                        try:
                            tab.reload(wait_until="commit")
                        except Exception as exc:  # a busy server: look again next round
                            _log(f"{name}: reload failed ({type(exc).__name__})", t0)
                time.sleep(args.poll)
            browser.close()
    finally:
        for proc in (server, runner):
            proc.terminate()
        for proc in (server, runner):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        jobs_db = cache / "jobs" / "jobs.sqlite"
        if jobs_db.exists():
            import sqlite3

            with sqlite3.connect(f"{jobs_db.as_uri()}?mode=ro", uri=True) as con:
                rows = con.execute("SELECT id, name, state, started, finished FROM jobs ORDER BY id").fetchall()
            result["jobs"] = {r[1]: {"state": r[2], "seconds": None if not (r[3] and r[4]) else round(r[4] - r[3], 1)} for r in rows}
        if not args.keep:
            shutil.rmtree(cache, ignore_errors=True)
        else:
            _log(f"kept {cache}", t0)
    result["unfinished"] = {k: states.get(k) for k, v in result["pages"].items() if v is None}
    if args.json:
        print(json.dumps({"home_served_s": result["home_served_s"], "pages": result["pages"]}))
    else:
        print(f"{'what':<12} {'seconds':>9}")
        print(f"{'home':<12} {result['home_served_s']!s:>9}")
        for name, s in result["pages"].items():
            print(f"{name:<12} {s!s:>9}")
        for name, j in result.get("jobs", {}).items():
            print(f"job {name:<8} {j['state']:<9} {j['seconds']!s:>7} s")
    print(json.dumps(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
