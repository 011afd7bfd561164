"""Shared helpers for the core tests: exact, comparable snapshots of dataset contents."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

OBJECT_HTYPES = {"text", "json", "list", "id"}


def canon(value: Any, dtype: Any = None) -> Any:
    """A hashable, exact form of one numeric row: dtype, shape and raw bytes (NaN-safe)."""
    array = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
    return (array.dtype.str, array.shape, array.tobytes())


def tensor_rows(table: Any, name: str) -> list[Any]:
    t = table[name]
    if t.htype in OBJECT_HTYPES:
        return list(t.numpy(aslist=True))
    return [canon(r) for r in t.numpy(aslist=True)]


def snapshot(table: Any) -> dict[str, list[Any]]:
    """Every tensor's full contents, read through the public API."""
    return {name: tensor_rows(table, name) for name in table.tensors}


def mem_path(tag: str = "t") -> str:
    return f"mem://{tag}-{uuid.uuid4().hex}"
