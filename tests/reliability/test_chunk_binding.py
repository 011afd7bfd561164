"""A state's chunk references bind each chunk's content: a genuine chunk file copied over another is caught.

Copying one valid chunk of a tensor over another leaves every checksum valid. Each
reference in a state carries the chunk's header checksum and row count, so every
read path (the fixed fast path, per-row reads, queries, copy-on-write edits) and
``verify`` raise or report ``DataCorruptionError`` naming the tensor and the chunk,
whether the two files differ in size or not; none returns another chunk's rows.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import tensordb
from tensordb.errors import DataCorruptionError

ROWS = 200  # 1024-byte chunks: 32-byte rows 32 to a chunk, text rows 64 to a chunk
QUERIES = {
    "embedding": "select * order by cosine_similarity(embedding, ARRAY[1, 0, 0, 0, 0, 0, 0, 0]) desc limit 5",
    "label": "select * where any(label >= 0)",
    "text": "select * where text != 'none'",
}


def _rows(n: int) -> dict:
    rng = np.random.default_rng(7)
    return {
        "embedding": rng.standard_normal((n, 8)).astype(np.float32),
        "label": np.arange(4 * n, dtype=np.int64).reshape(n, 4),
        "text": [f"row {i:04d}" for i in range(n)],  # one length: chunks of equal row counts have equal sizes
    }


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("binding") / "ds")
    ds = tensordb.empty(path)
    ds.create_tensor("embedding", htype="embedding", dtype="float32", max_chunk_size=1024)
    ds.create_tensor("label", htype="generic", dtype="int64", max_chunk_size=1024)
    ds.create_tensor("text", htype="text", max_chunk_size=1024)
    ds.extend(_rows(ROWS))
    ds.commit("rows")
    ds.close()
    return path


def _chunk_files(path: str, tensor: str) -> list[tuple[str, str]]:
    ds = tensordb.load(path, read_only=True)
    keys = ds._state.tensors[tensor].chunk_keys
    return [(key, os.path.join(path, *key.split("/"))) for key in keys]


def _copy_over(path: str, tensor: str, same_size: bool) -> str:
    """Copy one chunk of ``tensor`` over another (of the same size, or not); returns the overwritten key."""
    files = _chunk_files(path, tensor)
    sizes = [os.path.getsize(f) for _, f in files]
    if same_size:
        source, target = next((i, j) for i in range(len(files)) for j in range(len(files))
                              if i != j and sizes[i] == sizes[j])
        assert open(files[source][1], "rb").read() != open(files[target][1], "rb").read()
    else:
        source, target = next((i, j) for i in range(len(files)) for j in range(len(files)) if sizes[i] != sizes[j])
    shutil.copyfile(files[source][1], files[target][1])
    return files[target][0]


def _assert_names(err: pytest.ExceptionInfo, tensor: str, key: str) -> None:
    text = str(err.value)
    assert f"tensor {tensor!r}" in text and key in text, text


@pytest.mark.parametrize("same_size", [True, False], ids=["same-size", "other-size"])
@pytest.mark.parametrize("tensor", ["embedding", "label", "text"])
def test_copied_chunk_is_caught_on_every_read_path(pristine, tmp_path, tensor, same_size):
    path = str(tmp_path / "ds")
    shutil.copytree(pristine, path)
    key = _copy_over(path, tensor, same_size)
    ds = tensordb.load(path, read_only=True)
    column = ds[tensor]
    with pytest.raises(DataCorruptionError) as err:
        column.numpy()
    _assert_names(err, tensor, key)
    with pytest.raises(DataCorruptionError) as err:
        column.numpy(aslist=True)
    _assert_names(err, tensor, key)
    with pytest.raises(DataCorruptionError) as err:
        [column[i].numpy() for i in range(ROWS)]
    _assert_names(err, tensor, key)
    with pytest.raises(DataCorruptionError) as err:
        view = ds.query(QUERIES[tensor])
        view[tensor].numpy(aslist=True)
    _assert_names(err, tensor, key)
    report = tensordb.verify(path)
    assert len(report.problems) == 1, report.problems
    assert key in report.problems[0] and f"tensor {tensor!r}" in report.problems[0]


@pytest.mark.parametrize("same_size", [True, False], ids=["same-size", "other-size"])
def test_copied_chunk_is_caught_by_copy_on_write_edits(pristine, tmp_path, same_size):
    path = str(tmp_path / "ds")
    shutil.copytree(pristine, path)
    key = _copy_over(path, "embedding", same_size)
    ds = tensordb.load(path)
    ds_state = ds._state.tensors["embedding"]
    rows = [i for i, k in enumerate(np.repeat(ds_state.chunk_keys, ds_state.chunk_rows)) if k == key]
    with pytest.raises(DataCorruptionError) as err:
        ds.embedding[rows[0]] = np.zeros(8, np.float32)
    _assert_names(err, "embedding", key)
    with pytest.raises(DataCorruptionError) as err:
        ds.pop([rows[-1]])
    _assert_names(err, "embedding", key)
    ds.close()

