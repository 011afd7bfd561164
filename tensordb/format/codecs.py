"""Byte codecs for chunk buffers. A codec is named in the file, never guessed."""

from __future__ import annotations

import lz4.block

CODECS = (None, "lz4")


def validate(name: str | None) -> str | None:
    """Return ``name`` if it is a known codec; raise ``ValueError`` otherwise."""
    if name not in CODECS:
        raise ValueError(f"unknown compression {name!r}: expected one of {list(CODECS)}")
    return name


def encode(name: str | None, raw: memoryview) -> bytes | memoryview:
    """Compress ``raw`` with codec ``name`` (``None`` stores it as is)."""
    if name is None:
        return raw
    if name == "lz4":
        return lz4.block.compress(raw, store_size=False)
    raise ValueError(f"unknown compression {name!r}")


def decode(name: str, stored: memoryview, raw_nbytes: int) -> bytes:
    """Decompress a buffer whose decoded size is known from the header."""
    if name == "lz4":
        return lz4.block.decompress(stored, uncompressed_size=raw_nbytes)
    raise ValueError(f"unknown compression {name!r}")
