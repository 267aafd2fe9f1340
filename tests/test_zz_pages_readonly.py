"""Every page in ``app.PAGES`` runs on a read-only cache folder without an exception or a write.

Named ``zz`` on purpose: it runs after the other page tests, so it sees every artifact the suite
built in the shared cache root (SAEs, concept runs, geodesics, dvr) as well as the missing ones.
As root, file permissions do not bind, so the pages run in a child process as user ``nobody``
(``setpriv``); the folder's listing (names, sizes, mtimes) must also be unchanged afterwards.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import APP, ROOT

NOBODY = 65534
RUNNER = r"""
import ast, json, sys
from streamlit.testing.v1 import AppTest
app, pages = sys.argv[1], json.loads(sys.argv[2])
out = {}
for path in pages:
    at = AppTest.from_file(app, default_timeout=300)
    at.switch_page(path)
    at.run()
    out[path] = [e.value for e in at.exception]
print("RESULT" + json.dumps(out))
"""


def app_pages() -> list[str]:
    """The page files listed in app.py's ``PAGES`` (read without running the router)."""
    tree = ast.parse(Path(APP).read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PAGES" for t in node.targets):
            return [entry[0] for entry in ast.literal_eval(node.value)]
    raise AssertionError("app.py has no PAGES list")


def _listing(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _read_only_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.lock", "numba", "*.partial"))
    for p in [dst, *dst.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod((mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH | (0o111 if p.is_dir() else 0)) & ~0o222)
    return dst


def test_app_lists_every_page_file():
    pages = app_pages()
    assert pages[0] == "pages/home.py" and all((ROOT / p).exists() for p in pages)
    assert sorted(pages) == sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("*.py"))


def test_every_page_runs_read_only(shapes_cache, cache_root, request):
    base = Path(tempfile.mkdtemp(prefix="geolens-ro-"))   # pytest's own tmp folders are 0700: nobody can't enter
    base.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(base, onerror=lambda f, p, e: (os.chmod(Path(p).parent, 0o755), f(p))))
    ro = _read_only_copy(cache_root, base / "cache")
    before = _listing(ro)
    scratch = base / "scratch"   # numba / matplotlib caches of the child: outside the cache folder
    scratch.mkdir()
    scratch.chmod(0o777)
    env = {**os.environ, "GEOLENS_CACHE": str(ro), "HOME": str(scratch), "NUMBA_CACHE_DIR": str(scratch / "numba"),
           "MPLCONFIGDIR": str(scratch / "mpl"), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-c", RUNNER, APP, json.dumps(app_pages())]
    if os.geteuid() == 0:
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line is not None, proc.stderr[-3000:]
    errors = {page: errs for page, errs in json.loads(line[len("RESULT"):]).items() if errs}
    assert not errors, errors
    assert _listing(ro) == before
