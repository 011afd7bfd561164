"""Attachments: named, atomically replaced side records of a dataset (models, job records).

They live beside the versioned tensors under ``attachments/`` and use the same
checksummed envelope: JSON-like metadata plus raw numpy buffers, never pickle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import DataCorruptionError, InvalidNameError
from ..format import envelope
from ..storage import Store

PREFIX = "attachments/"
_NAME = re.compile(r"[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-.]+)*")


def _key(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidNameError(
            f"invalid attachment name {name!r}: expected letters, digits, '_', '-' and '/'-separated parts"
        )
    return PREFIX + name


def put(store: Store, name: str, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    layout = {k: [np.asarray(a).dtype.str, list(np.asarray(a).shape)] for k, a in arrays.items()}
    buffers = {k: np.ascontiguousarray(a).reshape(-1).view(np.uint8) for k, a in arrays.items()}
    data = envelope.pack(envelope.MAGIC_BLOB, {"meta": dict(meta), "arrays": layout}, buffers)
    store.publish(_key(name), data)


def get(store: Store, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    key = _key(name)
    record, buffers = envelope.unpack(store.get(key), f"{store.url}/{key}", envelope.MAGIC_BLOB)
    try:
        arrays = {}
        for k, (dtype, shape) in record["arrays"].items():
            arrays[k] = np.frombuffer(buffers[k], dtype=np.dtype(dtype)).reshape(shape).copy()
        return dict(record["meta"]), arrays
    except (KeyError, ValueError, TypeError, AttributeError) as e:  # a forged layout table of any shape
        raise DataCorruptionError(f"{store.url}/{key}: attachment is malformed: {e}") from e


def names(store: Store, prefix: str = "") -> list[str]:
    return [k[len(PREFIX) :] for k in store.list(PREFIX + prefix)]


def delete(store: Store, name: str) -> None:
    store.delete(_key(name))
