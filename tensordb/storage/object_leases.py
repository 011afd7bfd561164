"""Leases for stores with no ``flock``: heartbeat objects under ``locks/``, taken with compare-and-swap.

A lease ``name`` is the object ``locks/<name>`` holding JSON ``{"format": 1, "holder": <uuid4 hex>,
"expires": <seconds since the epoch>}``. Taking it is one :meth:`swap` (create if absent, or replace an
expired record on the version read), so among racing takers exactly one wins. The holder's daemon
thread renews ``expires`` to ``now + ttl`` every ``ttl / 3``, each time with ``swap`` on the version it
just read and only if the record still names it. A holder that dies, however it dies, stops renewing,
and the lease is free ``ttl`` seconds after its last renewal. Later formats keep the ``expires`` field;
a record that cannot be read at all is treated as expired (it is bookkeeping, never data).

Clock assumption: ``expires`` is written with the holder's clock and compared with the reader's, so the
hosts sharing a store must keep their clocks (``time.time``, i.e. NTP-synchronised wall clocks) within a
small part of ``ttl`` of each other; a skew of ``d`` seconds moves expiry by ``d``. With the default
``ttl`` of 30 s and renewal every 10 s, skews under ~10 s are safe. A holder paused for longer than
``ttl`` (suspended, stopped, a long GC pause) may find its lease taken when it resumes: its next
renewal sees another holder, stops, and marks the lease :attr:`ObjectLease.lost`. Leases say who is
alive; they are not fencing tokens, so nothing that needs mutual exclusion for correctness rests on them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from ..errors import DataCorruptionError, KeyNotFoundError, LockedError, PreconditionFailedError, StorageError
from .base import check_key

log = logging.getLogger(__name__)

LEASE_PREFIX = "locks/"
FORMAT = 1
DEFAULT_TTL = 30.0
_MAX_RECORD_BYTES = 64 << 10  # a lease record is tens of bytes; anything larger is not one


class VersionedObjects(Protocol):
    """What leases need of a store: versioned reads, compare-and-swap, delete (``S3Store``, ``MemoryStore``)."""

    url: str

    def get_versioned(self, key: str, max_bytes: int | None = None) -> tuple[bytes, str]: ...

    def swap(self, key: str, data: bytes, expected: str | None) -> None: ...

    def delete(self, key: str) -> None: ...


class ObjectLeases:
    """Named exclusive leases kept as heartbeat objects in ``objects``; they end ``ttl`` s after the holder stops."""

    def __init__(self, objects: VersionedObjects, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.time):
        if not ttl > 0:
            raise ValueError(f"lease ttl: expected seconds > 0, got {ttl!r}")
        self.objects = objects
        self.ttl = float(ttl)
        self.clock = clock

    def hold_lease(self, name: str) -> ObjectLease:
        """Take the lease ``name`` without waiting and keep it renewed; ``LockedError`` if a live holder has it."""
        key = self._key(name)
        record, version = self._read(key)
        if record is not None and not self._expired(record):
            raise LockedError(f"{self._where(name)}: the lease is held by another process or thread")
        holder = uuid.uuid4().hex
        expires = self.clock() + self.ttl
        try:
            self.objects.swap(key, _encode(holder, expires), version)
        except PreconditionFailedError:
            raise LockedError(f"{self._where(name)}: the lease was taken by another process or thread") from None
        return ObjectLease(self, name, key, holder, expires)

    def lease_held(self, name: str) -> bool:
        """Whether some holder, here or elsewhere, renewed the lease ``name`` less than ``ttl`` s ago."""
        record, _ = self._read(self._key(name))
        return record is not None and not self._expired(record)

    def drop_lease(self, name: str) -> None:
        """Mark the expired lease ``name`` as given up for good; a live lease is left alone.

        The record stays, expired (an object store cannot delete on a condition, and an unconditional
        delete could remove a lease that a taker swapped in just before): it reads as free.
        """
        key = self._key(name)
        record, version = self._read(key)
        if version is None or (record is not None and not self._expired(record)):
            return
        # A holder that renewed meanwhile makes the swap fail and keeps its lease.
        try:
            self.objects.swap(key, _encode("", 0.0), version)
        except PreconditionFailedError:
            return

    # -- helpers ------------------------------------------------------------------------------
    def _key(self, name: str) -> str:
        check_key(name)
        return LEASE_PREFIX + name

    def _where(self, name: str) -> str:
        return f"{getattr(self.objects, 'url', 'store')}: lease {name!r}"

    def _expired(self, record: dict) -> bool:
        return self.clock() > record["expires"]

    def _read(self, key: str) -> tuple[dict | None, str | None]:
        """The record under ``key`` and its version: ``(None, None)`` if absent; ``(None, version)`` if unreadable."""
        try:
            data, version = self.objects.get_versioned(key, _MAX_RECORD_BYTES)
        except KeyNotFoundError:
            return None, None
        except DataCorruptionError:  # larger than any lease record
            data, version = b"", self.objects.get_versioned(key)[1]
        return _decode(data), version


class ObjectLease:
    """A held lease, renewed by a daemon thread until :meth:`release` or until it is found :attr:`lost`."""

    def __init__(self, leases: ObjectLeases, name: str, key: str, holder: str, expires: float):
        self.name = name
        self.key = key
        self.holder = holder
        self.expires = expires  # as of our last renewal, by our clock
        self._leases = leases
        self._lost = False
        self._released = False
        self._lock = threading.Lock()  # one renewal or release at a time
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, name=f"tensordb-lease-{name}", daemon=True)
        self._thread.start()

    @property
    def lost(self) -> bool:
        """Whether another holder took the lease (it expired under a pause longer than ``ttl``) or it vanished."""
        return self._lost

    @property
    def active(self) -> bool:
        """Held, renewed, and neither released nor lost."""
        return not (self._lost or self._released)

    def renew(self) -> bool:
        """Renew the lease once, now (the heartbeat does this every ``ttl / 3``); whether it is still ours.

        A network failure is not a loss: the next beat tries again, and expiry decides.
        """
        with self._lock:
            if not self.active:
                return False
            leases = self._leases
            try:
                record, version = leases._read(self.key)
                if record is None or record["holder"] != self.holder:
                    self._mark_lost("its record is gone" if version is None else "another holder took it")
                    return False
                expires = leases.clock() + leases.ttl
                leases.objects.swap(self.key, _encode(self.holder, expires), version)
            except PreconditionFailedError:
                self._mark_lost("another holder took it")
                return False
            except StorageError as e:
                log.warning("%s: renewal failed, will retry: %s", leases._where(self.name), e)
                return True
            self.expires = expires
            return True

    def release(self) -> None:
        """Stop renewing and delete the lease object if it is still ours; calling it twice is harmless.

        If the store cannot be reached, the lease is left to expire ``ttl`` s after its last renewal.
        """
        with self._lock:
            if self._released:
                return
            self._released = True
            self._stop.set()
            lost = self._lost
        if self._thread is not threading.current_thread():
            self._thread.join()
        if lost:
            return
        leases = self._leases
        try:
            record, _ = leases._read(self.key)
            if record is not None and record["holder"] == self.holder:
                # Not yet expired, so no one else can have taken it between this read and the delete.
                leases.objects.delete(self.key)
        except StorageError as e:  # e.g. the network: the lease then ends by expiry, ttl s after its last renewal
            log.warning("%s: could not delete it on release, it expires by itself: %s", leases._where(self.name), e)

    def __enter__(self) -> ObjectLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "lost" if self._lost else "released" if self._released else "held"
        return f"ObjectLease({self.name!r}, {state})"

    def _mark_lost(self, why: str) -> None:
        self._lost = True
        self._stop.set()
        log.warning("%s: lost (%s); no longer renewed", self._leases._where(self.name), why)

    def _heartbeat(self) -> None:
        interval = self._leases.ttl / 3
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    return
            except Exception:  # a daemon thread must not die silently mid-lease, nor raise into nobody
                log.exception("%s: renewal raised; will retry", self._leases._where(self.name))


def _encode(holder: str, expires: float) -> bytes:
    return json.dumps({"format": FORMAT, "holder": holder, "expires": expires}, sort_keys=True).encode()


def _decode(data: bytes) -> dict | None:
    """A lease record as ``{"holder": str, "expires": float}``, or ``None`` if it is not one."""
    try:
        record = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    expires, holder = record.get("expires"), record.get("holder", "")
    if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not isinstance(holder, str):
        return None
    return {"holder": holder, "expires": float(expires)}
