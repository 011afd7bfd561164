"""engine="ray": every query's answer equals the local one (rows, order, ties and scores, bit for bit).

The datasets have small chunks, so the scans really are divided: several units, several parts.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ray_helpers import Above, CrashAlways, CrashOnce, assert_same

import tensordb
from query_lang import TQLError, function_names, parse, plan_query, register_function, unregister_function
from query_lang.distributed import divide
from tensordb.core import ray_engine
from tensordb.core.scan import TableSource
from tensordb.errors import (
    DataCorruptionError,
    MissingExtraError,
    SampleError,
    TensorDBError,
    VersionError,
    WorkerFailedError,
)

ROWS = 1200
DIM = 384  # wide enough for a matrix product to round differently over other batches
WORDS = ["flock", "river", "stone", "light", "night", "grass", "wind", "salt"]


def _fill(ds: tensordb.Dataset, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    embedding = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    embedding[600:640] = embedding[:40]  # equal vectors: equal scores, broken by row
    f = rng.standard_normal(ROWS)
    f[rng.random(ROWS) < 0.05] = np.nan
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(1, 6))) for _ in range(ROWS)]
    ds.create_tensor("embedding", htype="embedding", dtype="float32", max_chunk_size=64 * DIM * 4)  # 64 rows a chunk
    ds.create_tensor("k", dtype="int64", max_chunk_size=1024)
    ds.create_tensor("f", dtype="float64", max_chunk_size=1024)
    ds.create_tensor("text", htype="text")
    ds.create_tensor("meta", htype="json")
    ds.extend({"embedding": embedding, "k": rng.integers(0, 5, ROWS), "f": f, "text": texts,
               "meta": [{"g": f"g{int(i) % 3}", "n": int(i)} for i in range(ROWS)]})
    ds.commit("filled")


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> tensordb.Dataset:
    ds = tensordb.empty(str(tmp_path_factory.mktemp("ray") / "plain"))
    _fill(ds)
    return ds


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> tensordb.Dataset:
    ds = tensordb.empty(str(tmp_path_factory.mktemp("ray") / "indexed"))
    _fill(ds, seed=1)
    ds.embedding.create_index("vectors", kind="hnsw", metric="cosine")
    ds.text.create_index("words", kind="bm25", language="english")
    ds.k.create_index("by_k", kind="scalar")
    ds.meta.create_index("by_group", kind="json", paths=[["g"]])
    return ds


def _vector(seed: int) -> str:
    v = np.random.default_rng(seed).standard_normal(DIM)
    return "ARRAY[" + ", ".join(f"{x:.6f}" for x in v) + "]"


WHERES = st.sampled_from([None, "k = 2", "k > 1 AND f < 0.5", "f IS NULL OR k = 0", "contains(text, 'flock')",
                          "meta['g'] = 'g1'", "row_number() > 900", "k = 9",
                          "row_number() > 100 AND k > 0", "(row_number() < 300 OR row_number() > 700) AND k < 3"])
ORDERS = st.sampled_from([None, "cosine_similarity(embedding, {v}) DESC", "l2_norm(embedding - {v})",
                          "dot(embedding, {v}) DESC", "k", "k DESC, f", "f", "meta['n'] DESC", "text"])
SELECTS = st.sampled_from(["*", "k, f", "text, cosine_similarity(embedding, {v}) AS s, k * 2 AS twice"])
LIMITS = st.sampled_from([None, 0, 1, 5, 50, 5000])
OFFSETS = st.sampled_from([None, 0, 3, 70])


@st.composite
def queries(draw) -> str:
    vector = _vector(draw(st.integers(0, 3)))
    select = draw(SELECTS).format(v=vector)
    where, order = draw(WHERES), draw(ORDERS)
    limit, offset = draw(LIMITS), draw(OFFSETS)
    text = f"SELECT {select}"
    if where:
        text += f" WHERE {where}"
    if order:
        text += " ORDER BY " + order.format(v=vector)
    if limit is not None:
        text += f" LIMIT {limit}"
        if offset is not None:
            text += f" OFFSET {offset}"
    return text


def test_the_scans_really_are_divided(plain):
    """Guards the other tests: a vector top-k over this dataset is cut into as many parts as asked."""
    source = TableSource(plain)
    plan = plan_query(parse(f"SELECT * ORDER BY cosine_similarity(embedding, {_vector(0)}) DESC LIMIT 5"), source)
    ranges = divide(plan, source, 3)
    assert len(ranges) == 3 and ranges[0][0] == 0 and ranges[-1][1] == ROWS
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=queries(), workers=st.sampled_from([2, 3]))
def test_every_query_answers_as_locally(ray_cluster, plain, text, workers):
    assert_same(plain.query(text), plain.query(text, engine="ray", num_workers=workers), text)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(queries(), min_size=2, max_size=6))
def test_a_batch_answers_as_locally(ray_cluster, plain, texts):
    # Top-k searches differing in their vector only share one scan, locally and in every part alike.
    texts += [f"SELECT * WHERE k > 0 ORDER BY cosine_similarity(embedding, {_vector(s)}) DESC LIMIT 9"
              for s in range(3)]
    local = plain.query_batch(texts)
    ray = plain.query_batch(texts, engine="ray", num_workers=3)
    for text, a, b in zip(texts, local, ray, strict=True):
        assert_same(a, b, text)


INDEXED_QUERIES = [
    "SELECT * ORDER BY cosine_similarity(embedding, {v}) DESC LIMIT 10",
    "SELECT * WHERE k = 3 ORDER BY cosine_similarity(embedding, {v}) DESC LIMIT 10",
    "SELECT * ORDER BY bm25_similarity(text, 'flock river') DESC LIMIT 10",
    "SELECT * WHERE meta['g'] = 'g2' ORDER BY bm25_similarity(text, 'night') DESC LIMIT 7 OFFSET 2",
    "SELECT text, bm25_similarity(text, 'salt wind') AS s WHERE k < 3 ORDER BY l2_norm(embedding - {v}) LIMIT 20",
    "SELECT * WHERE k = 1 AND contains(text, 'stone')",
    "SELECT k, meta WHERE meta['g'] = 'g0' ORDER BY k DESC, f LIMIT 30",
]


@pytest.mark.parametrize("template", INDEXED_QUERIES)
def test_indexed_queries_answer_as_locally(ray_cluster, indexed, template):
    text = template.format(v=_vector(5))
    assert_same(indexed.query(text), indexed.query(text, engine="ray", num_workers=2), text)
    exact = indexed.query(text, exact=True)
    assert_same(exact, indexed.query(text, exact=True, engine="ray", num_workers=2), f"exact: {text}")


def test_a_view_and_a_subquery_answer_as_locally(ray_cluster, plain):
    view = plain[np.arange(ROWS - 1, 0, -3)]
    for text in [f"SELECT * WHERE k > 1 ORDER BY cosine_similarity(embedding, {_vector(1)}) DESC LIMIT 8",
                 "SELECT * FROM (SELECT * ORDER BY f LIMIT 300) WHERE k = 2 ORDER BY text DESC LIMIT 9",
                 "SELECT * WHERE k = 4"]:
        assert_same(view.query(text), view.query(text, engine="ray", num_workers=2), text)
        assert_same(plain.query(text), plain.query(text, engine="ray", num_workers=2), text)


def test_a_snapshot_is_read_as_it_was_while_a_writer_commits(ray_cluster, tmp_path):
    ds = tensordb.empty(str(tmp_path / "moving"))
    _fill(ds)
    snapshot = ds.snapshot()
    text = f"SELECT * ORDER BY cosine_similarity(embedding, {_vector(2)}) DESC LIMIT 5"
    before = snapshot.query(text)
    best = int(before.row_positions[0])
    ds.update(best, {"embedding": -ds.embedding[best].numpy()})  # the best row becomes the worst, in place
    ds.extend({"embedding": np.tile(ds.embedding[int(before.row_positions[1])].numpy(), (3, 1)), "k": [0, 0, 0],
               "f": [0.0] * 3, "text": ["x"] * 3, "meta": [{}] * 3})
    ds.commit("moved")
    assert_same(before, snapshot.query(text, engine="ray", num_workers=3), "the snapshot")
    assert best not in ds.query(text, engine="ray", num_workers=3).row_positions  # the head moved on


def test_a_worker_that_dies_is_retried(ray_cluster, plain, tmp_path):
    register_function(CrashOnce(str(tmp_path / "crashed")))
    try:
        text = f"SELECT * WHERE crash_once(k) ORDER BY cosine_similarity(embedding, {_vector(3)}) DESC LIMIT 6"
        ray = plain.query(text, engine="ray", num_workers=3)
        assert (tmp_path / "crashed").exists()  # a worker did die
        assert_same(plain.query(text), ray, text)  # locally the marker exists: nothing dies here
    finally:
        unregister_function("crash_once")


def test_a_worker_that_keeps_dying_fails_the_query_clearly(ray_cluster, plain):
    register_function(CrashAlways())
    try:
        with pytest.raises(WorkerFailedError, match=r"died, and so did its 2 retries"):
            plain.query("SELECT * WHERE crash_always(k) LIMIT 3", engine="ray", num_workers=1)
    finally:
        unregister_function("crash_always")
    assert "crash_always" not in function_names()
    assert len(plain.query("SELECT * WHERE k = 1", engine="ray")) == len(plain.query("SELECT * WHERE k = 1"))


def test_an_s3_dataset_is_read_by_the_workers_themselves(ray_cluster, s3_url, s3_server):
    ds = tensordb.empty(s3_url, creds=s3_server.creds)
    _fill(ds)
    for text in [f"SELECT * WHERE k > 2 ORDER BY cosine_similarity(embedding, {_vector(4)}) DESC LIMIT 10",
                 "SELECT text, f WHERE contains(text, 'wind') ORDER BY f DESC LIMIT 15"]:
        assert_same(ds.query(text), ds.query(text, engine="ray", num_workers=2), text)


def test_errors_inside_a_task_surface_as_themselves(ray_cluster, tmp_path):
    ds = tensordb.empty(str(tmp_path / "damaged"))
    _fill(ds)
    key = ds.snapshot()._state.tensors["f"].chunk_keys[3]  # rows 384..511 of f
    chunk = tmp_path / "damaged" / key
    data = bytearray(chunk.read_bytes())
    data[-5] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(DataCorruptionError) as local:
        ds.query("SELECT * WHERE f > 0")
    with pytest.raises(DataCorruptionError) as ray:
        ds.query("SELECT * WHERE f > 0", engine="ray", num_workers=3)
    assert str(ray.value) == str(local.value)
    with pytest.raises(TQLError, match="Unknown function 'nope'"):  # found by the driver's planning
        ds.query("SELECT * WHERE nope(k)", engine="ray")
    with pytest.raises(TensorDBError, match="mem://"):
        tensordb.empty(f"mem://ray-{uuid.uuid4().hex}").query("SELECT *", engine="ray")


@pytest.mark.parametrize("engine, workers, message", [
    ("spark", None, "engine must be one of"), ("ray", 0, "positive integer"), ("ray", True, "positive integer"),
    ("local", 2, "num_workers applies to engine='ray' only"),
])
def test_a_bad_engine_or_worker_count_is_refused(plain, engine, workers, message):
    with pytest.raises(SampleError, match=message):
        plain.query("SELECT *", engine=engine, num_workers=workers)


def test_without_ray_the_engine_names_the_extra(plain, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    for run in (lambda: plain.query("SELECT * LIMIT 2", engine="ray"), lambda: plain.ray()):
        with pytest.raises(MissingExtraError, match=r'pip install "tensordb\[ray\]"'):
            run()


def test_views_of_the_same_rows_with_other_computed_columns_are_not_confused(ray_cluster, plain):
    # A worker keeps snapshots open between queries; computed columns must not be taken from another view.
    first = plain.with_columns({"w": np.arange(ROWS, dtype=np.float64)})
    second = plain.with_columns({"w": -np.arange(ROWS, dtype=np.float64)})
    text = "SELECT * ORDER BY w DESC LIMIT 3"
    for view in (first, second, first):
        assert_same(view.query(text), view.query(text, engine="ray", num_workers=2), text)


def test_planning_and_workers_read_one_snapshot_while_a_writer_commits(ray_cluster, tmp_path, monkeypatch):
    ds = tensordb.empty(str(tmp_path / "racing"))
    _fill(ds)
    ds.update(slice(0, ROWS), {"k": np.where(np.arange(ROWS) == 5, 7, 0)})
    real = ray_engine.snapshot_address

    def commit_first(table, purpose):  # another writer's commit lands between planning and dispatch
        ds.update(slice(0, ROWS), {"k": np.where(np.arange(ROWS) == 900, 7, 0)})
        return real(table, purpose)

    monkeypatch.setattr(ray_engine, "snapshot_address", commit_first)
    found = ds.query("SELECT k WHERE k = 7", engine="ray", num_workers=2)
    assert found.row_positions.tolist() == [5] and found.k.numpy().tolist() == [7]


def test_a_function_registered_again_is_the_new_one_in_the_workers(ray_cluster, plain):
    text = "SELECT * WHERE above(k)"
    try:
        for bar in (3, 0, 3):
            register_function(Above(bar), replace=True)
            ray = plain.query(text, engine="ray", num_workers=2)
            assert len(ray) == int((plain.k.numpy() > bar).sum()), f"bar {bar}"
            assert_same(plain.query(text), ray, f"bar {bar}")
    finally:
        unregister_function("above")


def test_a_function_that_cannot_travel_is_named_and_spares_other_queries(ray_cluster, plain):
    unpicklable = Above(1)
    unpicklable.lock = threading.Lock()
    register_function(unpicklable)
    try:
        assert_same(plain.query("SELECT * WHERE k = 1"), plain.query("SELECT * WHERE k = 1", engine="ray"), "k")
        with pytest.raises(SampleError, match="the TQL function 'above' cannot be sent to the Ray workers"):
            plain.query("SELECT * WHERE above(k)", engine="ray")
    finally:
        unregister_function("above")


def test_ray_starts_a_local_cluster_when_none_is_running(tmp_path):
    script = f"""
import numpy as np, ray, tensordb
ds = tensordb.empty({str(tmp_path / "auto")!r})
ds.create_tensor("k", dtype="int64", max_chunk_size=1024)
ds.extend({{"k": np.arange(1000)}})
assert not ray.is_initialized()
found = ds.query("SELECT * WHERE k > 500 ORDER BY k DESC LIMIT 4", engine="ray")
assert found.k.numpy().tolist() == [999, 998, 997, 996], found.k.numpy()
print("started", ray.is_initialized())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "started True" in done.stdout, done.stderr[-2000:]


def test_inside_a_with_block_ray_is_refused_and_the_block_still_lands(ray_cluster, tmp_path):
    ds = tensordb.empty(str(tmp_path / "batch"))
    _fill(ds)
    with ds:
        ds.extend({"embedding": np.zeros((2, DIM), np.float32), "k": [9, 9], "f": [0.0, 0.0], "text": ["x", "y"],
                   "meta": [{}, {}]})
        for run in (lambda: ds.query("SELECT * WHERE k = 9", engine="ray"), lambda: ds.ray(["k"])):
            with pytest.raises(VersionError, match="workers read what is published"):
                run()
    assert len(ds) == ROWS + 2
    assert_same(ds.query("SELECT * WHERE k = 9"), ds.query("SELECT * WHERE k = 9", engine="ray"), "after the block")
