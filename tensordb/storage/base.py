"""The storage layer: bytes by key, and nothing else.

Every store keeps immutable objects under keys such as ``chunks/ab12..`` and a
few mutable pointers (``refs``) that change only through :meth:`Store.publish`,
the single atomic step that makes a write visible.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

import xxhash


def check_key(key: str) -> None:
    """Raise ``StorageError`` unless ``key`` is a relative ``/``-separated path without ``..`` or NUL."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\0" in key or any(p in ("", ".", "..") for p in parts):
        from ..errors import StorageError

        raise StorageError(f"invalid storage key {key!r}: expected a relative path without '..' or NUL")


class WriterLock(Protocol):
    """A held single-writer lock."""

    def release(self) -> None:
        """Give the lock up; calling it twice is harmless."""


class Store(ABC):
    """A flat key-value store of bytes. Keys are ``/``-separated relative paths."""

    url: str
    #: Whether writers elsewhere may publish while this store's writer lock is held. Then the lock
    #: excludes no one, and the layer above must commit with :meth:`swap` and rebase when it fails.
    concurrent_writers: bool = False
    #: Whether a forked child process may use this store (or open another like it). A client whose
    #: runtime does not survive ``fork`` says no: worker processes are then started afresh and get the
    #: store by pickling, which must open a new store on the same location.
    fork_safe: bool = True
    #: Whether an object is durable as soon as readers can see it (object stores). Then a write whose
    #: answer was lost, but which readers see, is done; on a local disk a failed fsync leaves it in doubt.
    durable_once_visible: bool = False
    #: Whether a pickled handle opens the same objects in another process, on this machine or another
    #: (a path or a bucket); a store that lives in one process's memory cannot be shared that way.
    reopenable: bool = True

    @abstractmethod
    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        """Return the bytes under ``key``; raise ``KeyNotFoundError`` if absent.

        With ``max_bytes``, an object larger than that raises ``DataCorruptionError``
        before any of it is read (a huge or sparse file is refused at once).
        """

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Return ``length`` bytes of ``key`` from ``start`` (fewer at the end)."""
        return self.get(key)[start : start + length]

    def read_into(self, key: str, start: int, out: memoryview) -> None:
        """Fill ``out`` with the bytes of ``key`` from ``start``; short data is an error."""
        data = self.get_range(key, start, len(out))
        if len(data) != len(out):
            from ..errors import DataCorruptionError

            raise DataCorruptionError(f"{self.url}/{key}: expected {len(out)} bytes at {start}, got {len(data)}")
        out[:] = data

    def map(self, key: str) -> memoryview:
        """A read-only view of the whole object; stores may memory-map it."""
        return memoryview(self.get(key))

    @abstractmethod
    def put(self, key: str, data: bytes | memoryview | Sequence[bytes | memoryview]) -> None:
        """Write an object whole. Readers never see a partial object.

        ``data`` may be a sequence of buffers that make up the object back to back,
        so large arrays are written without first being joined into one copy.
        """

    @abstractmethod
    def publish(self, key: str, data: bytes) -> None:
        """Durably and atomically replace ``key``; everything put before is durable first."""

    def get_versioned(self, key: str, max_bytes: int | None = None) -> tuple[bytes, str]:
        """The bytes under ``key`` and its version: a token that changes whenever ``key`` is replaced."""
        data = self.get(key, max_bytes)
        return data, content_version(data)

    @abstractmethod
    def swap(self, key: str, data: bytes, expected: str | None) -> None:
        """Replace ``key`` atomically, only if its version is still ``expected`` (``None``: only if absent).

        Raise ``PreconditionFailedError`` when another writer replaced it first; then
        nothing was written. Everything put before is durable first, as for ``publish``.
        """

    def prefetch(self, keys: Sequence[str]) -> None:
        """A hint that the immutable objects ``keys`` are about to be read; remote stores fetch them at once."""
        return None  # a local store reads as fast on demand

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` durably; a missing key is not an error."""

    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove every key of ``keys``, durably; stores may batch the directory syncs."""
        for key in keys:
            self.delete(key)

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an object."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """All keys starting with ``prefix``, sorted."""

    @abstractmethod
    def acquire_writer_lock(self, timeout: float = 0.0, create: bool = True) -> WriterLock:
        """Take the single-writer lock; raise ``LockedError`` if not got within ``timeout`` s.

        A lock held by a process that died must never block forever. With
        ``create=False`` a store whose location does not exist yet raises
        ``StorageError`` instead of being created.
        """

    @abstractmethod
    def hold_lease(self, name: str) -> WriterLock:
        """Take the exclusive lease ``name`` without waiting; raise ``LockedError`` if it is held.

        The lease lasts until released or until the holder's process dies, whatever
        way it dies (the kernel ends it: liveness never rests on process ids).
        """

    @abstractmethod
    def lease_held(self, name: str) -> bool:
        """Whether some live holder, in this process or another, holds the lease ``name``."""

    @abstractmethod
    def drop_lease(self, name: str) -> None:
        """Forget the lease ``name`` for good (its job is gone); a lease held right now is left alone."""

    def entries(self) -> list[str]:
        """The top-level names in the store, sorted: tensordb's and others, not the store's own (locks, temp files)."""
        return sorted({key.split("/", 1)[0] for key in self.list()})

    def size(self, key: str) -> int:
        """The byte size of the object under ``key``; raise ``KeyNotFoundError`` if absent."""
        return len(self.get(key))

    def modified_time(self, key: str) -> float:
        """When ``key`` was last written, in seconds since the epoch (0 if unknown)."""
        return 0.0

    def clear(self) -> None:
        """Delete every key."""
        for key in self.list():
            self.delete(key)


def content_version(data: bytes) -> str:
    """A version token for stores whose objects carry none: the content's 128-bit hash."""
    return xxhash.xxh3_128_hexdigest(data)


def check_size(url: str, key: str, size: int, max_bytes: int | None) -> None:
    """Raise ``DataCorruptionError`` if an object of ``size`` bytes exceeds ``max_bytes``."""
    if max_bytes is not None and size > max_bytes:
        from ..errors import DataCorruptionError

        raise DataCorruptionError(f"{url}/{key}: expected at most {max_bytes} bytes, got a file of {size} bytes")
