"""The one container every tensordb file uses: a versioned, checksummed envelope.

Layout (little-endian)::

    magic (4 bytes, names the kind of file) | format version u16 | flags u16
    | header length u32 | header xxh3-64 u64 | header (msgpack)
    | zero padding to a 64-byte boundary | buffers, each 64-byte aligned

The header is a msgpack map; its ``buffers`` entry lists ``[name, offset,
nbytes, xxh3-64, codec, raw_nbytes]`` with offsets relative to the payload start.
The format version is per kind of file (``FORMAT_VERSIONS``), so one kind can
move on while files of the others stay as an older release wrote them.
Every byte of a file is covered by a checksum, so damage is always detected
before data is used. msgpack and raw numbers only: nothing here can run code.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import xxhash

from ..errors import DataCorruptionError, FormatVersionError
from . import codecs

FORMAT_VERSION = 1  # chunks, refs, commits, the dataset marker, attachments, indexes
ALIGN = 64
PREFIX = struct.Struct("<4sHHIQ")
MAX_HEADER_BYTES = 64 << 20
#: The largest file a metadata-only envelope (state, commit, refs, marker) can be: its header, padded.
MAX_RECORD_BYTES = (PREFIX.size + MAX_HEADER_BYTES + ALIGN - 1) // ALIGN * ALIGN

MAGIC_CHUNK = b"TDBC"
MAGIC_STATE = b"TDBS"
MAGIC_REFS = b"TDBR"
MAGIC_COMMIT = b"TDBK"
MAGIC_DATASET = b"TDBD"
MAGIC_BLOB = b"TDBB"
MAGIC_INDEX = b"TDBI"

#: Kinds of file whose format moved on since version 1; a reader refuses versions newer than it knows.
#: States 2: every chunk reference carries the chunk's header checksum (see ``manifest``).
#: States 3: a state lists the indexes built on its tensors (see ``manifest.IndexRef``).
FORMAT_VERSIONS = {MAGIC_STATE: 3}


def format_version(magic: bytes) -> int:
    """The format version this tensordb writes (and reads up to) for files of kind ``magic``."""
    return FORMAT_VERSIONS.get(magic, FORMAT_VERSION)


def checksum(data: bytes | memoryview) -> int:
    """XXH3-64 of ``data``: catches damage at memory speed (crc32 is 3x slower here)."""
    return xxhash.xxh3_64_intdigest(data)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class BufferRef:
    """Where one buffer lies in a file, and how to check and decode it."""

    offset: int  # absolute, from the start of the file
    nbytes: int
    crc: int
    codec: str | None
    raw_nbytes: int


@dataclass(frozen=True)
class Header:
    """The decoded header of an envelope."""

    magic: bytes
    version: int
    meta: dict[str, Any]
    buffers: dict[str, BufferRef]
    payload_start: int
    checksum: int  # the header's XXH3-64: it covers every buffer checksum, so it names the whole content


#: A file as the buffers that make it up, back to back (written without joining them).
Parts = list[bytes | memoryview]


def pack(
    magic: bytes,
    meta: Mapping[str, Any],
    buffers: Mapping[str, bytes | memoryview] | None = None,
    codec: str | None = None,
) -> bytes:
    """Serialise ``meta`` and named ``buffers`` into one envelope."""
    return b"".join(pack_parts(magic, meta, buffers, codec))


def pack_parts(
    magic: bytes,
    meta: Mapping[str, Any],
    buffers: Mapping[str, bytes | memoryview] | None = None,
    codec: str | None = None,
) -> Parts:
    """Like :func:`pack`, but the envelope comes as its parts: large buffers are not copied."""
    stored: list[tuple[str, bytes | memoryview, str | None, int]] = []
    for name, raw in (buffers or {}).items():
        raw = memoryview(raw).cast("B")
        data = codecs.encode(codec, raw)
        stored.append((name, data, codec, raw.nbytes))
    refs = []
    offset = 0
    for name, data, used_codec, raw_nbytes in stored:
        refs.append([name, offset, len(data), checksum(data), used_codec, raw_nbytes])
        offset = _align(offset + len(data))
    header = msgpack.packb({**meta, "buffers": refs}, use_bin_type=True)
    prefix = PREFIX.pack(magic, format_version(magic), 0, len(header), checksum(header))
    head_len = len(prefix) + len(header)
    parts: list[bytes | memoryview] = [prefix, header, b"\0" * (_align(head_len) - head_len)]
    for (_name, data, _c, _r), ref in zip(stored, refs):
        parts.append(data)
        parts.append(b"\0" * (_align(ref[1] + len(data)) - ref[1] - len(data)))
    return parts


def parts_nbytes(parts: Parts) -> int:
    """The size of the file that ``parts`` make up (their memoryviews are byte views)."""
    return sum(len(p) for p in parts)


def header_checksum(head: bytes | memoryview) -> int:
    """The header checksum in a file's prefix; ``head`` is the file, or the first of its :data:`Parts`.

    The header lists every buffer's checksum, so this one number identifies the file's content.
    """
    return PREFIX.unpack_from(head)[4]


def read_header(read: Callable[[int, int], bytes], what: str, magic: bytes) -> Header:
    """Decode and verify the header, reading the file through ``read(start, length)``."""
    prefix = read(0, PREFIX.size)
    if len(prefix) < PREFIX.size:
        raise DataCorruptionError(f"{what}: file is truncated ({len(prefix)} bytes, no header)")
    got_magic, version, _flags, header_len, header_crc = PREFIX.unpack(prefix)
    if got_magic != magic:
        raise DataCorruptionError(f"{what}: not a tensordb {magic.decode()} file (magic {got_magic!r})")
    newest = format_version(magic)
    if version > newest:
        raise FormatVersionError(
            f"{what}: written by format version {version}; this tensordb reads up to {newest}"
        )
    if version < 1 or _flags != 0:
        raise DataCorruptionError(f"{what}: invalid format version {version} or flags {_flags:#x} (file damaged)")
    if header_len > MAX_HEADER_BYTES:
        raise DataCorruptionError(f"{what}: header length {header_len} is implausible")
    raw = read(PREFIX.size, header_len)
    if len(raw) != header_len or checksum(raw) != header_crc:
        raise DataCorruptionError(f"{what}: header checksum mismatch (file damaged or truncated)")
    payload_start = _align(PREFIX.size + header_len)
    try:
        meta = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        if not isinstance(meta, dict):
            raise TypeError(f"header is a {type(meta).__name__}, not a map")
        buffers = _buffer_refs(meta.pop("buffers"), payload_start)
    except Exception as e:  # malformed but checksum-valid header: a bug or a forged file
        raise DataCorruptionError(f"{what}: header cannot be decoded: {type(e).__name__}: {e}") from e
    return Header(got_magic, version, meta, buffers, payload_start, header_crc)


#: LZ4 cannot expand data more than about 255 times: a larger declared size is forged.
MAX_EXPANSION = 256


def _buffer_refs(entries: Any, payload_start: int) -> dict[str, BufferRef]:
    """The header's buffer table, every field checked for type and range before anything is sized by it."""
    if not isinstance(entries, list):
        raise TypeError("the buffer table is not a list")
    refs = {}
    for entry in entries:
        if not isinstance(entry, list) or len(entry) != 6:
            raise TypeError(f"buffer entry {entry!r:.80} is not [name, offset, nbytes, crc, codec, raw_nbytes]")
        name, offset, nbytes, crc, codec, raw_nbytes = entry
        if not isinstance(name, str) or name in refs:
            raise ValueError(f"buffer name {name!r:.80} is not a new string")
        if not all(_is_uint(v) for v in (offset, nbytes, crc, raw_nbytes)):
            raise ValueError(f"buffer {name!r}: offset, sizes and checksum must be non-negative integers")
        if codec not in codecs.CODECS:
            raise ValueError(f"buffer {name!r}: unknown codec {codec!r:.80}")
        plausible = raw_nbytes == nbytes if codec is None else raw_nbytes <= MAX_EXPANSION * nbytes + ALIGN
        if not plausible:
            raise ValueError(f"buffer {name!r}: decoded size {raw_nbytes} is impossible for {nbytes} stored bytes")
        refs[name] = BufferRef(payload_start + offset, nbytes, crc, codec, raw_nbytes)
    return refs


def _is_uint(value: Any) -> bool:
    return type(value) is int and value >= 0


def check_buffer(data: bytes | memoryview, ref: BufferRef, what: str, name: str) -> None:
    """Raise ``DataCorruptionError`` unless ``data`` is the stored buffer ``name``."""
    if len(data) != ref.nbytes:
        raise DataCorruptionError(f"{what}: buffer {name!r} is truncated ({len(data)} of {ref.nbytes} bytes)")
    if checksum(data) != ref.crc:
        raise DataCorruptionError(f"{what}: buffer {name!r} failed its checksum (file damaged)")


def unpack(
    data: bytes | memoryview, what: str, magic: bytes, verify: bool = True
) -> tuple[dict[str, Any], dict[str, memoryview]]:
    """Decode a whole envelope held in memory, verifying every buffer checksum unless told not to.

    The header checksum is always verified.
    """
    header, buffers = _unpack(data, what, magic, verify)
    return header.meta, buffers


def _unpack(data: bytes | memoryview, what: str, magic: bytes, verify: bool) -> tuple[Header, dict[str, memoryview]]:
    view = memoryview(data).cast("B")
    header = read_header(lambda s, n: bytes(view[s : s + n]), what, magic)
    if verify:
        _check_layout(view, header, what)
    buffers = {}
    for name, ref in header.buffers.items():
        stored = view[ref.offset : ref.offset + ref.nbytes]
        if verify:
            check_buffer(stored, ref, what, name)
        elif len(stored) != ref.nbytes:
            raise DataCorruptionError(f"{what}: buffer {name!r} is truncated")
        buffers[name] = decode_buffer(stored, ref, what, name)
    return header, buffers


def _check_layout(view: memoryview, header: Header, what: str) -> None:
    """The bytes no checksum covers (padding) must be zero, and the file must end where ``pack`` ends it."""
    cursor = PREFIX.size + PREFIX.unpack_from(view)[3]
    for offset, nbytes in sorted((ref.offset, ref.nbytes) for ref in header.buffers.values()):
        if offset < cursor or bytes(view[cursor:offset]).strip(b"\0"):
            raise DataCorruptionError(f"{what}: damaged padding or overlapping buffers")
        cursor = offset + nbytes
    end = _align(cursor)
    if len(view) != end or bytes(view[cursor:end]).strip(b"\0"):
        raise DataCorruptionError(f"{what}: file is {len(view)} bytes, expected {end} (truncated or damaged)")


def decode_buffer(stored: memoryview, ref: BufferRef, what: str, name: str) -> memoryview:
    """Undo the buffer's codec (the checksum must already have been verified)."""
    if ref.codec is None:
        return stored
    try:
        raw = codecs.decode(ref.codec, stored, ref.raw_nbytes)
    except Exception as e:
        raise DataCorruptionError(f"{what}: buffer {name!r} cannot be decompressed: {e}") from e
    if len(raw) != ref.raw_nbytes:
        raise DataCorruptionError(f"{what}: buffer {name!r} decompressed to {len(raw)}, expected {ref.raw_nbytes}")
    return memoryview(raw)


def pack_record(magic: bytes, record: Mapping[str, Any]) -> bytes:
    """An envelope with metadata only (manifests, refs, commit records)."""
    return pack(magic, record)


def unpack_record(data: bytes, what: str, magic: bytes) -> dict[str, Any]:
    """Decode a metadata-only envelope."""
    return unpack_versioned_record(data, what, magic)[0]


def unpack_versioned_record(data: bytes, what: str, magic: bytes) -> tuple[dict[str, Any], int]:
    """Decode a metadata-only envelope; also returns the format version it was written in."""
    header, _ = _unpack(data, what, magic, verify=True)
    return header.meta, header.version
