"""State format 2 on: chunk references carry the chunk's header checksum; states of format 1 still read.

An older tensordb refuses a format-2 state with ``FormatVersionError``; chunks and
the other kinds of file keep format 1, so the files release 0.1.0 wrote stay valid.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import tensordb
from tensordb.errors import DataCorruptionError, FormatVersionError
from tensordb.format import chunk as chunkfmt
from tensordb.format import envelope
from tensordb.format import manifest as mf
from tests.compat.release_dataset import DATASETS_DIR, FIRST_ROWS, SECOND_ROWS, expected_rows

OLD = os.path.join(DATASETS_DIR, "v0.1.0")


def _version(path: str, key: str) -> int:
    with open(os.path.join(path, *key.split("/")), "rb") as f:
        return envelope.PREFIX.unpack(f.read(envelope.PREFIX.size))[1]


def test_only_states_moved_on_from_format_1():
    assert envelope.format_version(envelope.MAGIC_STATE) == 3  # 3: states list their indexes
    for magic in (envelope.MAGIC_CHUNK, envelope.MAGIC_REFS, envelope.MAGIC_COMMIT, envelope.MAGIC_DATASET,
                  envelope.MAGIC_BLOB, envelope.MAGIC_INDEX):
        assert envelope.format_version(magic) == 1


def test_written_references_carry_the_chunk_header_checksum(tmp_path):
    path = str(tmp_path / "ds")
    ds = tensordb.empty(path)
    ds.create_tensor("x", htype="generic", dtype="float32", max_chunk_size=1024)
    ds.extend({"x": np.arange(2000, dtype=np.float32).reshape(500, 4)})
    ds.x[3] = np.zeros(4, np.float32)
    ds.pop([400])
    ds.commit("c")
    t = ds._state.tensors["x"]
    assert len(t.chunk_keys) > 3
    for key, rows, nbytes, crc in zip(t.chunk_keys, t.chunk_rows, t.chunk_nbytes, t.chunk_checksums):
        data = open(os.path.join(path, *key.split("/")), "rb").read()
        assert crc == envelope.header_checksum(data) and nbytes == len(data)
        assert chunkfmt.decode_chunk(memoryview(data), key).nrows == rows
    assert _version(path, ds._checkout.state_key) == envelope.format_version(envelope.MAGIC_STATE)
    assert _version(path, t.chunk_keys[0]) == 1


@pytest.mark.parametrize("known", [{}, {envelope.MAGIC_STATE: 2}], ids=["release 0.1.0", "release 0.2.0"])
def test_an_older_reader_refuses_a_newer_state(monkeypatch, known):
    meta = mf.TensorMeta("x", "generic", "<f4", (4,), None, 1024)
    data = mf.encode_state(mf.DatasetState({"x": mf.TensorState(meta, ("chunks/a",), (1,), (256,), (7,))}))
    monkeypatch.setattr(envelope, "FORMAT_VERSIONS", known)  # what that release read
    with pytest.raises(FormatVersionError, match="format version 3"):
        mf.decode_state(data, "states/s")


def test_a_format_1_state_reads_without_checksums():
    tensors = []
    for name in os.listdir(os.path.join(OLD, "states")):
        assert _version(OLD, f"states/{name}") == 1
        tensors += mf.decode_state(open(os.path.join(OLD, "states", name), "rb").read(), name).tensors.values()
    assert any(t.chunk_keys for t in tensors)
    assert all(c is None for t in tensors for c in t.chunk_checksums)


def test_a_write_into_a_release_0_1_0_dataset_writes_current_references(tmp_path):
    path = str(tmp_path / "old")
    shutil.copytree(OLD, path)
    ds = tensordb.load(path)
    before = ds._state.chunk_keys()
    extra = expected_rows(FIRST_ROWS + SECOND_ROWS + 1)
    ds.append({name: values[-1] for name, values in extra.items()})
    ds.commit("new")
    state_key = ds._checkout.state_key
    ds.close()
    assert _version(path, state_key) == envelope.format_version(envelope.MAGIC_STATE)
    state = mf.decode_state(open(os.path.join(path, *state_key.split("/")), "rb").read(), state_key)
    for t in state.tensors.values():
        new = [(k, c) for k, c in zip(t.chunk_keys, t.chunk_checksums) if k not in before]
        assert new, t.meta.name
        for key, crc in new:
            assert crc == envelope.header_checksum(open(os.path.join(path, *key.split("/")), "rb").read())
    assert tensordb.verify(path).ok


def test_a_format_1_reference_still_binds_the_row_count(tmp_path):
    path = str(tmp_path / "old")
    shutil.copytree(OLD, path)
    ds = tensordb.load(path, read_only=True)
    t = ds._state.tensors["sizes"]
    a, b = 0, 1
    assert len(t.chunk_keys) == 2 and t.chunk_rows[a] != t.chunk_rows[b]
    shutil.copyfile(os.path.join(path, *t.chunk_keys[b].split("/")), os.path.join(path, *t.chunk_keys[a].split("/")))
    ds = tensordb.load(path, read_only=True)
    with pytest.raises(DataCorruptionError, match="rows") as err:
        ds.sizes.numpy(aslist=True)
    assert t.chunk_keys[a] in str(err.value) and "tensor 'sizes'" in str(err.value)
    assert any(t.chunk_keys[a] in p for p in tensordb.verify(path).problems)
