"""Named numpy arrays plus JSON-like metadata in one envelope: the layout of attachments and indexes.

The header records each array's dtype and shape beside the metadata; the bytes are
the envelope's checksummed buffers. Only plain numeric dtypes are accepted back, so
a forged layout can never make numpy build objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import DataCorruptionError
from . import envelope


def pack_arrays(magic: bytes, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> envelope.Parts:
    """An envelope of ``meta`` (stored under ``"meta"``, beside any other header fields) and ``arrays``."""
    layout = {k: [np.asarray(a).dtype.str, list(np.asarray(a).shape)] for k, a in arrays.items()}
    buffers = {k: np.ascontiguousarray(a).reshape(-1).view(np.uint8) for k, a in arrays.items()}
    return envelope.pack_parts(magic, {**meta, "arrays": layout}, buffers)


def unpack_arrays(data: bytes | memoryview, what: str, magic: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header fields and the arrays of an envelope written by :func:`pack_arrays` (arrays are copies)."""
    header, buffers = envelope.unpack(data, what, magic)
    try:
        layout = header.pop("arrays")
        if not isinstance(layout, dict):
            raise TypeError(f"the array table is a {type(layout).__name__}, not a map")
        arrays = {name: _array(buffers[name], spec) for name, spec in layout.items()}
    except (KeyError, ValueError, TypeError, AttributeError) as e:  # a forged layout table of any shape
        raise DataCorruptionError(f"{what}: array layout is malformed: {type(e).__name__}: {e}") from e
    return header, arrays


def _array(buffer: memoryview, spec: Any) -> np.ndarray:
    dtype_text, shape = spec
    dtype = np.dtype(dtype_text)
    if dtype.kind not in "biuf" or dtype.itemsize == 0:
        raise ValueError(f"dtype {dtype_text!r:.40} is not a numeric or bool dtype")
    if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
        raise ValueError(f"shape {shape!r:.80} is not a list of sizes")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape).copy()
