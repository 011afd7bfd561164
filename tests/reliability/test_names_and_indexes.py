"""Names and indexes that once slipped through: each gets a typed error and leaves the dataset as it was."""

from __future__ import annotations

import numpy as np
import pytest

import tensordb
from tensordb.errors import IndexOutOfRangeError, InvalidNameError, TensorDBError, VersionError


@pytest.fixture
def ds(tmp_path):
    ds = tensordb.empty(str(tmp_path / "ds"))
    ds.create_tensor("n", htype="generic", dtype="int64")
    ds.extend({"n": [0, 1, 2, 3]})
    yield ds
    ds.close()


@pytest.mark.parametrize(
    "index",
    [
        np.array([2**64 - 1], dtype=np.uint64),
        np.array([2**63], dtype=np.uint64),
        np.uint64(2**64 - 1),
        [4],
        [-5],
    ],
    ids=["uint64-max", "uint64-2**63", "uint64-scalar", "past-the-end", "before-the-start"],
)
def test_pop_out_of_range_index_is_refused(ds, index):
    with pytest.raises(IndexOutOfRangeError, match="out of range for 4 rows"):
        ds.pop(index)
    assert ds.n.numpy().reshape(-1).tolist() == [0, 1, 2, 3]


def test_pop_with_unsigned_index_in_range_deletes_that_row(ds):
    ds.pop(np.array([1], dtype=np.uint64))
    assert ds.n.numpy().reshape(-1).tolist() == [0, 2, 3]


@pytest.mark.parametrize("name", ["../x", "a/b", "x\n", "", "_private", "1st"])
def test_bad_tensor_name_is_a_typed_error(ds, name):
    with pytest.raises(InvalidNameError, match="invalid tensor name") as caught:
        ds.create_tensor(name)
    assert isinstance(caught.value, TensorDBError)
    assert list(ds.tensors) == ["n"]


@pytest.mark.parametrize("name", ["../x", "/abs", "a//b", "x\n", "a/../b", ""])
def test_bad_attachment_name_is_a_typed_error(ds, name):
    with pytest.raises(InvalidNameError, match="invalid attachment name"):
        ds.put_attachment(name, {"a": 1})
    assert ds.list_attachments() == []


@pytest.mark.parametrize("name", ["side\n", "side\r", "-side", "a b", "x" * 129])
def test_branch_name_must_match_whole(ds, name):
    with pytest.raises(VersionError, match="invalid branch name"):
        ds.checkout(name, create=True)
    assert ds.branches == ["main"]
