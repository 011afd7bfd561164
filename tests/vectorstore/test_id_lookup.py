"""VectorStore reads by id and filter: rows_for_ids, rows_where, get, and delete with missing ids."""

from __future__ import annotations

import numpy as np
import pytest

from tensordb import VectorStore
from tensordb.errors import SampleError

DIM = 4


@pytest.fixture
def store(vs_path) -> VectorStore:
    vs = VectorStore(vs_path, overwrite=True)
    vs.add(text=[f"t{i}" for i in range(10)], metadata=[{"even": i % 2 == 0, "i": i} for i in range(10)],
           embedding=np.arange(1, 41, dtype=np.float32).reshape(10, DIM), id=[f"d{i}" for i in range(10)])
    return vs


def test_rows_for_ids_keeps_the_order_asked_each_id_once(store: VectorStore) -> None:
    assert store.rows_for_ids(["d7", "d2", "d7", "d0"]).tolist() == [7, 2, 0]
    assert store.rows_for_ids([]).tolist() == []


def test_rows_for_ids_refuses_or_skips_unknown_ids(store: VectorStore) -> None:
    with pytest.raises(SampleError, match=r"ids not in the store: \['nope'\]"):
        store.rows_for_ids(["d1", "nope"])
    assert store.rows_for_ids(["d1", "nope", "d3"], missing="skip").tolist() == [1, 3]
    with pytest.raises(SampleError, match="missing must be"):
        store.rows_for_ids(["d1"], missing="ignore")
    with pytest.raises(SampleError, match="list of ids, got str"):
        store.rows_for_ids("d1")


def test_rows_for_ids_follows_writes(store: VectorStore) -> None:
    assert store.rows_for_ids(["d5"]).tolist() == [5]
    store.delete(ids=["d0", "d1"])
    assert store.rows_for_ids(["d5"]).tolist() == [3]
    store.add(text=["n"], embedding=[[1.0] * DIM], id=["new"])
    assert store.rows_for_ids(["new", "d9"]).tolist() == [8, 7]


@pytest.mark.parametrize("flt", [{"even": True}, "metadata['even'] == true", lambda row: row["metadata"]["even"]])
def test_rows_where_takes_every_filter_kind(store: VectorStore, flt) -> None:
    assert store.rows_where(flt).tolist() == [0, 2, 4, 6, 8]


def test_get_by_ids_and_filter(store: VectorStore) -> None:
    got = store.get(ids=["d3", "nope", "d4", "d2"])
    assert got == {"text": ["t3", "t4", "t2"], "metadata": [{"even": False, "i": 3}, {"even": True, "i": 4},
                                                             {"even": True, "i": 2}], "id": ["d3", "d4", "d2"]}
    assert store.get(ids=["d3", "d4", "d2"], filter={"even": True}, return_tensors=["id"]) == {"id": ["d4", "d2"]}
    assert store.get(filter="metadata['i'] >= 8", return_tensors=["id"]) == {"id": ["d8", "d9"]}
    assert len(store.get()["id"]) == 10
    with pytest.raises(SampleError):
        store.get(ids=["nope"], missing="error")
    np.testing.assert_array_equal(store.get(ids=["d1"], return_tensors=["embedding"])["embedding"],
                                  [[5.0, 6.0, 7.0, 8.0]])


def test_delete_skips_unknown_ids_only_when_asked(store: VectorStore) -> None:
    with pytest.raises(SampleError, match="delete: ids not in the store"):
        store.delete(ids=["d1", "nope"])
    assert len(store) == 10
    store.delete(ids=["d1", "nope"], missing="skip")
    assert "d1" not in store.dataset.id.numpy(aslist=True) and len(store) == 9


def test_delete_by_ids_and_filter_deletes_rows_matching_both(store: VectorStore) -> None:
    store.delete(ids=["d1", "d2", "d3", "d4"], filter={"even": True})
    assert store.dataset.id.numpy(aslist=True) == ["d0", "d1", "d3", "d5", "d6", "d7", "d8", "d9"]


def test_many_ids_are_looked_up_without_a_query(store: VectorStore) -> None:
    ids = [f"x{i}" for i in range(30_000)]
    store.add(text=ids, embedding=np.ones((len(ids), DIM), dtype=np.float32), id=ids)
    wanted = ids[::-1]
    assert store.get(ids=wanted, return_tensors=["id"])["id"] == wanted
    store.delete(ids=wanted[:29_990])
    assert store.dataset.id.numpy(aslist=True) == [f"d{i}" for i in range(10)] + ids[:10]
