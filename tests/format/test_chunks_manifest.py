"""Chunk layouts (fixed, ragged, blob) and manifests (states, commits, refs) round-trip exactly."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tensordb.errors import DataCorruptionError, FormatVersionError
from tensordb.format import chunk as chunkfmt
from tensordb.format import envelope
from tensordb.format import manifest as mf

NUMERIC_DTYPES = ["?", "i1", "<i2", "<i4", "<i8", "u1", "<u2", "<u4", "<u8", "<f2", "<f4", "<f8"]
codecs = st.sampled_from([None, "lz4"])


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@settings(max_examples=100, deadline=None)
@given(
    array=st.sampled_from(NUMERIC_DTYPES).flatmap(
        lambda dt: hnp.arrays(np.dtype(dt), hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5))
    ),
    codec=codecs,
    norms=st.booleans(),
)
def test_fixed_roundtrip(array, codec, norms):
    norms = norms and array.dtype.kind == "f" and array.ndim == 2 and len(array) > 0  # chunks hold >= 1 row
    data = b"".join(chunkfmt.encode_fixed(array, codec, with_norms=norms))
    c = chunkfmt.decode_chunk(memoryview(data), "t")
    assert isinstance(c, chunkfmt.FixedChunk)
    assert c.nrows == len(array)
    assert _same(c.array, array)
    if norms:
        with np.errstate(over="ignore", invalid="ignore"):
            expected = np.linalg.norm(array.astype(np.float32), axis=1)
        sane = np.isfinite(expected) & (expected < 1e18)  # float32 overflow/rounding at the extremes may differ
        assert np.allclose(c.l2_norms[sane], expected[sane], rtol=1e-4)
    if len(array):
        idx = np.arange(len(array))[::-1]
        assert _same(c.take(idx), array[idx])


@st.composite
def ragged_rows(draw):
    dtype = np.dtype(draw(st.sampled_from(NUMERIC_DTYPES)))
    ndim = draw(st.integers(1, 3))
    n = draw(st.integers(1, 8))
    rows = [
        draw(hnp.arrays(dtype, st.tuples(*[st.integers(0, 4)] * ndim)))
        for _ in range(n)
    ]
    return dtype, ndim, rows


@settings(max_examples=100, deadline=None)
@given(r=ragged_rows(), codec=codecs)
def test_ragged_roundtrip(r, codec):
    dtype, ndim, rows = r
    data = b"".join(chunkfmt.encode_ragged(rows, dtype, ndim, codec))
    c = chunkfmt.decode_chunk(memoryview(data), "t")
    assert isinstance(c, chunkfmt.RaggedChunk)
    assert c.nrows == len(rows)
    for i, row in enumerate(rows):
        assert _same(c.row(i), row)
    got = c.take(np.array([len(rows) - 1, 0]))
    assert _same(got[0], rows[-1]) and _same(got[1], rows[0])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=15,
)


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(st.none() | st.text(), max_size=30), codec=codecs)
def test_blob_text_roundtrip(texts, codec):
    blobs = [None if t is None else t.encode("utf-8", "surrogatepass") for t in texts]
    data = b"".join(chunkfmt.encode_blobs(blobs, "utf8", codec))
    c = chunkfmt.decode_chunk(memoryview(data), "t")
    assert isinstance(c, chunkfmt.BlobChunk)
    assert c.nrows == len(texts)
    assert c.take(np.arange(len(texts))) == texts


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.none() | json_values.filter(lambda v: v is not None), max_size=20), codec=codecs)
def test_blob_json_roundtrip(values, codec):
    blobs = [None if v is None else json.dumps(v, ensure_ascii=False).encode() for v in values]
    data = b"".join(chunkfmt.encode_blobs(blobs, "json", codec))
    c = chunkfmt.decode_chunk(memoryview(data), "t")
    assert c.take(np.arange(len(values))) == values


def test_blob_distinguishes_none_from_empty():
    data = b"".join(chunkfmt.encode_blobs([b"", None, b"x", None, b""], "utf8", None))
    c = chunkfmt.decode_chunk(memoryview(data), "t")
    assert c.take(np.arange(5)) == ["", None, "x", None, ""]


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.text(min_size=1), min_size=1, max_size=10), where=st.floats(0, 1, exclude_max=True))
def test_damaged_chunk_never_decodes(texts, where):
    data = bytearray(b"".join(chunkfmt.encode_blobs([t.encode("utf-8", "surrogatepass") for t in texts], "utf8", None)))
    data[int(where * len(data))] ^= 0x01
    with pytest.raises(DataCorruptionError):
        chunkfmt.decode_chunk(memoryview(bytes(data)), "t").take(np.arange(len(texts)))


def test_chunk_future_version_raises():
    data = bytearray(b"".join(chunkfmt.encode_fixed(np.arange(4), None)))
    struct.pack_into("<H", data, 4, envelope.FORMAT_VERSION + 7)
    with pytest.raises(FormatVersionError):
        chunkfmt.decode_chunk(memoryview(bytes(data)), "chunk x")


def test_inconsistent_chunk_header_is_corruption():
    bad_kind = envelope.pack(envelope.MAGIC_CHUNK, {"kind": "weird", "nrows": 1}, {})
    with pytest.raises(DataCorruptionError, match="unknown chunk kind"):
        chunkfmt.decode_chunk(memoryview(bad_kind), "t")
    wrong_rows = envelope.pack(
        envelope.MAGIC_CHUNK,
        {"kind": "fixed", "nrows": 3, "dtype": "<i4", "shape": []},
        {"data": np.arange(4, dtype="<i4")},
    )
    with pytest.raises(DataCorruptionError):
        chunkfmt.decode_chunk(memoryview(wrong_rows), "t")
    missing = envelope.pack(envelope.MAGIC_CHUNK, {"kind": "ragged", "nrows": 1, "dtype": "<i4", "ndim": 1}, {})
    with pytest.raises(DataCorruptionError):
        chunkfmt.decode_chunk(memoryview(missing), "t")
    offsets = envelope.pack(
        envelope.MAGIC_CHUNK,
        {"kind": "blob", "nrows": 2, "encoding": "utf8"},
        {"offsets": np.array([0, 5, 3], dtype="<u8"), "data": b"abc"},
    )
    with pytest.raises(DataCorruptionError):
        chunkfmt.decode_chunk(memoryview(offsets), "t")
    not_a_chunk = mf.encode_refs({})
    with pytest.raises(DataCorruptionError, match="not a tensordb"):
        chunkfmt.decode_chunk(memoryview(not_a_chunk), "t")


# -- manifests ---------------------------------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
tensor_metas = st.builds(
    mf.TensorMeta,
    name=names,
    htype=st.sampled_from(["generic", "text", "json", "list", "embedding", "class_label", "id"]),
    dtype=st.none() | st.sampled_from(["<f4", "<i8", "uint8"]),
    shape=st.none() | st.lists(st.none() | st.integers(0, 1000), max_size=3).map(tuple),
    compression=st.sampled_from([None, "lz4"]),
    chunk_bytes=st.integers(1024, 1 << 30),
    class_names=st.lists(st.text(max_size=5), max_size=4).map(tuple),
    dim=st.none() | st.integers(1, 4096),
)


@st.composite
def tensor_states(draw):
    meta = draw(tensor_metas)
    n = draw(st.integers(0, 6))
    keys = tuple(f"chunks/{draw(st.uuids()).hex}" for _ in range(n))
    rows = tuple(draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n)))
    row_nbytes = meta.row_nbytes()
    per_row = 1 if row_nbytes is None else row_nbytes
    # a chunk's declared size holds its declared rows (zero-size rows: up to chunk_bytes of them)
    rows = tuple(min(r, meta.chunk_bytes) for r in rows) if per_row == 0 else rows
    sizes = tuple(r * per_row + draw(st.integers(0, 10**6)) for r in rows)
    crcs = tuple(draw(st.lists(st.none() | st.integers(0, 2**64 - 1), min_size=n, max_size=n)))
    return mf.TensorState(meta, keys, rows, sizes, crcs)


@settings(max_examples=100, deadline=None)
@given(tensors=st.lists(tensor_states(), max_size=4, unique_by=lambda t: t.meta.name),
       info=st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5), max_size=3))
def test_state_roundtrip(tensors, info):
    state = mf.DatasetState({t.meta.name: t for t in tensors}, info)
    got = mf.decode_state(mf.encode_state(state), "s")
    assert got == state
    assert list(got.tensors) == list(state.tensors)
    assert got.chunk_keys() == {k for t in tensors for k in t.chunk_keys}


@settings(max_examples=50, deadline=None)
@given(
    record=st.builds(
        mf.CommitRecord,
        id=st.uuids().map(lambda u: u.hex),
        parent=st.none() | st.uuids().map(lambda u: u.hex),
        branch=names,
        message=st.text(),
        time=st.floats(0, 2e9),
        state=st.uuids().map(lambda u: f"states/{u.hex}"),
    )
)
def test_commit_roundtrip(record):
    assert mf.decode_commit(mf.encode_commit(record), "c") == record


@settings(max_examples=50, deadline=None)
@given(
    refs=st.dictionaries(
        names,
        st.builds(mf.BranchRef, head=st.none() | st.uuids().map(lambda u: u.hex),
                  state=st.uuids().map(lambda u: f"states/{u.hex}")),
        max_size=5,
    )
)
def test_refs_roundtrip(refs):
    assert mf.decode_refs(mf.encode_refs(refs), "r") == refs


def test_dataset_marker_roundtrip():
    assert mf.decode_dataset_marker(mf.encode_dataset_marker(12.5), "d") == {"format": "tensordb", "created": 12.5}


def test_malformed_manifests_are_corruption():
    meta = mf.TensorMeta("x", "generic", None, None, None, 1024)
    bad_rows = {"tensors": [{"meta": meta.to_dict(), "chunk_keys": ["chunks/a"], "chunk_rows": [0],
                             "chunk_nbytes": [1]}], "info": {}}
    with pytest.raises(DataCorruptionError, match="malformed"):
        mf.decode_state(envelope.pack_record(envelope.MAGIC_STATE, bad_rows), "s")
    escape = {"tensors": [{"meta": meta.to_dict(), "chunk_keys": ["chunks/../refs"], "chunk_rows": [1],
                           "chunk_nbytes": [1]}], "info": {}}
    with pytest.raises(DataCorruptionError, match="malformed"):
        mf.decode_state(envelope.pack_record(envelope.MAGIC_STATE, escape), "s")
    outside = {"tensors": [{"meta": meta.to_dict(), "chunk_keys": ["refs"], "chunk_rows": [1],
                            "chunk_nbytes": [1]}], "info": {}}
    with pytest.raises(DataCorruptionError, match="malformed"):
        mf.decode_state(envelope.pack_record(envelope.MAGIC_STATE, outside), "s")
    with pytest.raises(DataCorruptionError):
        mf.decode_state(envelope.pack_record(envelope.MAGIC_STATE, {"nope": 1}), "s")
    with pytest.raises(DataCorruptionError):
        mf.decode_refs(envelope.pack_record(envelope.MAGIC_REFS, {"branches": {"main": {"head": None}}}), "r")
    with pytest.raises(DataCorruptionError):
        mf.decode_commit(envelope.pack_record(envelope.MAGIC_COMMIT, {"id": "x"}), "c")
    # a state file is not a refs file
    with pytest.raises(DataCorruptionError):
        mf.decode_refs(mf.encode_state(mf.DatasetState()), "r")


@settings(max_examples=60, deadline=None)
@given(where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_damaged_refs_never_decode(where, bit):
    data = bytearray(mf.encode_refs({"main": mf.BranchRef("ab" * 16, "states/" + "cd" * 16)}))
    data[int(where * len(data))] ^= 1 << bit
    with pytest.raises(DataCorruptionError):
        mf.decode_refs(bytes(data), "refs")
