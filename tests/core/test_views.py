"""Views (slices, index lists, masks) and copy-on-write row changes."""

from __future__ import annotations

import numpy as np
import pytest

import tensordb
from tensordb.errors import IndexOutOfRangeError, ReadOnlyError

from .helpers import mem_path, snapshot


@pytest.fixture
def ds(path):
    ds = tensordb.empty(path, overwrite=True)
    ds.create_tensor("x", dtype="int64", max_chunk_size=1024)
    ds.create_tensor("t", htype="text", max_chunk_size=1024)
    ds.create_tensor("e", htype="embedding", max_chunk_size=1024)
    ds.extend({
        "x": np.arange(300),
        "t": [f"row {i}" for i in range(300)],
        "e": np.arange(900, dtype="float32").reshape(300, 3),
    })
    return ds


def test_views_read_the_right_rows(ds):
    x = np.arange(300)
    assert ds[10:20].x.numpy().tolist() == x[10:20].tolist()
    assert ds[::7].x.numpy().tolist() == x[::7].tolist()
    assert ds[-5:].t.numpy(aslist=True) == [f"row {i}" for i in range(295, 300)]
    assert ds[::-1].x.numpy().tolist() == x[::-1].tolist()
    idx = [1, 5, 7, 299, 5, -1]
    assert ds[idx].x.numpy().tolist() == x[idx].tolist()
    assert ds[idx].t.numpy(aslist=True) == [f"row {i % 300}" for i in idx]
    assert ds[idx].e.numpy().tolist() == np.arange(900).reshape(300, 3)[idx].tolist()
    mask = x % 3 == 0
    assert ds[mask].x.numpy().tolist() == x[mask].tolist()
    assert len(ds[10:20]) == 10 and len(ds[idx]) == 6
    # views of views
    assert ds[100:200][[0, 50, 99]].x.numpy().tolist() == [100, 150, 199]
    assert ds[100:200][10:20][::3].x.numpy().tolist() == x[110:120:3].tolist()
    assert ds.x[10:20][[0, -1]].numpy().tolist() == [10, 19]
    # single rows
    assert ds[42].x.numpy() == 42
    assert ds[42].t.numpy() == "row 42"
    assert ds.t[7].numpy() == "row 7"
    assert [row.x.numpy() for row in ds[3:6]] == [3, 4, 5]
    assert ds[[]].x.numpy().shape == (0,)


def test_views_are_snapshots(ds):
    view = ds[0:5]
    ds.x[0] = 1000
    ds.pop(1)
    assert view.x.numpy().tolist() == [0, 1, 2, 3, 4]
    assert ds[0:3].x.numpy().tolist() == [1000, 2, 3]


def test_views_are_read_only(ds):
    view = ds[0:5]
    with pytest.raises(ReadOnlyError):
        view.x.append(1)
    with pytest.raises(ReadOnlyError):
        view.x[0] = 1
    with pytest.raises(ReadOnlyError):
        ds[[1, 2]].t.extend(["a"])


def test_index_out_of_range(ds):
    for bad in (300, -301, 10**9):
        with pytest.raises(IndexOutOfRangeError, match="out of range"):
            ds[bad]
        with pytest.raises(IndexOutOfRangeError):
            ds.x[bad]
        with pytest.raises(IndexOutOfRangeError):
            ds.t[bad] = "x"
        with pytest.raises(IndexOutOfRangeError):
            ds.pop(bad)
    with pytest.raises(IndexOutOfRangeError):
        ds[[0, 300]]
    with pytest.raises(IndexOutOfRangeError):
        ds[10:20][10]
    with pytest.raises(IndexOutOfRangeError):
        ds[np.ones(5, bool)]  # mask of the wrong length
    with pytest.raises(IndexOutOfRangeError):
        ds.update([0, 400], {"x": [1, 2]})
    with pytest.raises(IndexOutOfRangeError):
        ds[1.5]
    assert len(ds) == 300
    assert issubclass(IndexOutOfRangeError, IndexError)


def test_pop_from_middle_rewrites_only_that_chunk(ds):
    for name in ("x", "t", "e"):
        assert len(ds._state.tensors[name].chunk_keys) >= 3, name
    before = {n: ds._state.tensors[n] for n in ("x", "t", "e")}
    ds.pop(150)
    for name, old in before.items():
        new = ds._state.tensors[name]
        starts = np.concatenate([[0], np.cumsum(old.chunk_rows)])
        hit = int(np.searchsorted(starts, 150, side="right") - 1)
        assert new.chunk_keys[:hit] == old.chunk_keys[:hit]
        assert new.chunk_keys[hit + 1 :] == old.chunk_keys[hit + 1 :]
        assert new.chunk_keys[hit] != old.chunk_keys[hit]
        assert new.chunk_rows[hit] == old.chunk_rows[hit] - 1
        assert len(new.chunk_keys) == len(old.chunk_keys)
    assert ds.x.numpy().tolist() == [i for i in range(300) if i != 150]
    assert ds.t[150].numpy() == "row 151"


def test_update_rewrites_only_affected_chunks(ds):
    old = ds._state.tensors["x"]
    last = len(old.chunk_keys) - 1
    ds.update([0, 299], {"x": [-1, -2]})
    new = ds._state.tensors["x"]
    assert new.chunk_keys[1:last] == old.chunk_keys[1:last]
    assert new.chunk_keys[0] != old.chunk_keys[0] and new.chunk_keys[last] != old.chunk_keys[last]
    assert new.chunk_rows == old.chunk_rows
    assert ds.x[0].numpy() == -1 and ds.x[299].numpy() == -2
    assert ds._state.tensors["t"] is not None and ds._state.tensors["t"].chunk_keys == ds._state.tensors["t"].chunk_keys


def test_pop_variants(ds):
    ds.pop()
    assert len(ds) == 299 and ds.x[-1].numpy() == 298
    ds.pop(-1)
    assert ds.x[-1].numpy() == 297
    ds.pop([0, 0, 5, 2])  # duplicates are fine
    assert ds.x[0:4].numpy().tolist() == [1, 3, 4, 6]
    ds.pop([])
    assert len(ds) == 295
    assert ds.verify().ok


def test_pop_everything_then_reuse(ds):
    ds.pop(list(range(300)))
    assert len(ds) == 0
    assert ds._state.tensors["x"].chunk_keys == ()
    with pytest.raises(tensordb.SampleError, match="empty"):
        ds.pop()
    ds.extend({"x": [1], "t": ["a"], "e": [[1, 2, 3]]})
    assert snapshot(ds) == snapshot(tensordb.load(ds.path, read_only=True))


def test_batch_rolls_back_on_exception(path):
    ds = tensordb.empty(path, overwrite=True)
    ds.create_tensor("x", max_chunk_size=1024)
    ds.x.extend([1, 2, 3])
    before = snapshot(ds)
    files = ds._store.list()
    refs = ds._store.get("refs")
    with pytest.raises(RuntimeError):
        with ds:
            ds.x.extend([4, 5])
            ds.x[0] = 100
            ds.pop(1)
            assert ds.x.numpy().tolist() == [100, 3, 4, 5]  # visible inside the block
            raise RuntimeError("boom")
    assert snapshot(ds) == before
    assert ds._store.list() == files  # chunks written in the block were removed
    assert ds._store.get("refs") == refs
    assert snapshot(tensordb.load(path, read_only=True)) == before


def test_batch_publishes_once(path, monkeypatch):
    ds = tensordb.empty(path, overwrite=True)
    ds.create_tensor("x", max_chunk_size=1024)
    ds.create_tensor("t", htype="text")
    calls = []
    original = ds._store.swap  # a commit swaps refs: compare-and-swap, as on object storage
    monkeypatch.setattr(ds._store, "swap", lambda k, d, expected: (calls.append(k), original(k, d, expected)))
    ds.extend({"x": [1], "t": ["a"]})
    assert calls == ["refs"]
    calls.clear()
    with ds:
        ds.extend({"x": [2, 3], "t": ["b", "c"]})
        ds.x[0] = 10
        ds.update(1, {"t": "B"})
        ds.pop(2)
        with ds:  # nesting joins the outer batch
            ds.append({"x": 4, "t": "d"})
        assert calls == []
        assert len(tensordb.load(path, read_only=True)) == 1  # nothing visible yet
    assert calls == ["refs"]
    assert snapshot(tensordb.load(path, read_only=True)) == snapshot(ds)
    assert ds.x.numpy().tolist() == [10, 2, 4] and ds.t.numpy(aslist=True) == ["a", "B", "d"]


def test_failed_call_inside_batch_keeps_earlier_calls(path):
    ds = tensordb.empty(path, overwrite=True)
    ds.create_tensor("x", dtype="int8")
    with ds:
        ds.x.extend([1, 2])
        with pytest.raises(tensordb.SampleError):
            ds.x.extend([3, 1000])
        ds.x.append(4)
    assert ds.x.numpy().tolist() == [1, 2, 4]
    assert tensordb.load(path, read_only=True).x.numpy().tolist() == [1, 2, 4]


def test_summary_and_repr():
    ds = tensordb.empty(mem_path())
    ds.create_tensor("emb", htype="embedding", chunk_compression="lz4")
    ds.create_tensor("txt", htype="text")
    ds.extend({"emb": np.ones((2, 4)), "txt": ["a", "b"]})
    text = ds.summary(show=False)
    assert "emb" in text and "embedding" in text and "(2, 4)" in text and "lz4" in text and "txt" in text
    assert "main" in repr(ds)
