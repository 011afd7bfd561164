"""Commits, branches, checkout, log, diff and time travel."""

from __future__ import annotations

import numpy as np
import pytest

import tensordb
from tensordb.errors import ReadOnlyError, VersionError

from .helpers import snapshot


def _ds(path):
    ds = tensordb.empty(path, overwrite=True)
    ds.create_tensor("x", dtype="int32", max_chunk_size=1024)
    ds.create_tensor("t", htype="text", max_chunk_size=1024)
    return ds


def _add(ds, start, n):
    ds.extend({"x": list(range(start, start + n)), "t": [f"r{i}" for i in range(start, start + n)]})


def test_commit_log_and_time_travel(path):
    ds = _ds(path)
    assert ds.commit_id is None and ds.branch == "main"
    assert ds.log(show=False) == []
    _add(ds, 0, 10)
    c1 = ds.commit("first")
    snap1 = snapshot(ds)
    _add(ds, 10, 5)
    ds.x[0] = 99
    c2 = ds.commit("second")
    snap2 = snapshot(ds)
    ds.pop([1, 2])
    working = snapshot(ds)
    log = ds.log(show=False)
    assert [e["commit"] for e in log] == [c2, c1]
    assert [e["message"] for e in log] == ["second", "first"]
    assert log[0]["parent"] == c1 and log[1]["parent"] is None
    assert all(e["branch"] == "main" for e in log)
    assert ds.has_head_changes
    if not path.startswith("mem://"):
        ds.close()
    assert snapshot(tensordb.load(f"{path}@{c1}", read_only=True)) == snap1
    assert snapshot(tensordb.load(f"{path}@{c2}", read_only=True)) == snap2
    assert snapshot(tensordb.load(f"{path}@{c1[:8]}", read_only=True)) == snap1  # unique prefix
    assert snapshot(tensordb.load(f"{path}@main", read_only=True)) == working
    assert snapshot(tensordb.load(path, read_only=True)) == working


def test_log_prints(path, capsys):
    ds = _ds(path)
    ds.commit("hello world")
    ds.log()
    assert "hello world" in capsys.readouterr().out


def test_branches_are_isolated(path):
    ds = _ds(path)
    _add(ds, 0, 5)
    base = ds.commit("base")
    ds.checkout("dev", create=True)
    assert ds.branch == "dev" and ds.commit_id == base
    _add(ds, 100, 3)
    ds.t[0] = "dev-only"
    dev_snap = snapshot(ds)
    ds.commit("dev work")
    ds.checkout("main")
    assert len(ds) == 5 and ds.t[0].numpy() == "r0"
    _add(ds, 200, 1)
    assert ds.branches == ["dev", "main"]
    ds.checkout("dev")
    assert snapshot(ds) == dev_snap
    assert [e["message"] for e in ds.log(show=False)] == ["dev work", "base"]


def test_uncommitted_branch_state_survives_reopen(path):
    ds = _ds(path)
    _add(ds, 0, 4)
    ds.checkout("feature", create=True)
    _add(ds, 4, 4)
    snap = snapshot(ds)
    ds.close()
    again = tensordb.load(f"{path}@feature")
    assert again.branch == "feature" and snapshot(again) == snap
    again.close()
    assert len(tensordb.load(path, read_only=True)) == 4


def test_diff(path):
    ds = _ds(path)
    _add(ds, 0, 10)
    c1 = ds.commit("a")
    _add(ds, 10, 3)
    assert ds.diff() == {"x": {"a": 10, "b": 13, "added": 3}, "t": {"a": 10, "b": 13, "added": 3}}
    c2 = ds.commit("b")
    ds.pop([0, 1, 2, 3])
    assert ds.diff(c1, c2)["x"] == {"a": 10, "b": 13, "added": 3}
    assert ds.diff(c2)["x"] == {"a": 13, "b": 9, "added": -4}
    ds.create_tensor("new")
    assert ds.diff()["new"] == {"a": 0, "b": 0, "added": 0}


def test_checkout_errors(path):
    ds = _ds(path)
    ds.checkout("dev", create=True)
    ds.checkout("main")
    with pytest.raises(VersionError) as info:
        ds.checkout("nope")
    assert "'nope'" in str(info.value) and "dev" in str(info.value) and "main" in str(info.value)
    with pytest.raises(VersionError, match="branches"):
        ds.checkout("abcd1234")  # hex, but no such commit
    with pytest.raises(VersionError, match="already exists"):
        ds.checkout("dev", create=True)
    for bad in ["", "has space", "a/b", "-lead", "x" * 200]:
        with pytest.raises(VersionError, match="invalid branch name"):
            ds.checkout(bad, create=True)
    with pytest.raises(VersionError):
        tensordb.load(f"{path}@nope", read_only=True)
    assert ds.branches == ["dev", "main"]


def test_commit_checkout_is_read_only(path):
    ds = _ds(path)
    _add(ds, 0, 6)
    cid = ds.commit("c")
    _add(ds, 6, 2)
    ds.checkout(cid)
    assert ds.read_only and ds.branch is None and ds.commit_id == cid
    snap = snapshot(ds)
    attempts = [
        lambda: ds.extend({"x": [1], "t": ["a"]}),
        lambda: ds.append({"x": 1, "t": "a"}),
        lambda: ds.x.append(1),
        lambda: ds.x.extend([1, 2]),
        lambda: ds.t.__setitem__(0, "z"),
        lambda: ds.update(0, {"x": 5}),
        lambda: ds.pop(0),
        lambda: ds.pop(),
        lambda: ds.commit("no"),
        lambda: ds.create_tensor("y"),
        lambda: ds.delete_tensor("x"),
        lambda: ds.checkout("newbranch", create=True),
        lambda: ds.vacuum(0),
        lambda: ds.__enter__(),
    ]
    for attempt in attempts:
        with pytest.raises(ReadOnlyError, match=cid):
            attempt()
    assert snapshot(ds) == snap and len(ds) == 6
    ds.checkout("main")
    assert len(ds) == 8
    _add(ds, 8, 1)  # writable again


def test_read_only_open(path):
    ds = _ds(path)
    _add(ds, 0, 3)
    ds.commit("c")
    ro = tensordb.load(path, read_only=True)  # while the writer holds the lock
    assert ro.read_only
    with pytest.raises(ReadOnlyError, match="read-only"):
        ro.x.append(1)
    with pytest.raises(ReadOnlyError):
        ro.commit("x")
    with pytest.raises(ReadOnlyError):
        ro.pop()
    with pytest.raises(ReadOnlyError):
        ro[0:2].x.append(1)
    ds.checkout("dev", create=True)
    ro.checkout("dev")  # reading another branch is fine
    assert len(ro) == 3


def test_commit_and_checkout_inside_batch_are_refused(path):
    ds = _ds(path)
    with ds:
        _add(ds, 0, 2)
        with pytest.raises(VersionError):
            ds.commit("inside")
        with pytest.raises(VersionError):
            ds.checkout("x", create=True)
    assert len(ds) == 2


def test_deepcopy_keeps_history(path, tmp_path):
    ds = _ds(path)
    _add(ds, 0, 20)
    c1 = ds.commit("one")
    ds.checkout("dev", create=True)
    ds.pop(3)
    ds.commit("dev")
    ds.checkout("main")
    _add(ds, 20, 2)
    dest = str(tmp_path / "copy")
    copy = tensordb.deepcopy(path, dest, progress=False)
    assert snapshot(copy) == snapshot(ds)
    assert copy.branches == ["dev", "main"]
    assert [e["commit"] for e in copy.log(show=False)] == [c1]
    copy.checkout("dev")
    assert len(copy) == 19
    copy.checkout(c1)
    assert len(copy) == 20
    assert copy.verify().ok
    copy.close()
    with pytest.raises(tensordb.DatasetExistsError):
        tensordb.deepcopy(path, dest, progress=False)


def test_delete_tensor_is_versioned(path):
    ds = _ds(path)
    _add(ds, 0, 3)
    cid = ds.commit("with t")
    ds.delete_tensor("t")
    assert list(ds.tensors) == ["x"]
    ds.checkout(cid)
    assert list(ds.tensors) == ["x", "t"]


def test_new_branch_from_fresh_dataset_and_empty_commit(path):
    ds = _ds(path)
    c1 = ds.commit("empty")
    c2 = ds.commit("still empty")
    assert c1 != c2
    assert len(tensordb.load(f"{path}@{c1}", read_only=True)) == 0
    assert np.array_equal(ds.x.numpy(), np.zeros(0, "int32"))


def test_loading_an_old_commit_takes_no_lock(tmp_path):
    path = str(tmp_path / "ds")
    ds = tensordb.empty(path)
    ds.create_tensor("t", htype="text")
    ds.t.extend(["a", "b"])
    first = ds.commit("two rows")
    ds.t.append("c")
    old = tensordb.load(f"{path}@{first}")  # the writer still holds the lock
    assert old.read_only and old.t.numpy(aslist=True) == ["a", "b"]
    with pytest.raises(tensordb.LockedError):
        tensordb.load(path)
