"""Index life cycle through the public API: create, describe, rebuild, drop, versions, persistence, errors.

Every refused index operation must leave the dataset exactly as it was: its indexes, its rows,
a query's result and (on disk) its files.
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

import tensordb
from tensordb.core import index_catalog
from tensordb.errors import (
    IndexDefinitionError,
    IndexExistsError,
    IndexNotFoundError,
    ReadOnlyError,
    VersionError,
)
from tensordb.indexes import vector as vector_indexes
from tensordb.storage import open_store

from .helpers import mem_path

DIM = 24
N = 4000
K = 10
VECTOR_KINDS = ("flat", "hnsw", "ivf_pq", "ivf_sq")


@pytest.fixture
def searches(monkeypatch):
    """Every vector index search made, as ``(kind, metric, entries in the index)``."""
    calls: list[tuple[str, str, int]] = []
    original = vector_indexes.VectorIndex.search

    def spy(self, queries, k, allowed=None, params=None):
        calls.append((self.spec.kind, self.spec.metric, self.ntotal))
        return original(self, queries, k, allowed, params)

    monkeypatch.setattr(vector_indexes.VectorIndex, "search", spy)
    return calls


def rows_of(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((30, DIM))
    emb = centers[rng.integers(30, size=n)] + 0.2 * rng.standard_normal((n, DIM))
    return {
        "embedding": emb.astype(np.float32),
        "metadata": [{"group": int(g), "a": {"b": int(g % 7)}} for g in rng.integers(50, size=n)],
        "year": rng.integers(1990, 2020, size=n),
        "text": [f"doc {seed}-{i}" for i in range(n)],
    }


def make_ds(path: str | None = None, n: int = N, seed: int = 0) -> tensordb.Dataset:
    ds = tensordb.empty(path or mem_path("life"), overwrite=True)
    ds.create_tensor("embedding", htype="embedding", dtype="float32")
    ds.create_tensor("metadata", htype="json")
    ds.create_tensor("year", htype="generic", dtype="int64")
    ds.create_tensor("text", htype="text")
    ds.extend(rows_of(n, seed))
    return ds


def arr(q: np.ndarray) -> str:
    return "ARRAY[" + ", ".join(repr(float(x)) for x in q) + "]"


def topk(q: np.ndarray, where: str | None = None) -> str:
    clause = f"where {where} " if where else ""
    return f"select * {clause}order by cosine_similarity(embedding, {arr(q)}) desc limit {K}"


def result(view) -> tuple[list[int], list[float]]:
    return view.row_positions.tolist(), np.asarray(view.score.numpy(), dtype=np.float64).round(6).tolist()


def probe(ds) -> np.ndarray:
    return np.asarray(ds.embedding.numpy()[17], dtype=np.float32) + 0.01


def files_of(path: str) -> list[str] | None:
    if path.startswith("mem://"):
        return None
    if path.startswith("s3://"):
        return open_store(path).list()  # every object under the prefix, less the store's leases
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs
                  if "locks" not in os.path.relpath(d, path).split(os.sep))


def state_of(ds, path: str) -> tuple:
    """What a refused operation must not change."""
    q = probe(ds)
    return (ds.indexes, len(ds), result(ds.query(topk(q))), result(ds.query(topk(q, "metadata['group'] == 3"))),
            files_of(path))


# ------------------------------------------------------------------------------ create, describe, drop


@pytest.mark.parametrize("kind", VECTOR_KINDS)
def test_vector_index_life_cycle(kind, path, searches):
    ds = make_ds(path)
    ds.embedding.create_index("v", kind=kind, metric="l2")
    info = ds.indexes["v"]
    assert info["tensor"] == "embedding" and info["kind"] == kind and info["metric"] == "l2"
    assert (info["rows"], info["fresh_rows"], info["deleted_rows"]) == (N, 0, 0)
    assert info["params"]["dim"] == DIM and info["nbytes"] > 0
    assert ds.embedding.indexes == {"v": {k: v for k, v in info.items() if k != "tensor"}}
    assert ds.metadata.indexes == {}

    ds.extend(rows_of(25, seed=1))
    ds.pop(0)
    info = ds.embedding.indexes["v"]
    assert info["fresh_rows"] >= 25 and info["deleted_rows"] >= 1
    assert info["rows"] + info["fresh_rows"] == len(ds) == N + 24

    ds.embedding.rebuild_index("v")
    again = ds.embedding.indexes["v"]
    assert (again["rows"], again["fresh_rows"], again["deleted_rows"]) == (N + 24, 0, 0)
    assert again["params"] == info["params"] and again["metric"] == "l2"
    q = probe(ds)
    view = ds.query(f"select * order by l2_norm(embedding - {arr(q)}) asc limit {K}")
    assert searches[-1][:2] == (kind, "l2") and searches[-1][2] == N + 24
    assert len(view) == K

    ds.embedding.drop_index("v")
    assert ds.indexes == {} and ds.embedding.indexes == {}
    searches.clear()
    ds.query(f"select * order by l2_norm(embedding - {arr(q)}) asc limit {K}")
    assert searches == []
    ds.embedding.create_index("v", kind=kind)  # the name is free again
    assert ds.indexes["v"]["metric"] == "cosine"


def test_build_parameters_are_reported():
    ds = make_ds()
    ds.embedding.create_index("h", kind="hnsw", metric="ip", M=12, ef_construction=80, ef_search=40)
    ds.embedding.create_index("pq", kind="ivf_pq", metric="COS", nlist=16, m=6, nbits=6, nprobe=4)
    ds.embedding.create_index("sq", kind="ivf_sq", metric="euclidean", nlist=20, qtype="SQ4", nprobe=3)
    got = {name: (i["metric"], i["params"]) for name, i in ds.indexes.items()}
    assert got == {
        "h": ("dot", {"dim": DIM, "M": 12, "ef_construction": 80, "ef_search": 40}),
        "pq": ("cosine", {"dim": DIM, "nlist": 16, "m": 6, "nbits": 6, "nprobe": 4}),
        "sq": ("l2", {"dim": DIM, "nlist": 20, "qtype": "SQ4", "nprobe": 3}),
    }
    ds.embedding.rebuild_index("pq")  # a rebuild keeps every parameter
    assert ds.indexes["pq"]["params"] == got["pq"][1]


@pytest.mark.parametrize("kind", ["json", "scalar"])
def test_key_index_life_cycle(kind, path):
    ds = make_ds(path)
    tensor, params, where = (("metadata", {"paths": ["group", ["a", "b"]]}, "metadata['a']['b'] == 3")
                             if kind == "json" else ("year", {}, "year >= 2015"))
    expected = ds.query(f"select * where {where}").row_positions.tolist()
    ds[tensor].create_index("k", kind=kind, **params)
    info = ds.indexes["k"]
    assert (info["tensor"], info["kind"], info["rows"], info["fresh_rows"], info["deleted_rows"]) == \
        (tensor, kind, N, 0, 0)
    assert "metric" not in info
    assert info["params"] == ({"paths": [["group"], ["a", "b"]]} if kind == "json" else {})
    assert ds.query(f"select * where {where}").row_positions.tolist() == expected

    ds.extend(rows_of(30, seed=2))
    assert ds.indexes["k"]["fresh_rows"] == 30
    assert ds.query(f"select * where {where}").row_positions.tolist() == \
        ds.query(f"select * where {where}", exact=True).row_positions.tolist()
    ds.rebuild_index("k")
    assert (ds.indexes["k"]["rows"], ds.indexes["k"]["fresh_rows"]) == (N + 30, 0)
    ds.drop_index("k")
    assert ds.indexes == {}


def test_dataset_level_names():
    ds = make_ds()
    ds.create_index("embedding", "v", "flat", metric="dot")
    ds.create_index("metadata", "m", "json", paths=["group"])
    assert {n: (i["tensor"], i["kind"]) for n, i in ds.indexes.items()} == \
        {"m": ("metadata", "json"), "v": ("embedding", "flat")}
    ds.rebuild_index("v")
    ds.drop_index("m")
    assert list(ds.indexes) == ["v"]
    with pytest.raises(IndexNotFoundError):
        ds.metadata.drop_index("v")  # another tensor's index


def test_deep_lake_names(searches):
    ds = make_ds()
    ds.embedding.create_vdb_index("hnsw_1", distance="l2_norm",
                                  additional_params={"M": 16, "efConstruction": 64, "efSearch": 32})
    ds.embedding.create_vdb_index("hnsw_2")
    got = {i["id"]: i for i in ds.embedding.get_vdb_indexes()}
    assert set(got) == {"hnsw_1", "hnsw_2"}
    assert got["hnsw_1"]["type"] == "hnsw" and got["hnsw_1"]["distance"] == "l2"
    assert {k: got["hnsw_1"]["additional_params"][k] for k in ("M", "ef_construction", "ef_search")} == \
        {"M": 16, "ef_construction": 64, "ef_search": 32}
    assert got["hnsw_2"]["distance"] == "cosine"
    ds.query(topk(probe(ds)))
    assert searches[-1][:2] == ("hnsw", "cosine")
    ds.embedding.delete_vdb_index("hnsw_2")
    assert [i["id"] for i in ds.embedding.get_vdb_indexes()] == ["hnsw_1"]
    ds.metadata.create_index("m", kind="json", paths=["group"])
    assert [i["id"] for i in ds.embedding.get_vdb_indexes()] == ["hnsw_1"]  # key indexes are not vdb indexes


# ----------------------------------------------------------------------------------------- refusals


REFUSED = {
    "unknown kind": (lambda ds: ds.embedding.create_index("x", kind="annoy"), IndexDefinitionError),
    "unknown parameter": (lambda ds: ds.embedding.create_index("x", kind="hnsw", ef=10), IndexDefinitionError),
    "flat takes no parameter": (lambda ds: ds.embedding.create_index("x", kind="flat", M=8), IndexDefinitionError),
    "bad value": (lambda ds: ds.embedding.create_index("x", kind="hnsw", M=0), IndexDefinitionError),
    "bad value type": (lambda ds: ds.embedding.create_index("x", kind="hnsw", M="8"), IndexDefinitionError),
    "pq m not dividing dim": (lambda ds: ds.embedding.create_index("x", kind="ivf_pq", m=5), IndexDefinitionError),
    "bad qtype": (lambda ds: ds.embedding.create_index("x", kind="ivf_sq", qtype="SQ3"), IndexDefinitionError),
    "nlist above rows": (lambda ds: ds.embedding.create_index("x", kind="ivf_sq", nlist=N + 1),
                         IndexDefinitionError),
    "unknown metric": (lambda ds: ds.embedding.create_index("x", kind="flat", metric="hamming"),
                       IndexDefinitionError),
    "json on a non-json tensor": (lambda ds: ds.text.create_index("x", kind="json", paths=["a"]),
                                  IndexDefinitionError),
    "vector on a text tensor": (lambda ds: ds.text.create_index("x", kind="hnsw"), IndexDefinitionError),
    "vector on a json tensor": (lambda ds: ds.metadata.create_index("x", kind="flat"), IndexDefinitionError),
    "scalar on an embedding": (lambda ds: ds.embedding.create_index("x", kind="scalar"), IndexDefinitionError),
    "scalar with a parameter": (lambda ds: ds.year.create_index("x", kind="scalar", paths=["a"]),
                                IndexDefinitionError),
    "json without paths": (lambda ds: ds.metadata.create_index("x", kind="json"), IndexDefinitionError),
    "json paths=[]": (lambda ds: ds.metadata.create_index("x", kind="json", paths=[]), IndexDefinitionError),
    "json paths='group'": (lambda ds: ds.metadata.create_index("x", kind="json", paths="group"),
                           IndexDefinitionError),
    "json path given twice": (lambda ds: ds.metadata.create_index("x", kind="json", paths=["group", ["group"]]),
                              IndexDefinitionError),
    "bad name": (lambda ds: ds.embedding.create_index("no spaces", kind="flat"), IndexDefinitionError),
    "duplicate name": (lambda ds: ds.embedding.create_index("h", kind="flat"), IndexExistsError),
    "duplicate name, other tensor": (lambda ds: ds.year.create_index("h", kind="scalar"), IndexExistsError),
    "drop unknown": (lambda ds: ds.embedding.drop_index("nope"), IndexNotFoundError),
    "rebuild unknown": (lambda ds: ds.rebuild_index("nope"), IndexNotFoundError),
    "drop unknown, dataset": (lambda ds: ds.drop_index("nope"), IndexNotFoundError),
    "vdb unknown distance": (lambda ds: ds.embedding.create_vdb_index("x", distance="manhattan"),
                             IndexDefinitionError),
    "nprobe on an hnsw-served query": (
        lambda ds: ds.query(topk(probe(ds)), search_params={"nprobe": 8}), IndexDefinitionError),
    "unknown search_params key": (
        lambda ds: ds.query(topk(probe(ds)), search_params={"efSearch": 8}), IndexDefinitionError),
    "search_params not a dict": (
        lambda ds: ds.query(topk(probe(ds)), search_params=[("ef_search", 8)]), IndexDefinitionError),
}


@pytest.fixture(scope="module", params=["local", "memory", "s3"])
def indexed(request, tmp_path_factory):
    """One dataset with an hnsw and a json index, shared by the refusal cases (none may change it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TENSORDB_NUM_THREADS", "1")
        if request.param == "local":
            path = str(tmp_path_factory.mktemp("refusals") / "ds")
        elif request.param == "memory":
            path = mem_path("refusals")
        else:  # the module's own s3:// prefix; the AWS variables and the object cache stay set while it is used
            server = request.getfixturevalue("s3_server")
            for name, value in server.env.items():
                patch.setenv(name, value)
            patch.setenv("TENSORDB_CACHE_DIR", str(tmp_path_factory.mktemp("refusals-cache")))
            path = f"s3://{server.bucket}/refusals-{uuid.uuid4().hex}"
        ds = make_ds(path)
        ds.embedding.create_index("h", kind="hnsw")
        ds.metadata.create_index("m", kind="json", paths=["group"])
        yield ds, path


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_operations_change_nothing(case, indexed):
    ds, path = indexed
    before = state_of(ds, path)
    operation, error = REFUSED[case]
    with pytest.raises(error) as raised:
        operation(ds)
    assert type(raised.value) is error
    assert state_of(ds, path) == before


def test_index_writes_are_refused_inside_with_block():
    ds = make_ds()
    ds.embedding.create_index("h", kind="hnsw")
    before = state_of(ds, "mem://")
    for operation in (lambda: ds.embedding.create_index("x", kind="flat"), lambda: ds.embedding.drop_index("h"),
                      lambda: ds.embedding.rebuild_index("h"), lambda: ds.create_index("year", "y", "scalar")):
        with pytest.raises(VersionError):
            with ds:
                ds.extend(rows_of(3, seed=9))
                operation()
    assert state_of(ds, "mem://") == before  # the whole block is discarded


def test_index_writes_are_refused_on_read_only_handles(path):
    ds = make_ds(path)
    ds.embedding.create_index("h", kind="hnsw")
    first = ds.commit("with h")
    ds.embedding.drop_index("h")
    ds.commit("without h")
    ds.close()

    reader = tensordb.load(path, read_only=True)
    old = tensordb.load(f"{path}@{first}")
    for handle, has_h in ((reader, False), (old, True)):
        before = state_of(handle, path)
        for operation in (lambda h=handle: h.embedding.create_index("x", kind="flat"),
                          lambda h=handle: h.create_index("year", "y", "scalar"),
                          lambda h=handle: h.rebuild_index("h"), lambda h=handle: h.drop_index("h")):
            with pytest.raises((ReadOnlyError, IndexNotFoundError)) as raised:
                operation()
            assert isinstance(raised.value, ReadOnlyError) or not has_h
        assert state_of(handle, path) == before
        assert ("h" in handle.indexes) == has_h

    writer = tensordb.load(path)
    writer.checkout(first)
    before = state_of(writer, path)
    for operation in (lambda: writer.embedding.create_index("x", kind="flat"), lambda: writer.rebuild_index("h"),
                      lambda: writer.drop_index("h")):
        with pytest.raises(ReadOnlyError):
            operation()
    assert state_of(writer, path) == before


# ------------------------------------------------------------------------------- time travel, persistence


def test_old_commits_keep_their_indexes(path, searches):
    ds = make_ds(path)
    ds.embedding.create_index("f", kind="flat")
    q = probe(ds)
    c1 = ds.commit("flat over N rows")
    before = result(ds.query(topk(q)))
    ds.extend({"embedding": q[None, :], "metadata": [{"group": 3}], "year": [2000], "text": ["dup"]})
    ds.embedding.rebuild_index("f")
    c2 = ds.commit("flat over N + 1 rows")
    ds.embedding.drop_index("f")
    ds.year.create_index("y", kind="scalar")
    c3 = ds.commit("no vector index")

    expect = {c1: (N, before), c2: (N + 1, None), c3: (None, None)}
    handles = []
    for commit in (c1, c2, c3):
        ds.checkout(commit)
        handles.append((commit, ds))
        handles.append((commit, tensordb.load(f"{path}@{commit}")))
        for commit_seen, handle in handles[-2:]:
            rows, old_result = expect[commit_seen]
            indexes = handle.indexes
            searches.clear()
            view = handle.query(topk(q))
            assert result(view) == result(handle.query(topk(q), exact=True))
            if rows is None:
                assert "f" not in indexes and searches == []
                assert list(indexes) == ["y"]
            else:
                assert (indexes["f"]["rows"], indexes["f"]["fresh_rows"]) == (rows, 0)
                assert searches == [("flat", "cosine", rows)]
                assert (view.row_positions[0] == N) == (rows == N + 1)
            if old_result is not None:
                assert result(view) == old_result
    ds.checkout("main")
    assert list(ds.indexes) == ["y"]


def test_index_persists_across_close_and_load(path, searches):
    ds = make_ds(path)
    ds.embedding.create_index("h", kind="hnsw", metric="cosine", M=16)
    ds.metadata.create_index("m", kind="json", paths=["group"])
    q = probe(ds)
    texts = [topk(q), topk(q, "metadata['group'] == 3")]
    before = [result(ds.query(t)) for t in texts]
    indexes = ds.indexes
    ds.close()
    index_catalog.LOADED.clear()  # read the index file again, as a new process would

    again = tensordb.load(path)
    assert again.indexes == indexes
    searches.clear()
    assert [result(again.query(t)) for t in texts] == before
    assert searches and searches[0][:2] == ("hnsw", "cosine")
    assert again.verify().ok


def test_branches_have_their_own_indexes(path):
    ds = make_ds(path)
    base = ds.commit("no index")
    ds.checkout("exp", create=True)
    ds.embedding.create_index("h", kind="hnsw")
    ds.commit("hnsw on exp")
    ds.checkout("main")
    assert ds.indexes == {}
    ds.embedding.create_index("h", kind="flat")  # names are unique per version, not across branches
    assert ds.indexes["h"]["kind"] == "flat"
    ds.checkout("exp")
    assert ds.indexes["h"]["kind"] == "hnsw"
    assert tensordb.load(f"{path}@{base}").indexes == {}
