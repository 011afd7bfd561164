"""An in-process store for ``mem://`` paths: fast scratch datasets and tests."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..errors import KeyNotFoundError, LockedError, PreconditionFailedError
from .base import Store, check_key, check_size, content_version

_REGISTRY: dict[str, MemoryStore] = {}
_REGISTRY_LOCK = threading.Lock()


class _ThreadLock:
    def __init__(self, lock: threading.Lock):
        self._lock: threading.Lock | None = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class _Lease:
    def __init__(self, store: MemoryStore, name: str):
        self._store: MemoryStore | None = store
        self._name = name

    def release(self) -> None:
        if self._store is not None:
            self._store._end_lease(self._name)
            self._store = None


class MemoryStore(Store):
    """Objects live in a dict; ``publish`` is a single assignment, so it is atomic."""

    reopenable = False  # the objects live in this process alone

    def __init__(self, name: str = ""):
        self.url = f"mem://{name}"
        self._objects: dict[str, bytes] = {}
        self._writer = threading.Lock()
        self._leases: set[str] = set()  # the process is the only holder: its death ends them all
        self._leases_lock = threading.Lock()
        self._swap_lock = threading.Lock()

    @classmethod
    def named(cls, name: str) -> MemoryStore:
        """The process-wide store for ``mem://name``, created on first use."""
        with _REGISTRY_LOCK:
            if name not in _REGISTRY:
                _REGISTRY[name] = cls(name)
            return _REGISTRY[name]

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        check_key(key)
        try:
            data = self._objects[key]
        except KeyError:
            raise KeyNotFoundError(f"{self.url}: no object {key!r}") from None
        check_size(self.url, key, len(data), max_bytes)
        return data

    def put(self, key: str, data: bytes | memoryview | Sequence[bytes | memoryview]) -> None:
        check_key(key)
        self._objects[key] = b"".join(data) if isinstance(data, (list, tuple)) else bytes(data)

    def publish(self, key: str, data: bytes) -> None:
        check_key(key)
        self._objects[key] = bytes(data)

    def swap(self, key: str, data: bytes, expected: str | None) -> None:
        check_key(key)
        with self._swap_lock:
            current = self._objects.get(key)
            found = None if current is None else content_version(current)
            if found != expected:
                raise PreconditionFailedError(
                    f"{self.url}: {key!r} changed since it was read (expected version {expected}, found {found})"
                )
            self._objects[key] = bytes(data)

    def delete(self, key: str) -> None:
        check_key(key)
        self._objects.pop(key, None)

    def size(self, key: str) -> int:
        return len(self.get(key))

    def exists(self, key: str) -> bool:
        check_key(key)
        return key in self._objects

    def list(self, prefix: str = "") -> list[str]:
        return sorted(k for k in list(self._objects) if k.startswith(prefix))

    def hold_lease(self, name: str) -> _Lease:
        check_key(name)
        with self._leases_lock:
            if name in self._leases:
                raise LockedError(f"{self.url}: the lease {name!r} is held by another thread")
            self._leases.add(name)
        return _Lease(self, name)

    def lease_held(self, name: str) -> bool:
        check_key(name)
        return name in self._leases

    def drop_lease(self, name: str) -> None:
        check_key(name)  # an in-process lease leaves nothing behind once released

    def _end_lease(self, name: str) -> None:
        with self._leases_lock:
            self._leases.discard(name)

    def acquire_writer_lock(self, timeout: float = 0.0, create: bool = True) -> _ThreadLock:
        if timeout > 0:
            acquired = self._writer.acquire(timeout=timeout)
        else:
            acquired = self._writer.acquire(blocking=False)
        if not acquired:
            raise LockedError(f"{self.url} is locked by another writer in this process")
        return _ThreadLock(self._writer)
