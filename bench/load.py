"""Load bench: N concurrent sessions walk every page of app.py while a writer builds caches.

Client: a light Python client that speaks Streamlit's own websocket protocol (``/_stcore/stream``,
``BackMsg``/``ForwardMsg`` protobufs from ``streamlit.proto``), all sessions in one asyncio loop, so
the clients cost a few % of one core instead of a browser each. A page visit sends a
``rerun_script`` BackMsg with the page's script hash; the page is ready when the ``script_finished``
ForwardMsg arrives. The interaction reads the page's widgets from its delta messages, changes one
(the next option of a selectbox/radio, one step of a slider/number input; see ``INTERACTIONS``)
and sends the new widget states, as the browser does. Errors: ``exception`` deltas, compile
errors, ``page_not_found``, timeouts and dropped sockets. ``st.error`` alerts are counted apart.

Meanwhile a writer runs ``geolens precompute`` of a small Shapes cache and ``geolens train-sae``
on it (with ``--force``, again and again until the clients finish).

    .venv/bin/python bench/load.py                     # 20 sessions, temp cache root with small builds
    .venv/bin/python bench/load.py --sessions 1 --json
    .venv/bin/python bench/load.py --cache-root cache  # the default cache folder, as it is

Not part of the test suite (tests/test_load_bench.py checks the pure helpers only).
"""
from __future__ import annotations

import argparse
import ast
import asyncio
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GEOLENS = [sys.executable, "-m", "engine"]

# page file stem -> widget keys to change, first one found on the page wins
INTERACTIONS: dict[str, list[str]] = {
    "home": ["_sel_cache"],
    "gap": ["_sel_colour", "_sel_proj", "gap_segments"],
    "atoms": ["atom", "view", "eps", "_sel_sae"],
    "concepts": ["concept_gallery", "concept_settings", "concept_img", "_sel_class"],
    "geodesics": ["geo_frames", "geo_shown", "geo_seed", "_sel_geo_ds"],
    "dvr": ["_sel_dvr_model", "_sel_dvr_class", "dvr_bins"],
}
WIDGET_KINDS = ("selectbox", "radio", "slider", "number_input", "checkbox")


# ---- pure helpers (tested in tests/test_load_bench.py) --------------------------------------------
def app_pages(app: Path = ROOT / "app.py") -> list[tuple[str, str]]:
    """(file stem, title) of each page in app.py's ``PAGES`` list, read without running app.py."""
    tree = ast.parse(app.read_text(encoding="utf-8"), filename=str(app))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PAGES" for t in node.targets):
            return [(Path(path).stem, title) for path, title, *_ in ast.literal_eval(node.value)]
    raise ValueError(f"{app}: no PAGES = [...] list found; bench/load.py reads the pages from it")


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method); NaN for no values."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def widget_key(widget_id: str) -> str | None:
    """The user key of a Streamlit widget id (``$$ID-<hash>-<key>``), None for keyless widgets."""
    if not widget_id.startswith("$$ID-"):
        return None
    parts = widget_id.split("-", 2)
    return parts[2] if len(parts) == 3 and parts[2] != "None" else None


def next_value(kind: str, w) -> object | None:
    """A value different from the widget's current one, or None if it cannot change.

    ``w`` is the widget's protobuf (Selectbox, Radio, Slider, NumberInput, Checkbox)."""
    if kind in ("selectbox", "radio"):
        opts = list(w.options)
        if len(opts) < 2:
            return None
        cur = w.raw_value if w.HasField("raw_value") else (opts[w.default] if kind == "radio" and w.HasField("default") else opts[0])
        return opts[(opts.index(cur) + 1) % len(opts)] if cur in opts else opts[1]
    if kind == "slider":
        if len(w.value) != 1 or w.options:
            return None
        v = w.value[0] + w.step
        if v > w.max:
            v = w.value[0] - w.step
        return None if v < w.min else [v]
    if kind == "number_input":
        cur = w.value if w.HasField("value") else (w.min if w.has_min else 0.0)
        step = w.step or 1.0
        v = cur + step
        if w.has_max and v > w.max:
            v = cur - step
        return None if (w.has_min and v < w.min) else v
    if kind == "checkbox":
        return not w.default
    return None


def widget_state(kind: str, widget_id: str, value, w=None):
    """The ``WidgetState`` protobuf the frontend sends for ``value``."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    s = WidgetState(id=widget_id)
    if kind in ("selectbox", "radio"):
        s.string_value = value
    elif kind == "slider":
        s.double_array_value.data.extend(value)
    elif kind == "number_input":
        from streamlit.proto.NumberInput_pb2 import NumberInput

        if w is not None and w.data_type == NumberInput.INT:
            s.int_value = int(value)
        else:
            s.double_value = float(value)
    elif kind == "checkbox":
        s.bool_value = bool(value)
    else:
        raise ValueError(f"no widget state for kind {kind!r}")
    return s


@dataclass
class RunResult:
    """What one script run (page visit or interaction) produced, parsed from its ForwardMsgs."""

    finished: bool = False
    status: str = ""
    exceptions: list[str] = field(default_factory=list)
    error_alerts: list[str] = field(default_factory=list)
    page_not_found: bool = False
    widgets: dict[str, tuple[str, object]] = field(default_factory=dict)  # key -> (kind, proto)
    query_string: str | None = None


def absorb(msg, run: RunResult, pages: dict[str, str] | None = None) -> None:
    """Fold one ForwardMsg into ``run`` (and the page-hash map ``pages``: url path -> hash)."""
    from streamlit.proto.Alert_pb2 import Alert

    which = msg.WhichOneof("type")
    if which == "delta" and msg.delta.WhichOneof("type") == "new_element":
        el = msg.delta.new_element
        kind = el.WhichOneof("type")
        if kind == "exception":
            run.exceptions.append(f"{el.exception.type}: {el.exception.message}"[:300])
        elif kind == "alert" and el.alert.format == Alert.ERROR:
            run.error_alerts.append(el.alert.body[:300])
        elif kind in WIDGET_KINDS:
            w = getattr(el, kind)
            key = widget_key(w.id)
            if key:
                run.widgets[key] = (kind, w)
    elif which == "script_finished":
        run.finished = True
        run.status = msg.ScriptFinishedStatus.Name(msg.script_finished)
    elif which == "page_not_found":
        run.page_not_found = True
    elif which == "page_info_changed":
        run.query_string = msg.page_info_changed.query_string
    elif which == "navigation" and pages is not None:
        for p in msg.navigation.app_pages:
            pages[p.url_pathname] = p.page_script_hash
            if p.is_default:
                pages.setdefault("", p.page_script_hash)


def summarize(samples: list[dict]) -> dict:
    """p50/p95/max and counts per (phase, page) and overall, from the per-run samples."""
    out: dict = {"rows": []}

    def row(name, phase, xs):
        return {"page": name, "phase": phase, "n": len(xs), "p50_s": percentile(xs, 50),
                "p95_s": percentile(xs, 95), "max_s": max(xs) if xs else math.nan}

    pages = list(dict.fromkeys(s["page"] for s in samples))
    for phase in ("page", "interaction", "interaction_cached"):
        for p in pages + ["ALL"]:
            xs = [s["seconds"] for s in samples if s["ok"] and (p == "ALL" or s["page"] == p) and (
                s["phase"] == phase if phase != "interaction_cached" else (s["phase"] == "interaction" and s["round"] > 0))]
            if xs:
                out["rows"].append(row(p, phase, xs))
    out["errors"] = sum(s["errors"] for s in samples)
    out["error_alerts"] = sum(s["error_alerts"] for s in samples)
    out["runs"] = len(samples)
    return out


def table(summary: dict) -> str:
    """A Markdown table of ``summarize``'s rows."""
    lines = ["| phase | page | n | p50 (s) | p95 (s) | max (s) |", "|---|---|---:|---:|---:|---:|"]
    for r in summary["rows"]:
        lines.append(f"| {r['phase']} | {r['page']} | {r['n']} | {r['p50_s']:.3f} | {r['p95_s']:.3f} | {r['max_s']:.3f} |")
    return "\n".join(lines)


# ---- the client -----------------------------------------------------------------------------------
class Session:
    """One browser tab's worth of protocol: a websocket, widget states, the URL's query string."""

    def __init__(self, url: str, timeout: float):
        self.url, self.timeout = url, timeout
        self.pages: dict[str, str] = {}
        self.states: dict[str, object] = {}  # widget id -> WidgetState (this page's)
        self.query = ""

    async def __aenter__(self):
        import websockets

        ws_url = self.url.replace("http", "ws", 1).rstrip("/") + "/_stcore/stream"
        self.ws = await websockets.connect(ws_url, max_size=None, open_timeout=self.timeout,
                                           subprotocols=["streamlit"], ping_interval=None)
        return self

    async def __aexit__(self, *exc):
        await self.ws.close()

    async def run(self, page_hash: str = "", page_name: str = "") -> tuple[float, RunResult]:
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        back = BackMsg()
        cs = back.rerun_script
        cs.query_string = self.query
        cs.page_script_hash = page_hash
        cs.page_name = page_name
        cs.widget_states.widgets.extend(self.states.values())
        result = RunResult()
        t0 = time.perf_counter()
        await self.ws.send(back.SerializeToString())
        deadline = t0 + self.timeout
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                result.status = "TIMEOUT"
                break
            try:
                raw = await asyncio.wait_for(self.ws.recv(), left)
            except asyncio.TimeoutError:
                result.status = "TIMEOUT"
                break
            msg = ForwardMsg()
            msg.ParseFromString(raw)
            absorb(msg, result, self.pages)
            if result.page_not_found or (result.finished and result.status != "FINISHED_EARLY_FOR_RERUN"):
                break
        if result.query_string is not None:
            self.query = result.query_string
        return time.perf_counter() - t0, result


def _sample(sid, rnd, page, phase, secs, res: RunResult, what="") -> dict:
    bad = len(res.exceptions) + int(res.page_not_found) + int(res.status in ("TIMEOUT", "FINISHED_WITH_COMPILE_ERROR"))
    return {"session": sid, "round": rnd, "page": page, "phase": phase, "seconds": secs, "what": what,
            "status": res.status, "errors": bad, "ok": bad == 0, "error_alerts": len(res.error_alerts),
            "exceptions": res.exceptions, "alerts": res.error_alerts}


async def walk(sid: int, url: str, pages: list[str], rounds: int, timeout: float, samples: list[dict],
               query: str = "") -> None:
    """One session: for each round, each page: open it, then one interaction."""
    try:
        async with Session(url, timeout) as s:
            await s.run()  # the landing page, as a browser opening the URL (gets the page list)
            for rnd in range(rounds):
                for page in pages:
                    h = s.pages.get(page) or (s.pages.get("") if page == pages[0] else None)
                    if h is None:
                        samples.append(_sample(sid, rnd, page, "page", math.nan, RunResult(page_not_found=True)))
                        continue
                    s.states, s.query = {}, query
                    secs, res = await s.run(h, page)
                    samples.append(_sample(sid, rnd, page, "page", secs, res))
                    what, change = "rerun", None
                    for key in INTERACTIONS.get(page, []):
                        if key in res.widgets:
                            kind, w = res.widgets[key]
                            v = next_value(kind, w)
                            if v is not None:
                                what, change = f"{key}={v}", widget_state(kind, w.id, v, w)
                                break
                    if change is not None:
                        s.states[change.id] = change
                    secs, res = await s.run(h, page)
                    samples.append(_sample(sid, rnd, page, "interaction", secs, res, what))
    except Exception as e:  # a dropped socket or refused connection is an error of the run
        samples.append({"session": sid, "round": -1, "page": "-", "phase": "connection", "seconds": math.nan,
                        "what": "", "status": type(e).__name__, "errors": 1, "ok": False, "error_alerts": 0,
                        "exceptions": [f"{type(e).__name__}: {e}"], "alerts": []})


# ---- server, data, writer -------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict) -> tuple[subprocess.Popen, str, Path]:
    port = _free_port()
    log = Path(tempfile.mkstemp(prefix="geolens-load-server-", suffix=".log")[1])
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"],
                            cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=2)
            return proc, url, log
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"streamlit server did not start; see {log}")


def geolens(args: list[str], env: dict, log) -> int:
    return subprocess.run(GEOLENS + args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode


def prepare(env: dict, n: int) -> None:
    """Small builds in a fresh cache root: a Shapes cache the pages read, and an SAE on it."""
    with open(Path(env["GEOLENS_CACHE"]) / "prepare.log", "w") as log:
        for args in (["precompute", "--dataset", "shapes", "--n", str(n), "--seed", "0"],
                     ["train-sae", "--cache", f"shapes-n{n}-s0", "--epochs", "2"]):
            print("prepare: geolens", " ".join(args), file=sys.stderr)
            if geolens(args, env, log):
                raise SystemExit(f"prepare failed: geolens {' '.join(args)}; see {log.name}")


class Writer(threading.Thread):
    """precompute a small Shapes cache (--force), then train-sae on it (--force); repeat until stopped."""

    def __init__(self, env: dict, n: int, seed: int = 11):
        super().__init__(daemon=True)
        self.env, self.n, self.seed = dict(env, OMP_NUM_THREADS="1"), n, seed
        self.stop, self.runs, self.proc = threading.Event(), [], None
        self.log = Path(env["GEOLENS_CACHE"]) / "load-writer.log"

    def run(self):
        with open(self.log, "a") as log:
            while not self.stop.is_set():
                for args in (["precompute", "--dataset", "shapes", "--n", str(self.n), "--seed", str(self.seed), "--force"],
                             ["train-sae", "--cache", f"shapes-n{self.n}-s{self.seed}", "--epochs", "2", "--force"]):
                    t0 = time.perf_counter()
                    self.proc = subprocess.Popen(GEOLENS + args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
                    rc = self.proc.wait()
                    self.runs.append({"cmd": args[0], "rc": "stopped" if self.stop.is_set() and rc else rc,
                                      "seconds": round(time.perf_counter() - t0, 1)})
                    if self.stop.is_set():
                        break


# ---- main -----------------------------------------------------------------------------------------
async def _clients(url, pages, sessions, rounds, timeout, samples, max_wall=None, query="") -> int:
    """Run the sessions; returns how many were cut by ``max_wall`` seconds (their finished runs count)."""
    async def staggered(i):
        await asyncio.sleep(0.05 * i)  # tabs opened a moment apart, not in one burst
        await walk(i, url, pages, rounds, timeout, samples, query)

    tasks = [asyncio.create_task(staggered(i)) for i in range(sessions)]
    done, pending = await asyncio.wait(tasks, timeout=max_wall)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return len(pending)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2, help="walks per session; rounds after the first are 'cached'")
    ap.add_argument("--cache-root", type=Path, help="GEOLENS_CACHE to serve as is (default: a temp root with small builds)")
    ap.add_argument("--url", help="an already running server (its cache root must be --cache-root)")
    ap.add_argument("--prepare-n", type=int, default=400, help="pairs of the prepared Shapes cache")
    ap.add_argument("--writer-n", type=int, default=300, help="pairs of the writer's Shapes cache")
    ap.add_argument("--no-writer", action="store_true")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds one script run may take")
    ap.add_argument("--query", default="", help="query string of every page visit, e.g. cache=<name> (the pages "
                    "otherwise pick the first cache, which may be the writer's, not built yet)")
    ap.add_argument("--max-wall", type=float, help="stop the clients after this many seconds (finished runs count)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.sessions < 1 or a.rounds < 1:
        ap.error("--sessions and --rounds must be at least 1")

    tmp = None
    if a.cache_root is None:
        tmp = Path(tempfile.mkdtemp(prefix="geolens-load-"))
        a.cache_root = tmp
    env = dict(os.environ, GEOLENS_CACHE=str(a.cache_root.resolve()))
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / "cache" / "numba"))
    if tmp is not None:
        prepare(env, a.prepare_n)
    proc, url, server_log = (None, a.url, None) if a.url else start_server(env)
    pages = [stem for stem, _ in app_pages()]
    writer = None if a.no_writer else Writer(env, a.writer_n)
    load_before = os.getloadavg()
    samples: list[dict] = []
    try:
        if writer:
            writer.start()
        t0 = time.perf_counter()
        cut = asyncio.run(_clients(url, pages, a.sessions, a.rounds, a.timeout, samples, a.max_wall, a.query))
        wall = time.perf_counter() - t0
    finally:
        if writer:
            writer.stop.set()
            if writer.proc and writer.proc.poll() is None:
                writer.proc.terminate()  # the builds resume (tested in tests/test_resume.py)
        if proc:
            proc.terminate()
            proc.wait(30)
    load_after = os.getloadavg()
    if writer:
        writer.join(60)
    summary = summarize(samples)
    summary.update(
        client="python websocket client (Streamlit BackMsg/ForwardMsg protocol), one asyncio loop",
        sessions=a.sessions, rounds=a.rounds, sessions_cut=cut, query=a.query, pages=pages, wall_s=round(wall, 1), cpus=os.cpu_count(),
        loadavg_before=[round(x, 2) for x in load_before], loadavg_after=[round(x, 2) for x in load_after],
        cache_root=str(a.cache_root), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        writer_runs=writer.runs if writer else [],
        interactions=sorted({(s["page"], s["what"].split("=")[0]) for s in samples if s["phase"] == "interaction"}),
        failures=[{k: s[k] for k in ("session", "round", "page", "phase", "status", "exceptions")}
                  for s in samples if not s["ok"]][:20],
        alerts=sorted({(s["page"], al) for s in samples for al in s["alerts"]})[:20])
    writer_text = ", ".join(f"{r['cmd']} rc={r['rc']} {r['seconds']}s" for r in summary["writer_runs"]) or "none"
    if a.json:
        print(json.dumps(summary, indent=1, default=str))
    else:
        print(f"{summary['date']}: {a.sessions} sessions x {a.rounds} rounds over {len(pages)} pages, "
              f"client: {summary['client']}; {os.cpu_count()} CPUs, load average {load_before[0]:.1f} before, "
              f"{load_after[0]:.1f} after; wall {wall:.0f} s; writer runs: "
              f"{writer_text}")
        print(table(summary))
        print(f"errors: {summary['errors']} (exceptions, compile errors, timeouts, lost pages) in {summary['runs']} runs; "
              f"st.error alerts: {summary['error_alerts']}")
        print("interactions:", ", ".join(f"{p}:{w}" for p, w in summary["interactions"]))
        for f in summary["failures"]:
            print("FAIL", f)
        for p, al in summary["alerts"]:
            print("ALERT", p, al[:160])
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
