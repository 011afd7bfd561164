"""Storage layer: bytes by key, in a local directory or in memory."""

from __future__ import annotations

from .base import Store, WriterLock
from .local import LocalStore
from .memory import MemoryStore

MEMORY_SCHEME = "mem://"


def open_store(path: str | Store) -> Store:
    """The store for a dataset path: ``mem://name``, a local directory, or a ``Store`` as is."""
    if isinstance(path, Store):
        return path
    if path.startswith(MEMORY_SCHEME):
        return MemoryStore.named(path[len(MEMORY_SCHEME) :])
    if "://" in path:
        from ..errors import StorageError

        raise StorageError(f"unsupported storage scheme in {path!r}: expected a local path or mem://name")
    return LocalStore(path)


__all__ = ["Store", "WriterLock", "LocalStore", "MemoryStore", "open_store"]
