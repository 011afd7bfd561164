"""Damaged and forged bm25 index files.

Unlike a vector or key index, a bm25 index has no exact scan to fall back on: a row's score
depends on statistics over every row. So when its file is damaged or forged (valid checksums),
the query that needs it warns (``RuntimeWarning`` naming the index) and then raises
``IndexNotFoundError`` saying how to rebuild it -- never rows ranked by a broken index.
``contains`` and ``LIKE``, which the index only narrows, scan instead and give the exact rows.
``verify`` names the file; ``rebuild_index`` makes the index usable again.
"""

from __future__ import annotations

import dataclasses
import shutil
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
from tensordb.core import index_search
from tensordb.errors import IndexNotFoundError, TensorDBError
from tensordb.indexes import IndexFile
from tensordb.indexes.bm25 import Bm25Index, bm25_params

from .helpers import FIGURES, assert_verify_finds, guarded, scale
from .test_index_files import (
    clear_index_caches,
    damage,
    draw_index_forgery,
    forge_index,
    index_dir,
    kill_during_build,
    listed_index_files,
    packed_values,
    ref_of,
    with_array,
)

ROWS = 800
WORDS = ["fox", "dog", "river", "stone", "quick", "lazy", "the", "and", "running", "runs", "cat", "Fox"]
EXAMPLES = scale(12, 120)
TOPK = "select * order by bm25_similarity(text, 'quick fox') desc limit 10"
#: Filters the index only narrows: with it broken they scan, exactly.
FILTERS = {"select * where contains(text, 'river')": lambda t: "river" in t,
           "select * where text LIKE '%fox run%'": lambda t: "fox run" in t,
           "select * where text NOT LIKE '%dog%'": lambda t: "dog" not in t}


def texts_of(n: int) -> list[str]:
    rng = np.random.default_rng(5)
    return [" ".join(WORDS[int(i)] for i in rng.integers(len(WORDS), size=int(rng.integers(0, 8)))) for _ in range(n)]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("bm25-files") / "ds")
    ds = tensordb.empty(path)
    ds.create_tensor("text", htype="text", max_chunk_size=4096)
    ds.extend({"text": texts_of(ROWS)})
    ds.text.create_index("fts", kind="bm25")
    ds.commit("indexed")
    ds.close()
    return path


@pytest.fixture
def ds_path(source, tmp_path):
    path = str(tmp_path / "ds")
    shutil.copytree(source, path)
    return path


def clear_caches() -> None:
    clear_index_caches()
    index_search.FRESH_SEGMENTS.clear()


def exact_topk(texts: list[str]) -> list[int]:
    index = Bm25Index.build(bm25_params("text", "text", {}), texts)
    s = index.scores(index.query_terms("quick fox"))
    return np.lexsort((np.arange(len(s)), -s))[:10].tolist()


def runtime_warnings(fn: Callable[[], Any]) -> tuple[Any, BaseException | None, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, err = guarded(fn)
    return result, err, [str(w.message) for w in caught if w.category is RuntimeWarning]


def assert_refused_clearly(path: str, key: str) -> None:
    """A warning naming the index, then IndexNotFoundError naming rebuild_index (again on the next query);
    the filters give the exact rows; verify names the index and its file."""
    clear_caches()
    ds = tensordb.load(path, read_only=True)
    _, err, warned = runtime_warnings(lambda: ds.query(TOPK))
    assert warned and all("index 'fts'" in w for w in warned), warned
    assert isinstance(err, IndexNotFoundError), f"{type(err).__name__}: {err}"
    assert "rebuild_index('fts')" in str(err) and "'text'" in str(err), str(err)
    _, err, _ = runtime_warnings(lambda: ds.query("select bm25_similarity(text, 'fox') as s"))
    assert isinstance(err, IndexNotFoundError), f"the second query: {type(err).__name__}: {err}"
    texts = list(ds.text.numpy(aslist=True))
    for tql, holds in FILTERS.items():
        view, err, _ = runtime_warnings(lambda tql=tql: ds.query(tql))
        assert err is None, f"{tql}: {type(err).__name__}: {err}"
        assert view.row_positions.tolist() == [i for i, t in enumerate(texts) if holds(t)], tql
    report, err = guarded(lambda: tensordb.verify(path))
    assert err is None, f"verify raised {type(err).__name__}: {err}"
    assert any("index 'fts'" in p and key in p for p in report.problems), report.problems
    FIGURES["bm25: damaged or forged files refused"] += 1


def test_the_pristine_index_is_used_and_verifies(ds_path):
    clear_caches()
    ds = tensordb.load(ds_path, read_only=True)
    view, err, warned = runtime_warnings(lambda: ds.query(TOPK))
    assert err is None and not warned, (err, warned)
    assert view.row_positions.tolist() == exact_topk(list(ds.text.numpy(aslist=True)))
    assert tensordb.verify(ds_path).ok


@pytest.mark.parametrize("how", ["flip-prefix", "flip-header", "flip-payload", "truncate-half", "truncate-1",
                                 "empty", "delete"])
def test_a_damaged_bm25_file(ds_path, how):
    key = ref_of(ds_path, "fts").key
    damage(ds_path, key, how)
    assert_refused_clearly(ds_path, key)


def test_rebuild_index_repairs_it(ds_path):
    key = ref_of(ds_path, "fts").key
    damage(ds_path, key, "flip-payload")
    clear_caches()
    ds = tensordb.load(ds_path)
    ds.extend({"text": ["quick fox quick"]})  # and a fresh row beside the broken index
    _, err, warned = runtime_warnings(lambda: ds.query(TOPK))
    assert isinstance(err, IndexNotFoundError) and warned
    ds.rebuild_index("fts")
    view, err, warned = runtime_warnings(lambda: ds.query(TOPK))
    assert err is None and not warned, (err, warned)
    assert view.row_positions.tolist() == exact_topk(list(ds.text.numpy(aslist=True)))
    report = ds.verify()  # the commit still lists the damaged file
    assert any(key in p for p in report.problems) and ref_of(ds_path, "fts").key != key


def set_at(a: np.ndarray, i: int, value: Any) -> np.ndarray:
    a = a.copy()
    a[i] = value
    return a


def set_first(a: np.ndarray, value: Any) -> np.ndarray:
    return set_at(a, 0, value)


def keys_of(file: IndexFile, name: str) -> list[str]:
    return msgpack.unpackb(file.arrays[f"{name}_keys"].tobytes(), raw=False)


FORGERIES: dict[str, Callable[[IndexFile], IndexFile]] = {
    "entries+1": lambda f: dataclasses.replace(f, entries=f.entries + 1),
    "entries-0": lambda f: dataclasses.replace(f, entries=0),
    "kind-json": lambda f: dataclasses.replace(f, kind="json"),
    "kind-flat": lambda f: dataclasses.replace(f, kind="flat"),
    "tensor-ghost": lambda f: dataclasses.replace(f, tensor="ghost"),
    "indptr-not-monotone": lambda f: with_array(f, "terms_indptr", set_at(f.arrays["terms_indptr"], 1,
                                                                          f.arrays["terms_indptr"][-1])),
    "indptr-short": lambda f: with_array(f, "terms_indptr", f.arrays["terms_indptr"][:-1]),
    "entry-past-rows": lambda f: with_array(f, "terms_entries", set_first(f.arrays["terms_entries"], ROWS)),
    "entry-negative": lambda f: with_array(f, "words_entries", set_first(f.arrays["words_entries"], -1)),
    "entries-float": lambda f: with_array(f, "terms_entries", f.arrays["terms_entries"].astype(np.float32)),
    "score-nan": lambda f: with_array(f, "terms_scores", set_first(f.arrays["terms_scores"], np.nan)),
    "scores-short": lambda f: with_array(f, "terms_scores", f.arrays["terms_scores"][:-1]),
    "scores-missing": lambda f: with_array(f, "terms_scores", None),
    "words-missing": lambda f: with_array(f, "words_keys", None),
    "keys-duplicate": lambda f: with_array(f, "terms_keys", packed_values(["fox"] * len(keys_of(f, "terms")))),
    "keys-not-strings": lambda f: with_array(f, "words_keys", packed_values(list(range(len(keys_of(f, "words")))))),
    "keys-garbage": lambda f: with_array(f, "terms_keys", np.frombuffer(b"\xc1\xc1", np.uint8)),
    "keys-deep": lambda f: with_array(f, "terms_keys", np.frombuffer(b"\x91" * 100_000 + b"\xc0", np.uint8)),
    "keys-extra-data": lambda f: with_array(f, "terms_keys", np.concatenate([f.arrays["terms_keys"],
                                                                             packed_values([1])])),
    "payload-empty": lambda f: dataclasses.replace(f, payload={}),
    "payload-negative-length": lambda f: dataclasses.replace(f, payload={"average_length": -1.0}),
    "payload-length-text": lambda f: dataclasses.replace(f, payload={"average_length": "3"}),
}


@pytest.mark.parametrize("bind", [False, True], ids=["swapped-in", "state-rebound"])
@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forged_bm25_file(ds_path, forgery, bind):
    key = forge_index(ds_path, "fts", FORGERIES[forgery], bind)
    assert_refused_clearly(ds_path, key)


def test_forged_bm25_files_drawn_by_hypothesis(source, tmp_path):
    """One header field or buffer replaced, dropped or cut, packed with valid checksums. Swapped in: refused
    as above. Rebound: the file may be a valid index saying something else, so any ranking may come back,
    but only a TensorDBError, never another error; after a warning, never rows; verify never raises."""

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data(), st.booleans())
    def check(data, bind):
        path = str(tmp_path / uuid.uuid4().hex)
        shutil.copytree(source, path)
        try:
            drawn = draw_index_forgery(data.draw, path, "fts", bind)
            if drawn is None:
                return
            key, where = drawn
            clear_caches()
            ds = tensordb.load(path, read_only=True)
            view, err, warned = runtime_warnings(lambda: ds.query(TOPK))
            assert err is None or isinstance(err, TensorDBError), f"{where}: {type(err).__name__}: {err}"
            if not bind:
                assert warned and isinstance(err, IndexNotFoundError), f"{where}: {err} {warned}"
            if warned:
                assert isinstance(err, IndexNotFoundError), f"{where}: rows came back after a warning"
            if err is None:
                assert len(view) == 10, where
            assert_verify_finds(path, key, where, expected=not bind)
            FIGURES["bm25: forged files drawn by hypothesis"] += 1
        finally:
            shutil.rmtree(path, ignore_errors=True)

    check()


# -- SIGKILL during a bm25 build ----------------------------------------------------------------------
KILL_ROWS = 40_000


@pytest.fixture(scope="module")
def big_texts(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("bm25-kill") / "ds")
    ds = tensordb.empty(path)
    ds.create_tensor("text", htype="text")
    ds.extend({"text": [f"{t} row{i}" for i, t in enumerate(texts_of(KILL_ROWS))]})
    ds.text.create_index("fts", kind="bm25")
    ds.commit("indexed")
    ds.close()
    return path


@pytest.mark.parametrize("mode, delay", [("timed", 0.05), ("stall", 0)], ids=["mid-build", "file-written"])
def test_sigkill_during_a_bm25_build(big_texts, tmp_path, mode, delay):
    path = str(tmp_path / "ds")
    shutil.copytree(big_texts, path)
    before = tensordb.load(path, read_only=True).indexes
    completed = kill_during_build(path, "bm25", mode, delay)
    ds = tensordb.load(path)
    if completed or ds.indexes != before:  # the build landed before the kill: then it is whole
        assert mode == "timed" and set(ds.indexes) == set(before) | {"fts2"}
    else:
        assert ds.indexes == before
    assert ds.verify().ok
    texts = ds.text.numpy(aslist=True)
    ranked = ds.query("select * order by bm25_similarity(text, 'quick fox') desc limit 10")
    assert [int(r) for r in ranked.row_positions] == exact_topk(texts)
    orphans = index_dir(path) - listed_index_files(path)
    if mode == "stall":
        assert len(orphans) == 1
    ds.vacuum(grace_seconds=0)
    assert index_dir(path) == listed_index_files(path)
    FIGURES["bm25: SIGKILLs during create_index"] += 1
