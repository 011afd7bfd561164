"""Index files under SIGKILL, damage on disk and forgery with valid checksums.

An index is derived data: whatever happens to its file, a query gives exactly the
rows a scan gives, and ``verify`` names what is wrong.

* SIGKILL during ``create_index`` (hnsw over 20k x 32, json): the dataset opens with
  the indexes it had, verifies, answers exactly; the orphan file a kill leaves is
  removed by ``vacuum(0)``, which never removes a file some state lists.
* A damaged index file (flipped bytes, truncated, deleted): the query that would use
  it warns (``RuntimeWarning`` naming the index) and returns the exact-scan rows.
* A forged index file with valid checksums (wrong entries/kind/tensor, foreign faiss
  bytes, key codes out of range, a forged msgpack dictionary), swapped in under an
  unchanged state or with every state rebound to it: a warning and exact rows, and
  ``verify`` reports it.
* A state whose index list is forged: ``DataCorruptionError``, never a crash.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensordb
from tensordb.core import index_catalog, index_search
from tensordb.errors import DataCorruptionError, TensorDBError
from tensordb.format import envelope
from tensordb.format import manifest as mf
from tensordb.indexes import IndexFile, decode_index, encode_index

from .forging import decode, file_of, rebind_index, states_of, write
from .helpers import FIGURES, assert_verify_finds, guarded, scale
from .test_forged_files_property import mutate_buffers, mutate_record

DIM = 16
ROWS = 6000
BIG_ROWS, BIG_DIM = 20_000, 32
EXAMPLES = scale(15, 150)
#: Passes about 5,400 rows: more than core.index_search.EXACT_FILTERED_ROWS, so the filtered index search runs.
WIDE_WHERE = "metadata['group'] < 45"
NARROW_WHERE = "metadata['group'] == 7"


@pytest.fixture(autouse=True)
def one_faiss_thread(monkeypatch):
    monkeypatch.setenv("TENSORDB_NUM_THREADS", "1")


# -- data and exact answers ------------------------------------------------------------------------
def metadata_of(i: int) -> dict[str, Any] | None:
    if i % 101 == 0:
        return None
    return {"group": i % 50, "tag": f"t{i % 7}", "nested": {"k": i % 3}}


def make_dataset(path: str, rows: int, dim: int, indexes: list[tuple[str, str, dict]]) -> np.ndarray:
    """A dataset with ``embedding`` and ``metadata``, the given indexes, committed; returns the embeddings."""
    emb = np.random.default_rng(7).standard_normal((rows, dim)).astype(np.float32)
    ds = tensordb.empty(path)
    ds.create_tensor("embedding", htype="embedding", dtype="float32")
    ds.create_tensor("metadata", htype="json")
    ds.extend({"embedding": emb, "metadata": [metadata_of(i) for i in range(rows)]})
    for tensor, name, spec in indexes:
        ds.create_index(tensor, name, **spec)
    ds.commit("indexed")
    ds.close()
    return emb


def metas_of(rows: int, appended_from: int | None = None) -> list[dict[str, Any] | None]:
    """The metadata of ``rows`` rows; rows from ``appended_from`` on repeat rows 0, 1, ... (appended again)."""
    base = appended_from or rows
    return [metadata_of(i if i < base else i - base) for i in range(rows)]


def passes(where: str | None, metas: list[dict[str, Any] | None]) -> np.ndarray:
    """Which rows a WHERE of this file passes, computed in Python from the rows' values."""
    if where is None:
        return np.ones(len(metas), dtype=bool)
    if where == WIDE_WHERE:
        return np.array([m is not None and m["group"] < 45 for m in metas])
    if where == NARROW_WHERE:
        return np.array([m is not None and m["group"] == 7 for m in metas])
    raise AssertionError(where)


def query_vector(seed: int, dim: int) -> np.ndarray:
    return np.random.default_rng(1000 + seed).standard_normal(dim).astype(np.float32)


def topk_tql(q: np.ndarray, where: str | None = None, k: int = 10) -> str:
    array = ", ".join(repr(float(x)) for x in q)
    where_part = f"where {where} " if where else ""
    return f"select * {where_part}order by cosine_similarity(embedding, ARRAY[{array}]) desc limit {k}"


def exact_topk(emb: np.ndarray, q: np.ndarray, where: str | None = None, k: int = 10,
               metas: list[dict[str, Any] | None] | None = None) -> list[int]:
    """The top ``k`` rows by cosine similarity among those passing ``where``, computed with numpy."""
    e = emb.astype(np.float64)
    scores = (e / np.linalg.norm(e, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    mask = passes(where, metas if metas is not None else metas_of(len(emb)))
    order = np.argsort(-np.where(mask, scores, -np.inf), kind="stable")
    return [int(i) for i in order[: min(k, int(mask.sum()))]]


def exact_where(where: str, metas: list[dict[str, Any] | None]) -> list[int]:
    return [int(i) for i in np.flatnonzero(passes(where, metas))]


def query_rows(ds: Any, tql: str) -> tuple[list[int], list[str]]:
    """The rows a query returns and the RuntimeWarnings it issued; any error other than none fails."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        view, err = guarded(lambda: ds.query(tql))
    assert err is None, f"{tql[:80]}...: {type(err).__name__}: {err}"
    return [int(i) for i in view.row_positions], [str(w.message) for w in caught if w.category is RuntimeWarning]


def clear_index_caches() -> None:
    """Forget loaded indexes and their row mappings: copies of one dataset share index file keys."""
    index_catalog.LOADED.clear()
    index_catalog.COVERAGES.clear()
    index_search.KEY_CODES.clear()


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def listed_index_files(path: str) -> set[str]:
    """Index files listed by the working state and by every commit of every branch."""
    ds = tensordb.load(path, read_only=True)
    keys = {ref.key for ref in ds._state.indexes.values()}
    for branch in ds.branches:
        head = tensordb.load(f"{path}@{branch}", read_only=True)
        keys |= {ref.key for ref in head._state.indexes.values()}
        for entry in head.log(show=False):
            old = tensordb.load(f"{path}@{entry['commit']}", read_only=True)
            keys |= {ref.key for ref in old._state.indexes.values()}
    return keys


def index_dir(path: str) -> set[str]:
    folder = os.path.join(path, "indexes")
    return {f"{mf.INDEX_PREFIX}{name}" for name in os.listdir(folder)} if os.path.isdir(folder) else set()


# -- SIGKILL during create_index -------------------------------------------------------------------
CHILD = r"""
import sys, time
import tensordb
path, kind, mode = sys.argv[1:4]
ds = tensordb.load(path)
if mode == "stall":  # finish writing the index file, then wait to be killed before the state lists it
    store = ds._store
    put = store.put
    def put_then_stall(key, data):
        put(key, data)
        if key.startswith("indexes/"):
            print("W", flush=True)
            time.sleep(120)
    store.put = put_then_stall
print("B", flush=True)
if kind == "hnsw":
    ds.embedding.create_index("vec", kind="hnsw", metric="cosine", M=32, ef_construction=200)
elif kind == "bm25":
    ds.text.create_index("fts2", kind="bm25", language="english")
else:
    ds.metadata.create_index("tag", kind="json", paths=["tag", ["nested", "k"]])
print("D", flush=True)
time.sleep(120)
"""


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("index-crash") / "ds")
    emb = make_dataset(path, BIG_ROWS, BIG_DIM, [("metadata", "meta", {"kind": "json", "paths": ["group"]})])
    return path, emb, tensordb.load(path, read_only=True).indexes


def kill_during_build(path: str, kind: str, mode: str, delay: float) -> bool:
    """Run the child's create_index and SIGKILL it; returns whether the build had completed first."""
    env = {**os.environ, "TENSORDB_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, path, kind, mode], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, text=True)
    try:
        wanted = "W" if mode == "stall" else "B"
        while (line := child.stdout.readline().strip()) != wanted:
            assert line, f"child ended before {wanted!r}: {child.stderr.read()}"
        if mode == "file":  # as soon as a new file appears under indexes/ (the temporary file being written)
            deadline, existing = time.monotonic() + 60, index_dir(path)
            while index_dir(path) == existing and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.0005)
            assert index_dir(path) != existing, "no index file appeared"
        else:
            time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        rest = child.stdout.read()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL, f"the child was not killed: rc {child.returncode}"
    return "D" in rest.split()


@pytest.mark.parametrize("kind, mode, delay", [
    ("hnsw", "timed", 0.05), ("hnsw", "timed", 0.6), ("hnsw", "file", 0), ("hnsw", "stall", 0),
    ("json", "timed", 0.01), ("json", "stall", 0),
], ids=["hnsw-at-start", "hnsw-mid-build", "hnsw-writing-file", "hnsw-file-written", "json-mid-build",
        "json-file-written"])
def test_sigkill_during_create_index(big, tmp_path, kind, mode, delay):
    source, emb, before = big
    path = str(tmp_path / "ds")
    shutil.copytree(source, path)
    completed = kill_during_build(path, kind, mode, delay)
    FIGURES["index: SIGKILLs during create_index"] += 1

    ds = tensordb.load(path)
    new_name = "vec" if kind == "hnsw" else "tag"
    # a 20k x 32 hnsw build takes seconds and a stalled child never finishes: those kills land mid-build
    assert not completed or (kind == "json" and mode == "timed"), "the build finished before the kill"
    if completed:  # the build finished before the kill landed: then it is whole
        assert set(ds.indexes) == set(before) | {new_name}
        assert {k: v for k, v in ds.indexes.items() if k != new_name} == before
    else:
        if ds.indexes != before:  # a kill between the publish and the child's "D" line
            assert set(ds.indexes) == set(before) | {new_name} and mode in ("timed", "file"), ds.indexes
            FIGURES["index: builds found landed after a kill"] += 1
    report = ds.verify()
    assert report.ok, report.problems
    check_exact_queries(ds, emb)

    listed = listed_index_files(path)
    assert listed <= index_dir(path), "a listed index file is missing after the kill"
    orphans = index_dir(path) - listed
    if mode == "stall":
        assert len(orphans) == 1 and ds.indexes == before, (orphans, ds.indexes)
    FIGURES["index: orphan files left by a kill"] += len(orphans)
    removed = ds.vacuum(grace_seconds=0)
    assert removed >= len(orphans)
    assert index_dir(path) == listed, "vacuum(0) must remove exactly the orphans"
    assert ds.verify().ok
    check_exact_queries(ds, emb)
    if kind == "json":  # the name is free again and the build can be redone
        ds.metadata.create_index("tag", kind="json", paths=["tag", ["nested", "k"]])
        assert ds.indexes["tag"]["rows"] == BIG_ROWS and ds.verify().ok


def check_exact_queries(ds: Any, emb: np.ndarray) -> None:
    for seed in range(2):
        q = query_vector(seed, emb.shape[1])
        for where in (None, NARROW_WHERE):
            got, warned = query_rows(ds, topk_tql(q, where))
            assert not warned, warned
            if "vec" not in ds.indexes:  # no vector index: the scan is exact
                assert got == exact_topk(emb, q, where)
    got, warned = query_rows(ds, f"select * where {NARROW_WHERE}")
    assert got == exact_where(NARROW_WHERE, metas_of(len(emb))) and not warned


def test_vacuum_keeps_every_index_file_a_state_lists(tmp_path):
    rows = 1500
    path = str(tmp_path / "ds")
    emb = make_dataset(path, rows, DIM, [("embedding", "old_vec", {"kind": "flat", "metric": "cosine"}),
                                         ("metadata", "meta", {"kind": "json", "paths": ["group"]})])
    ds = tensordb.load(path)
    first = ds.commit_id
    ds.drop_index("old_vec")
    ds.create_index("embedding", "vec", "hnsw", metric="cosine", M=8)
    second = ds.commit("hnsw instead of flat")
    ds.checkout("side", create=True)
    ds.rebuild_index("meta")  # a new file; the old one stays listed by both commits only
    ds.commit("rebuilt on a branch")
    ds.checkout("main")
    ds.drop_index("meta")  # main's working state lists vec only, and has rows the index does not hold
    ds.extend({"embedding": emb[:10], "metadata": [metadata_of(i) for i in range(10)]})
    listed = listed_index_files(path)
    assert len(listed) == 4
    orphan = f"{mf.INDEX_PREFIX}{'0' * 32}"
    shutil.copyfile(file_of(path, sorted(listed)[0]), file_of(path, orphan))
    old = time.time() - 7200
    for key in index_dir(path):
        os.utime(file_of(path, key), (old, old))

    assert ds.vacuum(grace_seconds=0) >= 1
    assert index_dir(path) == listed, "vacuum(0) must remove the orphan and only the orphan"
    assert ds.verify().ok
    clear_index_caches()
    q = query_vector(0, DIM)
    for version, names in [(first, {"old_vec", "meta"}), (second, {"vec", "meta"}), ("side", {"vec", "meta"}),
                           ("main", {"vec"})]:
        view = tensordb.load(f"{path}@{version}", read_only=True)
        assert set(view.indexes) == names, version
        metas = metas_of(len(view), appended_from=rows)
        got, warned = query_rows(view, topk_tql(q))
        assert not warned and len(got) == 10, (version, warned)
        vector_ref = next(ref for ref in view._state.indexes.values() if ref.tensor == "embedding")
        assert index_catalog.LOADED.get((view._store.url, vector_ref.key)) is not None, f"{version}: not loaded"
        if vector_ref.kind == "flat":
            assert got == exact_topk(emb, q), version
        got, warned = query_rows(view, f"select * where {NARROW_WHERE}")
        assert not warned and got == exact_where(NARROW_WHERE, metas), version


# -- damaged and forged index files ----------------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("index-damage") / "ds")
    emb = make_dataset(path, ROWS, DIM, [("embedding", "vec", {"kind": "hnsw", "metric": "cosine", "M": 16}),
                                         ("metadata", "meta", {"kind": "json", "paths": ["group", "tag"]})])
    return path, emb


@pytest.fixture
def ds_path(small, tmp_path):
    path = str(tmp_path / "ds")
    shutil.copytree(small[0], path)
    return path


def ref_of(path: str, name: str) -> mf.IndexRef:
    return tensordb.load(path, read_only=True)._state.indexes[name]


def draw_index_forgery(draw: Callable, path: str, name: str, bind: bool) -> tuple[str, str] | None:
    """Replace, drop or cut one header field or buffer of index ``name``'s file, packed with valid checksums
    (and the states rebound to it when ``bind``): its key and what was done, or None when the drawn value
    cannot be packed or changes nothing."""
    key = ref_of(path, name).key
    original = read_bytes(file_of(path, key))
    meta, buffers, codec = decode(path, key)
    how = mutate_buffers(draw, buffers) if draw(st.booleans()) else mutate_record(draw, meta)
    try:
        forged = write(path, key, meta, buffers, codec)
    except (TypeError, ValueError, OverflowError):  # msgpack cannot pack the drawn value: nothing to test
        return None
    if forged == original:  # the drawn value was the one already there
        return None
    if bind:
        rebind_index(path, key, forged)
    return key, f"{key}: {how}{' (states rebound)' if bind else ''}"


#: Searches that use ``vec`` (with a wide WHERE that ``meta`` answers, too) and ones that use ``meta`` beside ``vec``.
SEARCHES = {
    "vec": [(None, 0), (WIDE_WHERE, 1)],
    "meta": [(NARROW_WHERE, 2), (WIDE_WHERE, 1)],
}


def assert_warns_and_exact(path: str, name: str, emb: np.ndarray, key: str) -> None:
    """The first query that would use index ``name`` warns naming it; every query (WHERE, ORDER BY <similarity>
    LIMIT, both) returns the exact rows; ``verify`` reports a problem naming the index and its file."""
    clear_index_caches()
    ds = tensordb.load(path, read_only=True)
    metas = metas_of(ROWS)
    queries = [(f"select * where {w}", exact_where(w, metas)) for w in (NARROW_WHERE, WIDE_WHERE)]
    queries = queries if name == "meta" else []
    vectors = [(where, query_vector(seed, DIM)) for where, seed in SEARCHES[name]]
    queries += [(topk_tql(q, where), exact_topk(emb, q, where)) for where, q in vectors]
    got, warned = query_rows(ds, queries[0][0])
    assert warned and all(f"index {name!r}" in w for w in warned), f"expected a warning naming {name!r}: {warned}"
    assert got == queries[0][1], f"{name}: wrong rows for {queries[0][0][:60]}"
    report, err = guarded(lambda: tensordb.verify(path))
    assert err is None, f"verify raised {type(err).__name__}: {err}"
    assert any(f"index {name!r}" in p and key in p for p in report.problems), f"verify missed it: {report.problems}"
    for tql, expected in queries[1:]:
        got, warned = query_rows(ds, tql)
        assert all(f"index {name!r}" in w for w in warned), warned
        assert got == expected, f"{name}: wrong rows for {tql[:60]}"
    FIGURES["index: damaged or forged files refused"] += 1


def test_the_pristine_indexes_are_used_and_verify(small, ds_path):
    emb = small[1]
    clear_index_caches()
    ds = tensordb.load(ds_path, read_only=True)
    got, warned = query_rows(ds, f"select * where {NARROW_WHERE}")
    assert got == exact_where(NARROW_WHERE, metas_of(ROWS)) and not warned
    q = query_vector(0, DIM)
    got, warned = query_rows(ds, topk_tql(q))
    assert not warned and len(set(got) & set(exact_topk(emb, q))) >= 8
    for name in ("vec", "meta"):
        assert index_catalog.LOADED.get((ds._store.url, ref_of(ds_path, name).key)) is not None, name
    assert tensordb.verify(ds_path).ok


@pytest.mark.parametrize("where", [NARROW_WHERE, WIDE_WHERE])
def test_a_where_no_key_index_answers_still_filters_the_vector_search(small, ds_path, where):
    """What the damaged json index cases reduce to: a WHERE that no key index answers, beside a vector index."""
    ds = tensordb.load(ds_path)
    ds.drop_index("meta")
    q = small[1][45]  # row 45 is the best match and fails both WHEREs (group 45)
    got, warned = query_rows(ds, topk_tql(q, where))
    assert not warned and len(got) == 10
    assert passes(where, metas_of(ROWS))[got].all(), f"rows that fail {where!r} came back: {got}"
    if where == NARROW_WHERE:  # <= 4096 rows pass: scored exactly
        assert got == exact_topk(small[1], q, where)


def flip(data: bytearray, positions: list[int]) -> None:
    for p in positions:
        data[p] ^= 0x5A


def damage(path: str, key: str, how: str) -> None:
    file = file_of(path, key)
    data = bytearray(read_bytes(file))
    payload = envelope.read_header(lambda s, n: bytes(data[s : s + n]), key, envelope.MAGIC_INDEX).payload_start
    rng = np.random.default_rng(len(how))
    if how == "delete":
        os.unlink(file)
        return
    if how == "flip-prefix":
        flip(data, [envelope.PREFIX.size - 1])  # the header checksum the state records
    elif how == "flip-header":
        flip(data, [int(rng.integers(envelope.PREFIX.size, payload))])
    elif how == "flip-payload":
        flip(data, sorted(int(p) for p in rng.integers(payload, len(data), 3)))
    elif how == "truncate-half":
        del data[len(data) // 2 :]
    elif how == "truncate-1":
        del data[-1:]
    elif how == "empty":
        data.clear()
    with open(file, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("how", ["flip-prefix", "flip-header", "flip-payload", "truncate-half", "truncate-1",
                                 "empty", "delete"])
@pytest.mark.parametrize("name", ["vec", "meta"])
def test_a_damaged_index_file(small, ds_path, name, how):
    key = ref_of(ds_path, name).key
    damage(ds_path, key, how)
    assert_warns_and_exact(ds_path, name, small[1], key)


def test_a_damaged_index_warns_through_query_batch(small, ds_path):
    key = ref_of(ds_path, "vec").key
    damage(ds_path, key, "flip-payload")
    clear_index_caches()
    ds = tensordb.load(ds_path, read_only=True)
    queries = [query_vector(s, DIM) for s in range(3)]
    with pytest.warns(RuntimeWarning, match="index 'vec'"):
        views = ds.query_batch([topk_tql(q) for q in queries])
    assert [[int(i) for i in v.row_positions] for v in views] == [exact_topk(small[1], q) for q in queries]


# -- forged index files with valid checksums -------------------------------------------------------
def other_faiss(rows: int, dim: int, kind: str = "hnsw") -> np.ndarray:
    """The faiss bytes of a genuine index of other rows, dimension or kind."""
    vector = index_catalog.vector_module()
    spec = vector.VectorIndexSpec(kind, "cosine", dim, {"M": 16, "ef_construction": 40, "ef_search": 16}
                                  if kind == "hnsw" else {})
    data = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)
    return vector.build_vector_index(spec, data).to_bytes()


def packed_values(values: Any) -> np.ndarray:
    return np.frombuffer(msgpack.packb(values, use_bin_type=True), dtype=np.uint8)


def dictionary(file: IndexFile) -> list[Any]:
    """The genuine distinct values of a json index's first key."""
    return msgpack.unpackb(file.arrays["values_0"].tobytes(), raw=False)


def with_array(file: IndexFile, name: str, array: np.ndarray | None) -> IndexFile:
    arrays = dict(file.arrays)
    if array is None:
        del arrays[name]
    else:
        arrays[name] = array
    return dataclasses.replace(file, arrays=arrays)


def codes(file: IndexFile, change: Callable[[np.ndarray], np.ndarray]) -> IndexFile:
    return with_array(file, "codes_0", change(file.arrays["codes_0"].copy()))


def set_first(a: np.ndarray, value: int) -> np.ndarray:
    a[0] = value
    return a


FORGERIES: dict[str, tuple[str, Callable[[IndexFile], IndexFile]]] = {
    # what the file says it is, against the state
    "entries+1": ("vec", lambda f: dataclasses.replace(f, entries=f.entries + 1)),
    "entries-0": ("meta", lambda f: dataclasses.replace(f, entries=0)),
    "entries-huge": ("vec", lambda f: dataclasses.replace(f, entries=10**12)),
    "kind-flat": ("vec", lambda f: dataclasses.replace(f, kind="flat")),
    "kind-scalar": ("meta", lambda f: dataclasses.replace(f, kind="scalar")),
    "tensor-other": ("vec", lambda f: dataclasses.replace(f, tensor="metadata")),
    "tensor-ghost": ("meta", lambda f: dataclasses.replace(f, tensor="ghost")),
    # faiss bytes
    "faiss-random": ("vec", lambda f: with_array(f, "faiss", np.random.default_rng(1).integers(
        0, 256, len(f.arrays["faiss"]), dtype=np.uint8))),
    "faiss-half": ("vec", lambda f: with_array(f, "faiss", f.arrays["faiss"][: len(f.arrays["faiss"]) // 2])),
    "faiss-empty": ("vec", lambda f: with_array(f, "faiss", np.empty(0, np.uint8))),
    "faiss-missing": ("vec", lambda f: with_array(f, "faiss", None)),
    "faiss-as-int32": ("vec", lambda f: with_array(f, "faiss", f.arrays["faiss"][: len(f.arrays["faiss"]) // 4 * 4]
                                                   .view(np.int32))),
    "faiss-other-rows": ("vec", lambda f: with_array(f, "faiss", other_faiss(100, DIM))),
    "faiss-other-dim": ("vec", lambda f: with_array(f, "faiss", other_faiss(ROWS, 8))),
    "faiss-flat-bytes": ("vec", lambda f: with_array(f, "faiss", other_faiss(ROWS, DIM, "flat"))),
    # key codes
    "codes-past-dictionary": ("meta", lambda f: codes(f, lambda c: set_first(c, 10**6))),
    "codes-below-unindexed": ("meta", lambda f: codes(f, lambda c: set_first(c, -2))),
    "codes-short": ("meta", lambda f: codes(f, lambda c: c[:-1])),
    "codes-float": ("meta", lambda f: codes(f, lambda c: c.astype(np.float32))),
    "codes-2d": ("meta", lambda f: codes(f, lambda c: c.reshape(2, -1))),
    "codes-missing": ("meta", lambda f: with_array(f, "codes_0", None)),
    # the msgpack dictionary of a json key
    "dictionary-garbage": ("meta", lambda f: with_array(f, "values_0", np.frombuffer(b"\xc1\xc1", np.uint8))),
    "dictionary-map": ("meta", lambda f: with_array(f, "values_0", packed_values({"a": 1}))),
    "dictionary-nested": ("meta", lambda f: with_array(f, "values_0", packed_values([[1], {"a": 2}]))),
    "dictionary-deep": ("meta", lambda f: with_array(f, "values_0", np.frombuffer(b"\x91" * 100_000 + b"\xc0",
                                                                                  np.uint8))),
    "dictionary-extra-data": ("meta", lambda f: with_array(f, "values_0", np.concatenate(
        [f.arrays["values_0"], packed_values([1])]))),
    "dictionary-truncated": ("meta", lambda f: with_array(f, "values_0", f.arrays["values_0"][:-1])),
    "dictionary-too-short": ("meta", lambda f: with_array(f, "values_0", packed_values([0, 1, 2]))),
    # as many values as the genuine dictionary, of types no JSON value has
    "dictionary-ext-type": ("meta", lambda f: with_array(f, "values_0", np.frombuffer(msgpack.packb(
        [msgpack.ExtType(1, b"x")] * len(dictionary(f))), np.uint8))),
    "dictionary-bytes": ("meta", lambda f: with_array(f, "values_0", packed_values(
        [str(v).encode() for v in dictionary(f)]))),
    # the payload that lays the keys out
    "payload-no-keys": ("meta", lambda f: dataclasses.replace(f, payload={})),
    "payload-unknown-encoding": ("meta", lambda f: dataclasses.replace(
        f, payload={"keys": [dict(k, values="pickle") for k in f.payload["keys"]]})),
    "payload-path-not-names": ("meta", lambda f: dataclasses.replace(
        f, payload={"keys": [dict(k, path=[1, None]) for k in f.payload["keys"]]})),
    "payload-more-keys": ("meta", lambda f: dataclasses.replace(
        f, payload={"keys": f.payload["keys"] + [{"path": ["x"], "values": "array"}]})),
}


def forge_index(path: str, name: str, edit: Callable[[IndexFile], IndexFile], bind: bool) -> str:
    """Decode index ``name``'s file, apply ``edit``, encode it again with valid checksums; returns its key."""
    key = ref_of(path, name).key
    file = decode_index(read_bytes(file_of(path, key)), key)
    data = b"".join(encode_index(edit(file)))
    with open(file_of(path, key), "wb") as f:
        f.write(data)
    if bind:
        rebind_index(path, key, data)
        assert ref_of(path, name).checksum == envelope.header_checksum(data)
    return key


@pytest.mark.parametrize("bind", [False, True], ids=["swapped-in", "state-rebound"])
@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forged_index_file(small, ds_path, forgery, bind):
    name, edit = FORGERIES[forgery]
    key = forge_index(ds_path, name, edit, bind)
    assert_warns_and_exact(ds_path, name, small[1], key)


# -- forged index lists in a state -----------------------------------------------------------------
def state_record(path: str) -> tuple[str, dict[str, Any]]:
    key = tensordb.load(path, read_only=True)._checkout.state_key
    record, version = envelope.unpack_versioned_record(read_bytes(file_of(path, key)), key,
                                                       envelope.MAGIC_STATE)
    assert version == 3
    return key, record


def entry(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in record["indexes"] if e["name"] == name)


STATE_FORGERIES: dict[str, Callable[[dict[str, Any]], None]] = {
    "file-in-chunks": lambda r: entry(r, "vec").update(key=entry(r, "vec")["chunk_keys"][0]),
    "file-in-states": lambda r: entry(r, "vec").update(key="states/" + "0" * 32),
    "file-dotdot": lambda r: entry(r, "vec").update(key="indexes/../refs"),
    "file-absolute": lambda r: entry(r, "vec").update(key="/etc/passwd"),
    "chunk-outside": lambda r: entry(r, "meta").update(chunk_keys=["states/x"] * len(entry(r, "meta")["chunk_keys"])),
    "tensor-not-held": lambda r: entry(r, "vec").update(tensor="ghost"),
    "duplicate-name": lambda r: r["indexes"].append(dict(entry(r, "vec"))),
    "duplicate-name-other-tensor": lambda r: r["indexes"].append(dict(entry(r, "meta"), name="vec")),
    "negative-rows": lambda r: entry(r, "vec").update(chunk_rows=[-1] * len(entry(r, "vec")["chunk_rows"])),
    "zero-rows": lambda r: entry(r, "vec").update(chunk_rows=[0] * len(entry(r, "vec")["chunk_rows"])),
    "negative-size": lambda r: entry(r, "vec").update(nbytes=-1),
    "negative-checksum": lambda r: entry(r, "meta").update(checksum=-5),
    "bool-size": lambda r: entry(r, "vec").update(nbytes=True),
    # chunks are immutable: an index cannot have seen another number of rows in a chunk than the tensor lists
    "rows-differ-from-tensor": lambda r: entry(r, "meta").update(
        chunk_rows=entry(r, "meta")["chunk_rows"][:-1] + [entry(r, "meta")["chunk_rows"][-1] + 50]),
    "rows-and-keys-differ": lambda r: entry(r, "vec").update(chunk_rows=entry(r, "vec")["chunk_rows"] + [1]),
    "name-not-text": lambda r: entry(r, "vec").update(name=5),
    "params-not-map": lambda r: entry(r, "vec").update(params=[1, 2]),
    "missing-field": lambda r: entry(r, "vec").pop("chunk_keys"),
    "entry-not-map": lambda r: r["indexes"].append([1, 2, 3]),
    "list-not-list": lambda r: r.update(indexes={"vec": 1}),
    "list-missing": lambda r: r.pop("indexes"),
}


@pytest.mark.parametrize("forgery", sorted(STATE_FORGERIES))
def test_a_forged_index_list_in_a_state(ds_path, forgery):
    key, record = state_record(ds_path)
    STATE_FORGERIES[forgery](record)
    data = envelope.pack_record(envelope.MAGIC_STATE, record)
    _, err = guarded(lambda: mf.decode_state(data, key))
    assert isinstance(err, DataCorruptionError) and key in str(err), f"{forgery}: {type(err).__name__}: {err}"
    with open(file_of(ds_path, key), "wb") as f:
        f.write(data)
    _, err = guarded(lambda: tensordb.load(ds_path, read_only=True).indexes)
    assert isinstance(err, DataCorruptionError) and key in str(err), f"{forgery}: {type(err).__name__}: {err}"
    report, err = guarded(lambda: tensordb.verify(ds_path))
    assert err is None and any(key in p for p in report.problems), (err, report.problems)
    FIGURES["index: forged index lists refused"] += 1
    assert all(isinstance(s, str) for s in states_of(ds_path))


def test_an_index_that_claims_more_rows_of_a_chunk_than_the_tensor_has(small, ds_path):
    """State and file forged together, consistently: the index says the last chunk has 50 rows more."""
    ref = ref_of(ds_path, "meta")
    extra = 50

    def more_rows(file: IndexFile) -> IndexFile:
        arrays = {name: np.concatenate([a, np.zeros(extra, a.dtype)]) if name.startswith("codes_") else a
                  for name, a in file.arrays.items()}
        return dataclasses.replace(file, entries=file.entries + extra, arrays=arrays)

    forge_index(ds_path, "meta", more_rows, bind=True)
    for key in states_of(ds_path):
        state = mf.decode_state(read_bytes(file_of(ds_path, key)), key)
        rows = ref.chunk_rows[:-1] + (ref.chunk_rows[-1] + extra,)
        indexes = {n: dataclasses.replace(r, chunk_rows=rows) if n == "meta" else r for n, r in state.indexes.items()}
        with open(file_of(ds_path, key), "wb") as f:
            f.write(mf.encode_state(state.with_indexes(indexes)))
    clear_index_caches()
    view, err = guarded(lambda: tensordb.load(ds_path, read_only=True).query(f"select * where {NARROW_WHERE}"))
    assert err is None or isinstance(err, DataCorruptionError), f"{type(err).__name__}: {err}"
    if err is None:
        assert [int(i) for i in view.row_positions] == exact_where(NARROW_WHERE, metas_of(ROWS))


def test_vacuum_refuses_while_a_state_index_list_is_forged(ds_path):
    ds = tensordb.load(ds_path)
    commit = ds.commit_id
    ds.extend({"embedding": np.ones((1, DIM), np.float32), "metadata": [None]})  # a new working state
    key = tensordb.load(f"{ds_path}@{commit}", read_only=True)._checkout.state_key
    record, _ = envelope.unpack_versioned_record(read_bytes(file_of(ds_path, key)), key, envelope.MAGIC_STATE)
    entry(record, "vec").update(key="indexes/../refs")
    with open(file_of(ds_path, key), "wb") as f:
        f.write(envelope.pack_record(envelope.MAGIC_STATE, record))
    before = index_dir(ds_path)
    with pytest.raises(TensorDBError, match="vacuum refused") as refused:
        ds.vacuum(grace_seconds=0)
    assert key in str(refused.value)
    assert index_dir(ds_path) == before


# -- forged index files drawn by hypothesis --------------------------------------------------------
@pytest.mark.parametrize("name", ["vec", "meta"])
def test_forged_index_files_drawn_by_hypothesis(small, tmp_path, name):
    """One header field or buffer of an index file replaced, dropped, cut (as the property test does for the
    other kinds of file), packed with valid checksums; swapped in, or with the states rebound to it.

    Swapped in: a warning and the exact rows, and verify names the file. Rebound: the file may be a valid index
    saying something else, so any rows may come back, but never an error that is not a TensorDBError; whenever
    the query warned, its rows are the exact ones; verify never raises."""
    source, emb = small
    q = query_vector(0, DIM)
    tql, expected = ((topk_tql(q), exact_topk(emb, q)) if name == "vec"
                     else (f"select * where {NARROW_WHERE}", exact_where(NARROW_WHERE, metas_of(ROWS))))

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data(), st.booleans())
    def check(data, bind):
        path = str(tmp_path / uuid.uuid4().hex)
        shutil.copytree(source, path)
        try:
            drawn = draw_index_forgery(data.draw, path, name, bind)
            if drawn is None:
                return
            key, where = drawn
            clear_index_caches()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                view, err = guarded(lambda: tensordb.load(path, read_only=True).query(tql))
            assert err is None or isinstance(err, TensorDBError), f"{where}: {type(err).__name__}: {err}"
            warned = [str(w.message) for w in caught if w.category is RuntimeWarning]
            if not bind:
                assert err is None and warned, f"{where}: {err} {warned}"
            if err is None and warned:
                assert [int(i) for i in view.row_positions] == expected, f"{where}: wrong rows after a warning"
            assert_verify_finds(path, key, where, expected=not bind)
            FIGURES["index: forged files drawn by hypothesis"] += 1
        finally:
            shutil.rmtree(path, ignore_errors=True)

    check()
