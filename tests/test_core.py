"""The shared core: artifact keys and atomic writes, progress, registries, assets."""
import json
import os

import pytest

from engine.core import artifacts, assets
from engine.core.progress import Progress, Tracker, format_seconds
from engine.core.registry import Registry


@pytest.fixture()
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOLENS_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_key_covers_every_input_and_ignores_input_order(root):
    base = artifacts.artifact_key("sae", {"k": 8}, ["a", "b"], "1")
    assert artifacts.artifact_key("sae", {"k": 8}, ["b", "a"], "1") == base
    assert artifacts.artifact_key("layout", {"k": 8}, ["a", "b"], "1") != base   # kind
    assert artifacts.artifact_key("sae", {"k": 9}, ["a", "b"], "1") != base      # config field
    assert artifacts.artifact_key("sae", {"k": 8}, ["a", "c"], "1") != base      # an input
    assert artifacts.artifact_key("sae", {"k": 8}, ["a", "b"], "2") != base      # code version


def test_content_key_follows_bytes_not_path(tmp_path):
    a = tmp_path / "x" / "w.bin"
    a.parent.mkdir()
    a.write_bytes(b"weights")
    k = artifacts.content_key(a)
    moved = tmp_path / "elsewhere.bin"
    os.replace(a, moved)
    assert artifacts.content_key(moved) == k
    moved.write_bytes(b"weightz")
    assert artifacts.content_key(moved) != k
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "1.png").write_bytes(b"1")
    k1 = artifacts.content_key(d)
    (d / "1.png").write_bytes(b"2")
    assert artifacts.content_key(d) != k1


def test_write_is_atomic_and_listed_by_input(root):
    with artifacts.writing("layout", {"method": "pca"}, ["cacheA"], "1", name="pca of A") as w:
        w.file("coords.bin").write_bytes(b"xy")
        w.meta["seconds"] = 1.5
        # not visible until the block ends
        assert artifacts.find("layout", w.key) is None
        assert artifacts.list("layout") == []
    art = artifacts.find("layout", w.key)
    assert art.file("coords.bin").read_bytes() == b"xy"
    assert art.meta == {"seconds": 1.5} and art.config == {"method": "pca"} and art.name == "pca of A"
    assert art.manifest["engine_version"] and art.manifest["created"]
    assert [a.key for a in artifacts.list("layout", of="cacheA")] == [w.key]
    assert artifacts.list("layout", of="cacheB") == []
    assert artifacts.get("layout", "pca of A").key == w.key
    with pytest.raises(FileNotFoundError, match="built: pca of A"):
        artifacts.get("layout", "nope")


def test_failed_write_leaves_partial_for_resume_and_old_copy_intact(root):
    with artifacts.writing("sae", {"k": 1}, ["c"], "1") as w:
        w.file("weights").write_bytes(b"v1")
    key = w.key
    with pytest.raises(OSError):
        with artifacts.writing("sae", {"k": 1}, ["c"], "1") as w2:
            w2.file("ckpt").write_bytes(b"half")
            raise OSError(28, "No space left on device")
    assert artifacts.find("sae", key).file("weights").read_bytes() == b"v1"   # last good state
    with artifacts.writing("sae", {"k": 1}, ["c"], "1") as w3:
        assert w3.resumed and w3.file("ckpt").read_bytes() == b"half"
        w3.file("weights").write_bytes(b"v2")
    assert artifacts.find("sae", key).file("weights").read_bytes() == b"v2"
    assert not (artifacts.folder("sae", key).with_name(key + ".partial")).exists()


def test_progress_rate_eta_and_text():
    p = Progress(done=50, total=200, unit="step", rate=10.0, stage="train")
    assert p.fraction == 0.25 and p.eta_s == 15.0
    assert p.text() == "train · 50/200 step · 10 step/s · 15 s left"
    assert format_seconds(185) == "3 min 5 s" and format_seconds(7260) == "2 h 1 min"
    seen = []
    t = Tracker(total=3, unit="b", sink=seen.append, min_interval=0)
    for i in range(1, 4):
        t.update(i)
    assert [s.done for s in seen] == [1, 2, 3] and seen[-1].fraction == 1.0


def test_registry_names_and_clear_error():
    reg = Registry[int]("learner")
    reg.add("a", 1)

    @reg.register("b")
    def b():
        return 2

    assert reg.names() == ["a", "b"] and reg.get("b") is b and "a" in reg
    with pytest.raises(ValueError, match=r"unknown learner 'c'; choose one of \['a', 'b'\]"):
        reg.get("c")
    with pytest.raises(ValueError, match="twice"):
        reg.add("a", 3)


def test_assets_lookup_checks_config_and_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOLENS_ASSETS", str(tmp_path / "assets"))
    built = tmp_path / "m.safetensors"
    built.write_bytes(b"\0" * 100)
    rec = assets.publish("m", {"m.safetensors": built}, config={"steps": 3}, config_key="K", command="geolens x",
                         seed=0, train_seconds=1.0, metrics={"acc": 0.9})
    assert rec["files"]["m.safetensors"] == assets.sha256(built)
    man = json.loads((tmp_path / "assets" / "manifest.json").read_text())
    assert man["assets"]["m"]["command"] == "geolens x" and man["assets"]["m"]["machine"]["host"]
    assert assets.lookup("m", "K") is not None
    assert assets.lookup("m", "other-config") is None
    dest = tmp_path / "out" / "m.safetensors"
    assert assets.install("m", "K", {"m.safetensors": dest}) and dest.read_bytes() == built.read_bytes()
    (tmp_path / "assets" / "m.safetensors").write_bytes(b"\1" * 100)   # tampered
    assert assets.lookup("m", "K") is None and "sha256" in assets.problems("m")[0]
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(assets.BUDGET_BYTES + 1)
    with pytest.raises(ValueError, match="past 40 MiB"):
        assets.publish("big", {"big.bin": big}, config={}, config_key="K", command="c", seed=0,
                       train_seconds=0, metrics={})


def test_store_stamp_changes_with_every_write_pages_must_see(root):
    """Pages key their cached reads on names.store_stamp(): it must change when an artifact is
    written or rebuilt, a cache file appears or is rewritten, and stay put otherwise."""
    import time

    from engine.core.names import store_stamp

    def changed(before):
        time.sleep(0.01)  # coarse file-system clocks: give mtimes room to move
        return store_stamp() != before

    (root / "cache").mkdir(exist_ok=True)
    s0 = store_stamp()
    assert store_stamp() == s0
    with artifacts.writing("layout", {"m": "pca"}, ["A"], "1") as w:
        w.file("x").write_bytes(b"1")
    s1 = store_stamp()
    assert s1 != s0 and store_stamp() == s1
    with artifacts.writing("layout", {"m": "umap"}, ["A"], "1") as w:  # another artifact of a kind that exists
        w.file("x").write_bytes(b"2")
    s2 = store_stamp()
    assert s2 != s1
    with artifacts.writing("layout", {"m": "umap"}, ["A"], "1", resume=False) as w:  # a rebuild (--force)
        w.file("x").write_bytes(b"3")
    assert store_stamp() != s2
    s3 = store_stamp()
    db = root / "cache" / "c.duckdb"
    db.write_bytes(b"a")
    assert changed(s3)
    s4 = store_stamp()
    os.utime(db, ns=(db.stat().st_atime_ns, db.stat().st_mtime_ns + 10**9))  # rewritten in place
    assert store_stamp() != s4
