"""Error types and messages of the public API."""

from __future__ import annotations

import pytest

import tensordb
from tensordb import errors

from .helpers import mem_path


def test_hierarchy():
    for cls in (
        errors.SampleError, errors.TensorNotFoundError, errors.LockedError, errors.ReadOnlyError,
        errors.DataCorruptionError, errors.FormatVersionError, errors.VersionError, errors.DatasetNotFoundError,
        errors.DatasetExistsError, errors.IndexOutOfRangeError, errors.StorageError, errors.KeyNotFoundError,
        errors.TensorExistsError,
    ):
        assert issubclass(cls, errors.TensorDBError)


def test_unknown_tensor_suggests_closest_name():
    ds = tensordb.empty(mem_path())
    ds.create_tensor("embedding", htype="embedding")
    ds.create_tensor("text", htype="text")
    with pytest.raises(errors.TensorNotFoundError) as info:
        ds["embeding"]
    msg = str(info.value)
    assert "'embeding'" in msg and "did you mean 'embedding'" in msg
    with pytest.raises(errors.TensorNotFoundError, match="did you mean 'text'"):
        ds.extend({"txt": ["a"], "embedding": [[1.0]]})
    with pytest.raises(errors.TensorNotFoundError, match="did you mean 'text'"):
        ds[0:0]["texts"]  # views too
    with pytest.raises(errors.TensorNotFoundError) as info:
        ds["zzzzzz"]
    assert "did you mean" not in str(info.value) and "embedding" in str(info.value)
    with pytest.raises(KeyError):  # also a KeyError, for dict-like use
        ds["nope"]
    with pytest.raises(AttributeError):
        _ = ds.nope
    with pytest.raises(errors.TensorNotFoundError):
        ds.delete_tensor("nope")


def test_tensor_exists_and_bad_names():
    ds = tensordb.empty(mem_path())
    ds.create_tensor("x")
    with pytest.raises(errors.TensorExistsError):
        ds.create_tensor("x")
    assert ds.create_tensor("x", exist_ok=True).name == "x"
    for bad in ("1x", "a-b", "_private", ""):
        with pytest.raises(ValueError):
            ds.create_tensor(bad)


def test_dataset_exists_and_not_found(path):
    with pytest.raises(errors.DatasetNotFoundError):
        tensordb.load(path)
    assert not tensordb.exists(path)
    ds = tensordb.empty(path)
    ds.create_tensor("x")
    ds.x.append(1)
    ds.close()
    assert tensordb.exists(path)
    with pytest.raises(errors.DatasetExistsError):
        tensordb.empty(path)
    ds = tensordb.empty(path, overwrite=True)
    assert list(ds.tensors) == []
    ds.close()


def test_a_directory_of_other_files_is_not_a_dataset(tmp_path):
    other = tmp_path / "files"
    other.mkdir()
    (other / "note.txt").write_text("hi")
    with pytest.raises(errors.DatasetExistsError, match="files"):
        tensordb.empty(str(other))
    assert (other / "note.txt").read_text() == "hi"
    with pytest.raises(errors.DatasetNotFoundError):
        tensordb.deepcopy(str(other), str(tmp_path / "copy"), progress=False)


def test_writer_lock_between_handles(tmp_path):
    path = str(tmp_path / "ds")
    ds = tensordb.empty(path)
    with pytest.raises(errors.LockedError, match="read_only=True"):
        tensordb.load(path)
    with pytest.raises(errors.LockedError):
        tensordb.load(path, lock_timeout=0.2)
    with pytest.raises(errors.LockedError):
        tensordb.empty(path, overwrite=True)
    tensordb.load(path, read_only=True)  # readers never wait
    ds.close()
    again = tensordb.load(path)
    again.close()
    again.close()


def test_dataset_helper_creates_or_opens(path):
    ds = tensordb.dataset(path)
    ds.create_tensor("x")
    ds.x.append(5)
    ds.close()
    ds = tensordb.dataset(path)
    assert ds.x.numpy().tolist() == [5]


def test_extend_argument_errors():
    ds = tensordb.empty(mem_path())
    ds.create_tensor("x")
    ds.create_tensor("y")
    with pytest.raises(errors.SampleError, match="'x'.*sequence of rows"):
        ds.extend({"x": 5, "y": 6})
    with pytest.raises(errors.SampleError, match="append expects a dict"):
        ds.append([1, 2])
    with pytest.raises(errors.SampleError, match="row 1 must be a dict"):
        ds.extend([{"x": 1, "y": 1}, 5])
    ds.x.append(1)
    with pytest.raises(errors.SampleError, match="different lengths"):
        ds.extend({"x": [1], "y": [2]})
    with pytest.raises(errors.SampleError, match="more than once"):
        ds.x[[0, 0]] = [1, 2]
    assert ds.x.numpy().tolist() == [1] and len(ds.y) == 0


def test_unsupported_scheme():
    with pytest.raises(errors.StorageError, match="unsupported storage scheme"):
        tensordb.empty("ftp://host/ds")  # s3:// is supported since issue 15
