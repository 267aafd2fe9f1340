"""Shared fixtures: an isolated cache root, a small Shapes cache, a streamlit server, a browser.

All caches the suite builds go to one temporary $GEOLENS_CACHE, shared by AppTests (in-process)
and by the streamlit server the browser tests talk to.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import engine.encoders  # noqa: F401  (registers geolens model configs with open_clip)

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / "cache" / "numba"))
APP = str(ROOT / "app.py")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("geolens-cache")
    os.environ["GEOLENS_CACHE"] = str(root)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(cache_root) -> str:
    """A streamlit server on the suite's cache root; yields its base URL."""
    port = _free_port()
    env = {**os.environ, "GEOLENS_CACHE": str(cache_root)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit server did not start")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by playwright (never `playwright install`)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: run `make test`, which installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    ctx.close()


def wait_for_app(page) -> None:
    """Wait until streamlit has finished running the script (no running indicator)."""
    page.wait_for_selector("[data-testid='stApp']")
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000
    )


def no_exception(at) -> None:
    """Fail with the page's exception text, if any."""
    assert not at.exception, [e.value for e in at.exception]


# ---- embedding caches -------------------------------------------------------------------
REDUCED_TRAIN = dict(n_train=8000, steps=600, batch_size=256, n_eval=500)


@pytest.fixture(scope="session")
def default_weights(cache_root):
    """The default model trained on a reduced schedule (same code path as `geolens train-default`)."""
    import shutil

    from engine.default_model import TrainConfig, default_spec, weights_path

    cfg = TrainConfig(**REDUCED_TRAIN)
    # a developer's machine keeps one trained copy across sessions (cache/ is git-ignored); CI trains it
    keep = ROOT / "cache" / "test-models" / weights_path(cfg).name
    target = weights_path(cfg)
    if keep.exists() and keep.with_suffix(".json").exists() and not os.environ.get("CI"):
        target.parent.mkdir(parents=True, exist_ok=True)
        for src in (keep, keep.with_suffix(".json")):
            shutil.copyfile(src, target.parent / src.name)
    spec = default_spec(cfg)
    if not keep.exists() and not os.environ.get("CI"):
        keep.parent.mkdir(parents=True, exist_ok=True)
        for src in (target.with_suffix(".json"), target):
            tmp = keep.parent / (src.name + ".tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, keep.parent / src.name)
    return spec


@pytest.fixture(scope="session")
def shapes_cache(default_weights):
    """A small Shapes cache (600 pairs) encoded by the reduced default model."""
    from engine.datasets.sources import resolve
    from engine.encoders import Encoder
    from engine.precompute import precompute

    return precompute(resolve("shapes", n=600, seed=7), Encoder(default_weights), batch_size=128).cache


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A randomly initialised geolens-tiny saved as .safetensors and .bin, with its model."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model("geolens-tiny").eval()
    d = tmp_path_factory.mktemp("weights")
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(d / "tiny.safetensors"))
    torch.save(sd, d / "tiny.bin")
    return d / "tiny.safetensors", d / "tiny.bin", model
