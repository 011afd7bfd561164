"""The envelope: a versioned, checksummed container. Damage must never turn into wrong data."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tensordb.errors import DataCorruptionError, FormatVersionError
from tensordb.format import envelope

# msgpack-able metadata: str keys, JSON-like values plus bytes
_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text()
_meta_values = st.recursive(
    _scalars | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
metas = st.dictionaries(st.text(max_size=10).filter(lambda k: k != "buffers"), _meta_values, max_size=6)
buffer_maps = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.binary(max_size=300) | st.integers(0, 400).map(lambda n: b"\x07" * n),  # compressible too
    max_size=4,
)
codecs = st.sampled_from([None, "lz4"])
magics = st.sampled_from(
    [envelope.MAGIC_CHUNK, envelope.MAGIC_STATE, envelope.MAGIC_REFS, envelope.MAGIC_COMMIT, envelope.MAGIC_DATASET]
)


def _normalise(value):
    """msgpack gives lists for tuples; nothing else changes."""
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value


@settings(max_examples=150, deadline=None)
@given(meta=metas, buffers=buffer_maps, codec=codecs, magic=magics)
def test_pack_unpack_roundtrip(meta, buffers, codec, magic):
    data = envelope.pack(magic, meta, buffers, codec)
    assert len(data) % envelope.ALIGN == 0
    got_meta, got_buffers = envelope.unpack(data, "test", magic)
    assert got_meta == _normalise(meta)
    assert set(got_buffers) == set(buffers)
    for name, raw in buffers.items():
        assert bytes(got_buffers[name]) == raw
    # buffers are 64-byte aligned in the file
    header = envelope.read_header(lambda s, n: data[s : s + n], "test", magic)
    for ref in header.buffers.values():
        assert ref.offset % envelope.ALIGN == 0
        assert ref.codec == codec


@settings(max_examples=50, deadline=None)
@given(meta=metas, buffers=buffer_maps, codec=codecs, magic=magics)
def test_pack_parts_are_the_packed_file_in_pieces(meta, buffers, codec, magic):
    parts = envelope.pack_parts(magic, meta, buffers, codec)
    assert b"".join(parts) == envelope.pack(magic, meta, buffers, codec)
    assert envelope.parts_nbytes(parts) == len(envelope.pack(magic, meta, buffers, codec))


@settings(max_examples=50, deadline=None)
@given(
    arrays=st.lists(
        st.sampled_from(["u1", "<i2", "<i4", "<i8", "<f2", "<f4", "<f8", "?"]).flatmap(
            lambda dt: st.integers(0, 50).map(lambda n: np.arange(n).astype(dt))
        ),
        max_size=3,
    ),
    codec=codecs,
)
def test_numpy_buffers_roundtrip(arrays, codec):
    buffers = {f"b{i}": a for i, a in enumerate(arrays)}
    data = envelope.pack(envelope.MAGIC_CHUNK, {"n": len(arrays)}, buffers, codec)
    _, got = envelope.unpack(data, "test", envelope.MAGIC_CHUNK)
    for i, a in enumerate(arrays):
        assert np.array_equal(np.frombuffer(got[f"b{i}"], dtype=a.dtype), a)


def test_record_roundtrip():
    record = {"branches": {"main": {"head": None, "state": "states/abc"}}, "n": [1, 2, 3]}
    data = envelope.pack_record(envelope.MAGIC_REFS, record)
    assert envelope.unpack_record(data, "refs", envelope.MAGIC_REFS) == record


def test_wrong_magic_is_corruption():
    data = envelope.pack(envelope.MAGIC_STATE, {"a": 1})
    with pytest.raises(DataCorruptionError, match="not a tensordb"):
        envelope.unpack(data, "x", envelope.MAGIC_REFS)


def test_lz4_compresses():
    raw = b"\0" * 100_000
    packed = envelope.pack(envelope.MAGIC_CHUNK, {}, {"data": raw}, "lz4")
    assert len(packed) < 10_000
    _, got = envelope.unpack(packed, "t", envelope.MAGIC_CHUNK)
    assert bytes(got["data"]) == raw


def test_future_format_version_raises():
    data = bytearray(envelope.pack(envelope.MAGIC_STATE, {"a": 1}))
    magic, version, flags, hlen, hcrc = envelope.PREFIX.unpack_from(data)
    struct.pack_into("<H", data, 4, envelope.format_version(envelope.MAGIC_STATE) + 1)
    with pytest.raises(FormatVersionError, match="format version"):
        envelope.unpack(bytes(data), "what", envelope.MAGIC_STATE)
    assert issubclass(FormatVersionError, DataCorruptionError)
    header = envelope.read_header
    with pytest.raises(FormatVersionError):
        header(lambda s, n: bytes(data[s : s + n]), "what", envelope.MAGIC_STATE)


def test_bad_codec_in_file_is_corruption():
    # a checksum-valid file naming an unknown codec must not be decoded by guessing
    import zlib

    import msgpack

    payload = b"abc"
    header = msgpack.packb({"buffers": [["data", 0, 3, zlib.crc32(payload), "zstd", 3]]}, use_bin_type=True)
    prefix = envelope.PREFIX.pack(envelope.MAGIC_CHUNK, envelope.FORMAT_VERSION, 0, len(header), zlib.crc32(header))
    head = prefix + header
    pad = b"\0" * (-len(head) % envelope.ALIGN)
    data = head + pad + payload + b"\0" * (envelope.ALIGN - 3)
    with pytest.raises(DataCorruptionError):
        envelope.unpack(data, "t", envelope.MAGIC_CHUNK)


# -- damage ------------------------------------------------------------------------------------

_damage_settings = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def packed_files(draw):
    meta = draw(metas)
    buffers = draw(buffer_maps)
    codec = draw(codecs)
    magic = draw(magics)
    return magic, meta, buffers, envelope.pack(magic, meta, buffers, codec)


def _decodes_to_original(data, magic, meta, buffers) -> bool:
    """Decode ``data``; True if it gives the original, False never: a silent wrong result fails the test."""
    got_meta, got_buffers = envelope.unpack(data, "damaged", magic)
    return got_meta == _normalise(meta) and {k: bytes(v) for k, v in got_buffers.items()} == buffers


@_damage_settings
@given(f=packed_files(), where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_any_flipped_bit_is_detected(f, where, bit):
    magic, meta, buffers, data = f
    damaged = bytearray(data)
    pos = int(where * len(data))
    damaged[pos] ^= 1 << bit
    with pytest.raises(DataCorruptionError):
        _decodes_to_original(bytes(damaged), magic, meta, buffers)


@_damage_settings
@given(f=packed_files(), where=st.floats(0, 1, exclude_max=True), value=st.integers(0, 255))
def test_any_changed_byte_is_detected(f, where, value):
    magic, meta, buffers, data = f
    pos = int(where * len(data))
    if data[pos] == value:
        value ^= 0xFF
    damaged = bytearray(data)
    damaged[pos] = value
    with pytest.raises(DataCorruptionError):
        _decodes_to_original(bytes(damaged), magic, meta, buffers)


@_damage_settings
@given(f=packed_files(), keep=st.floats(0, 1, exclude_max=True))
def test_any_truncation_is_detected(f, keep):
    magic, meta, buffers, data = f
    truncated = data[: int(keep * len(data))]
    with pytest.raises(DataCorruptionError):
        _decodes_to_original(truncated, magic, meta, buffers)


@_damage_settings
@given(f=packed_files(), extra=st.binary(min_size=1, max_size=100))
def test_appended_bytes_are_detected(f, extra):
    magic, meta, buffers, data = f
    with pytest.raises(DataCorruptionError):
        _decodes_to_original(data + extra, magic, meta, buffers)


def test_every_single_byte_flip_of_a_chunk_file_is_detected():
    """Exhaustive: every byte position of one small file with two buffers, both codecs."""
    for codec in (None, "lz4"):
        buffers = {"data": np.arange(40, dtype="<i4"), "offsets": np.arange(5, dtype="<u8")}
        data = envelope.pack(envelope.MAGIC_CHUNK, {"kind": "fixed", "nrows": 3}, buffers, codec)
        for pos in range(len(data)):
            damaged = bytearray(data)
            damaged[pos] ^= 0x10
            with pytest.raises(DataCorruptionError):
                envelope.unpack(bytes(damaged), f"byte {pos}", envelope.MAGIC_CHUNK)
