"""Hostile input: bad queries, bad rows, bad training labels and bad paths never corrupt anything.

* TQL: hypothesis text, random and mutated byte strings (decoded with
  ``surrogateescape``), huge literals, 1,000 nested parentheses, NUL bytes → the
  query runs or raises a ``TQLError``, nothing else.
* ``extend``: wrong shapes, dtypes, ragged lists, NaN/Inf embeddings, deeply
  nested JSON, non-JSON metadata, arbitrary Python objects → success, or a
  ``TensorDBError`` naming the tensor, with the dataset (and its files) untouched.
  10 MB strings are valid and read back exactly.
* ``deep_memory.train`` relevance lists → ``SampleError`` before anything is written.
* Paths: attachment names and storage keys with ``..``, absolute paths, NUL,
  newlines → refused. Symlinks inside the dataset directory that lead out of it
  are not followed (reads and writes refuse them); links within it work.
"""

from __future__ import annotations

import math
import os
import random
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensordb
from query_lang.errors import TQLError
from tensordb.errors import SampleError, StorageError, TensorDBError
from tensordb.storage import LocalStore

from .helpers import DIM, FIGURES, LONG, meta_of, scale, text_of, vector

EXAMPLES = scale(300, 3000)
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=not LONG)


def fresh_store(path: str) -> tensordb.VectorStore:
    vs = tensordb.VectorStore(path)
    ds = vs.dataset
    ds.create_tensor("label", htype="class_label")
    ids = [f"d{i}" for i in range(30)]
    ds.extend({"text": [text_of(d, 0) for d in ids], "metadata": [meta_of(d, 0) for d in ids],
               "embedding": np.stack([vector(d, 0) for d in ids]), "id": ids, "label": [i % 3 for i in range(30)]})
    return vs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    vs = fresh_store(str(tmp_path_factory.mktemp("hostile") / "vs"))
    yield vs
    vs.close()


def contents(ds) -> dict:
    return {n: [v.tobytes() if isinstance(v, np.ndarray) else v for v in t.numpy(aslist=True)]
            for n, t in ds.tensors.items()}


# -- TQL ----------------------------------------------------------------------------------------
VALID = [
    "select * where metadata['v'] == 0",
    "select id, text where text like 'd1%' order by id limit 3",
    "select * order by cosine_similarity(embedding, ARRAY[" + ",".join(["0.5"] * DIM) + "]) desc limit 4",
    "select * where label == 1 and (metadata['doc'] == 'd3' or id == 'd4')",
    "select text, l2_norm(embedding) as n where n > 0.1 limit 2 offset 1",
]


def run_tql(ds, query) -> None:
    FIGURES["hostile: TQL inputs fuzzed"] += 1
    try:
        view = ds.query(query)
        len(view)
    except TQLError:
        pass


def mutate(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        pos = rng.randrange(len(chars) + 1)
        if op < 0.4:
            chars.insert(pos, rng.choice(list("()[]'\",.*=<>!%-+ \x00\n") + [chr(rng.randrange(0x110000))]))
        elif op < 0.7 and chars:
            del chars[min(pos, len(chars) - 1)]
        elif chars:
            chars[min(pos, len(chars) - 1)] = rng.choice("()'9x ")
    return "".join(chars)


@SETTINGS
@given(query=st.text(max_size=200))
def test_tql_random_text(store, query):
    run_tql(store.dataset, query)


@SETTINGS
@given(raw=st.binary(max_size=200))
def test_tql_random_bytes_surrogateescape(store, raw):
    run_tql(store.dataset, raw.decode("utf-8", errors="surrogateescape"))


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), base=st.sampled_from(VALID))
def test_tql_mutated_queries(store, seed, base):
    run_tql(store.dataset, mutate(base, random.Random(seed)))


@SETTINGS
@given(raw=st.binary(min_size=1, max_size=60), base=st.sampled_from(VALID), seed=st.integers(0, 1000))
def test_tql_invalid_utf8_inside_valid_queries(store, raw, base, seed):
    pos = random.Random(seed).randrange(len(base))
    run_tql(store.dataset, base[:pos] + raw.decode("utf-8", errors="surrogateescape") + base[pos:])


@pytest.mark.parametrize("query", [
    "select * where " + "(" * 1000 + "label" + ")" * 1000 + " == 1",
    "select * where " + "(" * 1000 + "label == 1",
    "select * where " + "-" * 1000 + "label == 1",
    "select * where " + "not " * 1000 + "label == 1",
    "select * where label == " + "9" * 1_000_000,
    "select * where label == 1e999999",
    "select * where text == '" + "x" * 5_000_000 + "'",
    "select * where text == '" + "'" * 10_001,
    "select * where id == 'a\x00b'",
    "\x00" * 1000,
    "select * order by cosine_similarity(embedding, ARRAY[" + ",".join(["1"] * 100_000) + "]) limit 1",
    "select * where label == " + " + ".join(["1"] * 10_000),
    "select * limit 99999999999999999999999999",
    "select * limit -1",
    "select * where metadata" + "['a']" * 5000 + " == 1",
    "select * where text == '\udcff\udc80'",
    "select " + ", ".join(["id"] * 20_000),
    b"select * where id == '\xff\xfe'".decode("utf-8", "surrogateescape"),
])
def test_tql_extreme_inputs(store, query):
    run_tql(store.dataset, query)


@pytest.mark.parametrize("query", [None, 42, b"select *", ["select *"], object()])
def test_tql_non_string_query(store, query):
    FIGURES["hostile: TQL inputs fuzzed"] += 1
    with pytest.raises((TQLError, TensorDBError)):
        store.dataset.query(query)


# -- extend -------------------------------------------------------------------------------------
class Unserialisable:
    pass


def nested(depth: int):
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def nested_list(depth: int):
    value: object = []
    for _ in range(depth):
        value = [value]
    return value


wild = st.deferred(lambda: st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5), st.binary(max_size=5), st.complex_numbers(),
    st.just(Unserialisable()), st.just({1, 2}), st.just(float("nan")),
    st.lists(wild, max_size=4), st.dictionaries(st.text(max_size=3) | st.integers(), wild, max_size=3),
    st.sampled_from([np.float64, np.int8, np.uint64, np.complex64, np.bool_, np.str_, object]).flatmap(
        lambda dt: st.lists(st.integers(0, 4), max_size=3).map(
            lambda shape: np.zeros(shape, dtype=dt) if dt is not object else np.empty(shape, dtype=object))),
))
embedding_values = st.one_of(
    wild,
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=DIM, max_size=DIM),
    st.lists(st.floats(-1, 1, width=32), min_size=0, max_size=DIM + 3),
    st.integers(0, 3).map(lambda k: np.full((DIM,), [np.nan, np.inf, -np.inf, 1.0][k], np.float32)),
)


def extend_and_check(vs, columns) -> str:
    """Run one extend; on failure, the dataset and its files must be exactly as before."""
    ds = vs.dataset
    before = contents(ds)
    files = set(LocalStore(ds.path).list())
    FIGURES["hostile: extend inputs fuzzed"] += 1
    try:
        ds.extend(columns)
        return "ok"
    except TensorDBError as e:
        message = str(e)
        assert message and len(message) < 2000, f"unclear message: {message[:300]}"
        assert contents(ds) == before, "a failed extend changed the live handle"
        assert contents(tensordb.load(ds.path, read_only=True)) == before, "a failed extend reached the disk"
        assert set(LocalStore(ds.path).list()) == files, "a failed extend left files behind"
        return "refused"


@SETTINGS
@given(data=st.data())
def test_extend_fuzzed_rows(tmp_path_factory, data):
    path = str(tmp_path_factory.mktemp("extend") / "vs")
    vs = fresh_store(path)
    try:
        n = data.draw(st.integers(0, 3), label="rows")
        columns = {
            "text": data.draw(st.lists(st.none() | st.text(max_size=8) | wild, min_size=n, max_size=n), label="text"),
            "metadata": data.draw(st.lists(wild, min_size=n, max_size=n), label="metadata"),
            "embedding": data.draw(st.lists(embedding_values, min_size=n, max_size=n) | wild, label="embedding"),
            "id": data.draw(st.lists(st.text(min_size=1, max_size=5) | wild, min_size=n, max_size=n), label="id"),
            "label": data.draw(st.lists(wild, min_size=n, max_size=n), label="label"),
        }
        if data.draw(st.booleans(), label="drop a column"):
            columns.pop(data.draw(st.sampled_from(sorted(columns))))
        try:
            outcome = extend_and_check(vs, columns)
        except (TypeError, ValueError, OverflowError, RecursionError, AttributeError, KeyError, IndexError) as e:
            if isinstance(e, TensorDBError):
                raise
            raise AssertionError(f"extend raised {type(e).__name__}, not a TensorDBError: {e}") from e
        if outcome == "ok":
            ds = vs.dataset
            assert len({len(t) for t in ds.tensors.values()}) == 1
        assert tensordb.verify(path).ok
    finally:
        vs.close()
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


BAD_COLUMNS = {
    "wrong embedding dimension": {"embedding": [np.zeros(DIM + 1, np.float32)]},
    "2-d embedding": {"embedding": [np.zeros((2, DIM), np.float32)]},
    "ragged embeddings": {"embedding": [[0.1] * DIM, [0.1] * 3]},
    "NaN embedding": {"embedding": [[float("nan")] + [0.0] * (DIM - 1)]},
    "Inf embedding": {"embedding": np.full((1, DIM), np.inf, np.float32)},
    "string embedding": {"embedding": ["0.1, 0.2"]},
    "complex embedding": {"embedding": np.zeros((1, DIM), np.complex64)},
    "object embedding": {"embedding": np.array([[object()] * DIM], dtype=object)},
    "10,000-level JSON": {"metadata": [nested(10_000)]},
    "10,000-level JSON list": {"metadata": [nested_list(10_000)]},
    "100,000-level JSON": {"metadata": [nested(100_000)]},
    "non-JSON metadata": {"metadata": [{"x": Unserialisable()}]},
    "set metadata": {"metadata": [{"x": {1, 2}}]},
    "NaN metadata": {"metadata": [{"x": float("nan")}]},
    "huge int metadata": {"metadata": [{"x": 2**80}]},
    "bytes metadata": {"metadata": [{"x": b"\x00"}]},
    "non-str dict keys": {"metadata": [{(1, 2): 3}]},
    "int text": {"text": [5]},
    "bytes text": {"text": [b"abc"]},
    "None id": {"id": [None]},
    "negative label": {"label": [-1]},
    "huge label": {"label": [2**40]},
    "float label": {"label": [1.5]},
    "rows of different counts": {"text": ["a", "b"]},
    "a str instead of a list": {"text": "abc"},
    "a dict instead of a list": {"metadata": {"a": 1}},
    "a generator": {"text": (t for t in ["a"])},
}


@pytest.mark.parametrize("case", sorted(BAD_COLUMNS))
def test_extend_bad_values_refused(tmp_path, case):
    vs = fresh_store(str(tmp_path / "vs"))
    row = {"text": [text_of("n0", 0)], "metadata": [meta_of("n0", 0)], "embedding": [vector("n0", 0)],
           "id": ["n0"], "label": [1]}
    row.update(BAD_COLUMNS[case])
    assert extend_and_check(vs, row) == "refused"
    try:
        vs.dataset.extend(row)
    except TensorDBError as e:
        assert ("tensor" in str(e) or "extend" in str(e)), f"message does not say where: {e}"
    assert tensordb.verify(vs.dataset.path).ok
    vs.close()


def test_ten_megabyte_strings_round_trip(tmp_path):
    vs = fresh_store(str(tmp_path / "vs"))
    big = "x" * (10 << 20)
    odd = "\udcff" + "é" * (5 << 20)  # lone surrogates are stored (surrogatepass) and read back as given
    vs.dataset.extend({"text": [big, odd], "metadata": [{"big": big}, {}], "embedding": np.ones((2, DIM), np.float32),
                       "id": ["big1", "big2" + big], "label": [0, 1]})
    FIGURES["hostile: extend inputs fuzzed"] += 1
    again = tensordb.load(vs.dataset.path, read_only=True)
    assert again.text[30].numpy() == big and again.text[31].numpy() == odd
    assert again.metadata[30].numpy() == {"big": big} and again.id[31].numpy() == "big2" + big
    assert tensordb.verify(vs.dataset.path).ok
    vs.close()


# -- Deep Memory relevance ----------------------------------------------------------------------
relevance_items = st.one_of(
    wild, st.text(max_size=4), st.sampled_from(["d1", "d2", "nope"]),
    st.tuples(st.sampled_from(["d1", "d2", "x"]) | wild,
              st.floats(allow_nan=True, allow_infinity=True) | st.integers(-3, 3) | st.booleans() | wild),
    st.lists(wild, max_size=3),
)


@settings(max_examples=scale(150, 1500), deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=not LONG)
@given(queries=st.one_of(wild, st.lists(st.text(max_size=6) | wild, max_size=4)),
       relevance=st.one_of(wild, st.lists(st.one_of(wild, st.lists(relevance_items, max_size=3)), max_size=4)))
def test_train_relevance_fuzz(store, queries, relevance):
    FIGURES["hostile: relevance lists fuzzed"] += 1
    ds = store.dataset
    before = ds.list_attachments()
    try:
        job = store.deep_memory.train(queries, relevance, embedding_function=lambda t: np.ones((len(t), DIM)),
                                      max_seconds=0.05)
    except TensorDBError as e:
        assert isinstance(e, SampleError) or "embedding" in str(e), e
        assert ds.list_attachments() == before, "a refused train wrote something"
        return
    # valid input: the job must end and report completed (or failed with a recorded reason)
    status = store.deep_memory.wait(job, timeout=120)["status"]
    assert status in ("completed", "failed"), status
    for name in ds.list_attachments():
        if name not in before:
            ds.delete_attachment(name)
    assert all(isinstance(q, str) for q in queries)
    assert all(math.isfinite(float(s)) for items in relevance for it in items if not isinstance(it, str)
               for s in [it[1]])


# -- paths --------------------------------------------------------------------------------------
BAD_NAMES = ["..", "../x", "a/../../x", "/abs", "a//b", "a/./b", "a\x00b", "a\nb", "abc\n", "a\\..\\b", "", ".",
             "a/..", "~/x", "a b", "\udcff", "x" * 10_000 + "/" + "..", None, 5]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n)[:20] for n in BAD_NAMES])
def test_bad_attachment_names_refused(tmp_path, name):
    root = tmp_path / "ds"
    ds = tensordb.empty(str(root))
    FIGURES["hostile: paths fuzzed"] += 1
    outside = set(os.listdir(tmp_path))
    with pytest.raises((ValueError, TensorDBError)):
        ds.put_attachment(name, {"x": 1})
    with pytest.raises((ValueError, TensorDBError)):
        ds.get_attachment(name)
    with pytest.raises((ValueError, TensorDBError)):
        ds.delete_attachment(name)
    assert ds.list_attachments() == []
    assert set(os.listdir(tmp_path)) == outside
    ds.close()


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "a//b", "./a", "chunks/..", "", "a\x00b"])
def test_bad_storage_keys_refused(tmp_path, key):
    store = LocalStore(str(tmp_path / "root"))
    FIGURES["hostile: paths fuzzed"] += 1
    for call in (lambda: store.put(key, b"x"), lambda: store.get(key), lambda: store.publish(key, b"x"),
                 lambda: store.delete(key), lambda: store.exists(key)):
        with pytest.raises(StorageError):
            call()
    assert not os.path.exists(tmp_path / "x")


def test_symlink_out_of_the_dataset_is_not_followed(tmp_path):
    """Decision: a symlink inside the dataset directory that resolves outside it is refused
    (StorageError) for reading and writing; nothing outside the root is read or written."""
    path = tmp_path / "ds"
    vs = fresh_store(str(path))
    ds = vs.dataset
    ds.put_attachment("notes/a", {"x": 1})
    ds.commit("c")
    expected = contents(ds)
    vs.close()
    outside = tmp_path / "outside"
    outside.mkdir()

    # 1. a chunk file replaced by a link to an (identical) copy outside the root
    chunk = next(p for p in (path / "chunks").iterdir())
    shutil.copy(chunk, outside / chunk.name)
    chunk.unlink()
    chunk.symlink_to(outside / chunk.name)
    with pytest.raises(StorageError, match="outside"):
        contents(tensordb.load(str(path), read_only=True))
    report = tensordb.verify(str(path))
    assert len(report.problems) == 1 and chunk.name in report.problems[0]
    chunk.unlink()
    shutil.copy(outside / chunk.name, chunk)
    assert contents(tensordb.load(str(path), read_only=True)) == expected

    # 2. the attachments directory replaced by a link to a directory outside
    shutil.copytree(path / "attachments", outside / "attachments")
    shutil.rmtree(path / "attachments")
    (path / "attachments").symlink_to(outside / "attachments", target_is_directory=True)
    ds = tensordb.load(str(path))
    with pytest.raises(StorageError, match="outside"):
        ds.get_attachment("notes/a")
    with pytest.raises(StorageError, match="outside"):
        ds.put_attachment("notes/b", {"y": 2})
    assert not (outside / "attachments" / "notes" / "b").exists(), "wrote through a symlink out of the root"
    ds.close()

    # 3. the refs file linked outside: the dataset does not open through it
    os.unlink(path / "attachments")
    shutil.copy(path / "refs", outside / "refs")
    os.unlink(path / "refs")
    (path / "refs").symlink_to(outside / "refs")
    with pytest.raises(StorageError, match="outside"):
        tensordb.load(str(path), read_only=True)
    os.unlink(path / "refs")
    shutil.copy(outside / "refs", path / "refs")

    # 4. links that stay inside the root are fine
    (path / "chunks2").symlink_to(path / "chunks", target_is_directory=True)
    store = LocalStore(str(path))
    assert store.get("chunks2/" + chunk.name) == store.get("chunks/" + chunk.name)
    assert contents(tensordb.load(str(path), read_only=True)) == expected
    FIGURES["hostile: paths fuzzed"] += 5
