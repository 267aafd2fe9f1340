"""The DuckDB store: round trip, atomic writes, resumption, readers during writes."""
import contextlib
import multiprocessing as mp

import numpy as np
import pytest

from engine import store


def test_round_trip_arrays_and_params(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOLENS_CACHE", str(tmp_path))
    x = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
    path = tmp_path / "t.duckdb"
    with store.writing(path) as con:
        store.insert_rows(con, "vecs", {"id": np.arange(4), "name": list("abcd"), "v": x})
        store.insert_rows(con, "vecs", {"id": np.array([4]), "name": ["e"], "v": x[:1] * 2})
    with contextlib.closing(store.connect_ro(path)) as con:
        back = store.fetch_array(con, "SELECT v FROM vecs WHERE id < ? ORDER BY id", [4])
        assert con.execute("SELECT typeof(v) FROM vecs LIMIT 1").fetchone()[0] == "FLOAT[3]"
    np.testing.assert_array_equal(back, x)
    df = store.query_df(path, "SELECT name FROM vecs WHERE name = ?", ["e'; DROP TABLE vecs; --"])
    assert df.empty and len(store.query_df(path, "SELECT * FROM vecs")) == 5
    assert store.list_files() == [path]


def test_identifiers_are_validated():
    assert store.ident("items_2") == "items_2"
    for bad in ["x; DROP", "1abc", "a-b", ""]:
        with pytest.raises(ValueError):
            store.ident(bad)


def test_failed_write_leaves_partial_and_no_final_file(tmp_path):
    path = tmp_path / "a.duckdb"
    with pytest.raises(RuntimeError):
        with store.writing(path) as con:
            con.execute("CREATE TABLE t AS SELECT 1 AS x")
            raise RuntimeError("boom")
    assert not path.exists()
    assert path.with_name(path.name + store.PARTIAL).exists()
    with store.writing(path) as con:  # the next writer resumes from the partial file
        assert con.execute("SELECT x FROM t").fetchone() == (1,)
    assert path.exists() and not path.with_name(path.name + store.PARTIAL).exists()


def _reader(path, q):
    # a separate process holding a read-only connection, as the dashboard does
    import duckdb
    con = duckdb.connect(str(path), read_only=True)
    q.put(con.execute("SELECT count(*) FROM t").fetchone()[0])
    q.get()  # wait until the writer has replaced the file
    q.put(con.execute("SELECT count(*) FROM t").fetchone()[0])
    con.close()


def test_reader_keeps_working_while_the_file_is_replaced(tmp_path):
    path = tmp_path / "b.duckdb"
    with store.writing(path) as con:
        con.execute("CREATE TABLE t AS SELECT range AS x FROM range(10)")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_reader, args=(path, q))
    proc.start()
    assert q.get(timeout=60) == 10
    with store.writing(path) as con:  # a rebuild replaces the file whole while the reader holds it open
        con.execute("CREATE TABLE t AS SELECT range AS x FROM range(11)")
    q.put("go")
    assert q.get(timeout=60) == 10  # the open reader still sees its consistent snapshot
    proc.join(timeout=60)
    assert store.query_df(path, "SELECT count(*) AS n FROM t")["n"][0] == 11  # a new reader sees the new file
