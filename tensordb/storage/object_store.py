"""A store on S3-protocol object storage (AWS S3, MinIO, moto, ...) through obstore's sync API.

Object stores have no rename and no ``flock``, but they have conditional writes, and those carry
the whole protocol: ``put`` creates with ``If-None-Match: *`` (immutable objects are never
replaced), ``swap`` replaces with ``If-Match: <etag>`` (the commit step: one winner), and
``publish`` overwrites unconditionally. The writer lock excludes nobody (``concurrent_writers``);
leases are heartbeat objects under ``locks/`` (:mod:`.object_leases`).

Every HTTP request goes through one seam, :meth:`S3Store._request`: it counts the request in
:attr:`S3Store.requests`, lets a test's :attr:`S3Store.intercept` see or replace it, retries
transient failures (connection errors, timeouts, 5xx, 429) with exponential backoff and jitter,
and turns what is left into typed errors that name the path and key, never credentials. A write
whose outcome was ambiguous (the request failed after it may have reached the server) is resolved
on the retry: a ``put`` that then finds the object present with the same size, or a ``swap`` that
then finds the key holding exactly its bytes, has succeeded.

Objects under ``immutable_prefixes`` are read through the bounded local :class:`ObjectCache`:
they can never be stale, so a cached copy is always good (its checksum is verified on use).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import obstore
from obstore import exceptions as obx

from ..errors import (
    AccessDeniedError,
    BucketNotFoundError,
    DataCorruptionError,
    KeyNotFoundError,
    NetworkError,
    PreconditionFailedError,
    StorageError,
    TensorDBError,
)
from .base import Store, check_key, check_size
from .object_location import S3Location, resolve_location
from .object_requests import (
    S3_CODE,
    STATUS,
    VERBS,
    RequestLog,
    is_transient,
    obstore_client,
    request_body,
    status_of,
)

T = TypeVar("T")
#: ``intercept(kind, key, send)`` sees every request; it returns ``send()`` or raises in its place.
Interceptor = Callable[[str, str, Callable[[], Any]], Any]

LEASE_PREFIX = "locks/"  # the store's own bookkeeping: never listed
PREFETCH_IN_FLIGHT = 8
DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes
_UNRESOLVED = object()


class _NoLock:
    """The writer lock of a store with concurrent writers: it excludes nobody; commits use ``swap``."""

    def release(self) -> None:
        return None


def _reopened(location: S3Location, immutable_prefixes: tuple[str, ...], attempts: int, backoff: float) -> S3Store:
    """The store ``S3Store.__reduce__`` describes: the same location and settings, a new client."""
    creds = {
        "aws_access_key_id": location.access_key_id,
        "aws_secret_access_key": location.secret_access_key,
        "aws_session_token": location.session_token,
        "endpoint_url": location.endpoint,
        "aws_region": location.region,
    }
    given = {name: value for name, value in creds.items() if value is not None}
    return S3Store(location.url, given, immutable_prefixes=immutable_prefixes, attempts=attempts, backoff=backoff)


#: Immutable objects up to this size are cached as they are written (see ``S3Store._keep``).
WRITE_THROUGH_BYTES = 1 << 20


class S3Store(Store):
    """Objects under ``s3://bucket/prefix``. ``url`` (and ``repr``) never shows credentials."""

    concurrent_writers = True
    fork_safe = False  # obstore's runtime hangs in a forked child once the parent used it
    durable_once_visible = True

    def __init__(
        self,
        url: str,
        creds: Mapping[str, object] | None = None,
        *,
        immutable_prefixes: Sequence[str] = (),
        cache: Any = None,
        attempts: int = 5,
        backoff: float = 0.05,
        connect_timeout: float = 5.0,
        timeout: float = 300.0,
    ):
        """``attempts`` bounds the tries of one request (first plus retries); ``backoff`` is the first delay
        in seconds, doubled each retry, with jitter. ``cache`` defaults to ``ObjectCache.default()`` when
        there are immutable prefixes."""
        if attempts < 1:
            raise ValueError(f"attempts: expected >= 1, got {attempts!r}")
        self.location: S3Location = resolve_location(url, creds)
        self.url = self.location.url
        self.immutable_prefixes = tuple(immutable_prefixes)
        self.attempts = attempts
        self.backoff = backoff
        self.requests = RequestLog()
        self.intercept: Interceptor | None = None
        if cache is None and self.immutable_prefixes:
            from .object_cache import ObjectCache

            cache = ObjectCache.default()
        self.cache = cache
        self._client = obstore_client(self.location, connect_timeout, timeout)
        self._leases_impl: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: dict[str, Future] = {}
        # re-entrant: a prefetch that has already failed runs its done callback inside prefetch()
        self._in_flight_lock = threading.RLock()

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    def __reduce__(self) -> tuple:
        # A worker process gets a new store on the same location, with none of this one's threads or state.
        return (_reopened, (self.location, self.immutable_prefixes, self.attempts, self.backoff))

    # -- the request seam ---------------------------------------------------------------------------
    def _request(self, kind: str, key: str, send: Callable[[], T], resolve: Callable | None = None) -> T:
        """Send one request with retries; raise the store's typed errors.

        ``resolve(error)`` settles a non-transient failure on a retry (the first try may have been
        applied): it returns the outcome, or ``_UNRESOLVED`` to let the failure stand.
        """
        for attempt in range(self.attempts):
            self.requests.count(kind)
            try:
                return send() if self.intercept is None else self.intercept(kind, key, send)
            except Exception as e:  # obstore raises builtins (FileNotFoundError, ValueError) and its own
                failure = e
            # Decided outside the ``except``: the typed error must not carry the client's error as its
            # context (its text holds the endpoint and the server's answer, which may name the key id).
            if is_transient(failure):
                if attempt + 1 < self.attempts:
                    time.sleep(self.backoff * (2**attempt) * random.uniform(0.5, 1.0))
                    continue
                what = f"{VERBS.get(kind, kind)} {key!r}" if key else VERBS.get(kind, kind)
                raise NetworkError(
                    f"{self.url}: {what} failed after {self.attempts} attempts ({self._reason(failure)})"
                )
            if attempt > 0 and resolve is not None:
                outcome = resolve(failure)
                if outcome is not _UNRESOLVED:
                    return outcome
            raise self._error(failure, kind, key)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _error(self, e: Exception, kind: str, key: str) -> TensorDBError:
        """The typed error for a failed request (no credentials: only the S3 status and code are quoted)."""
        reason = self._reason(e)
        verb = f"{VERBS.get(kind, kind)} {key!r}" if key else VERBS.get(kind, kind)
        if "NoSuchBucket" in str(e):  # a 404 with that code; obstore raises FileNotFoundError or GenericError
            return BucketNotFoundError(f"{self.url}: the bucket {self.location.bucket!r} does not exist ({verb})")
        if isinstance(e, FileNotFoundError):
            return KeyNotFoundError(f"{self.url}: no object {key!r}")
        if isinstance(e, (obx.PermissionDeniedError, obx.UnauthenticatedError)) or status_of(e) in (401, 403):
            return AccessDeniedError(
                f"{self.url}: access denied {verb} ({reason}); check the credentials and the bucket policy"
            )
        if isinstance(e, obx.AlreadyExistsError):
            return PreconditionFailedError(f"{self.url}: {key!r} already exists; put never replaces an object")
        if isinstance(e, obx.PreconditionError):
            return PreconditionFailedError(f"{self.url}: {key!r} changed since it was read ({reason})")
        if isinstance(e, TensorDBError):  # raised by our own code inside the request (a size check)
            return e
        return StorageError(f"{self.url}: {verb} failed ({reason})")

    def _reason(self, e: Exception) -> str:
        """A short account of ``e``: the HTTP status and S3 error code if any, else its first line."""
        text = str(e)
        status, code = STATUS.search(text), S3_CODE.search(text)
        if status:
            reason = f"HTTP {status.group(1)}" + (f" {code.group(1)}" if code else "")
        else:
            reason = f"{type(e).__name__}: {text.splitlines()[0][:200] if text else ''}"
        for secret in self.location.secrets():
            reason = reason.replace(secret, "***")
        return reason

    # -- reading ------------------------------------------------------------------------------------
    def _immutable(self, key: str) -> bool:
        return any(key.startswith(p) for p in self.immutable_prefixes) and self.cache is not None

    def _identity(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _cached(self, key: str) -> memoryview | None:
        """The cached copy of an immutable ``key``, waiting for a prefetch of it still in flight."""
        with self._in_flight_lock:
            pending = self._in_flight.get(key)
        if pending is not None:
            try:
                return pending.result()
            except Exception:  # the prefetch failed: the reader fetches it itself and reports why
                return None
        return self.cache.get(self._identity(key))

    def _fetch(self, key: str, max_bytes: int | None = None) -> tuple[Any, dict]:
        """GET the whole object: its bytes (a buffer) and its metadata."""

        def send() -> tuple[Any, dict]:
            result = obstore.get(self._client, key)
            meta = result.meta
            check_size(self.url, key, meta["size"], max_bytes)
            return result.bytes(), meta

        return self._request("get", key, send)

    def _fill(self, key: str, max_bytes: int | None = None) -> memoryview:
        """Fetch an immutable ``key`` whole into the cache (refused unread if larger than ``max_bytes``)."""
        data, _ = self._fetch(key, max_bytes)
        kept = self._keep(key, memoryview(data))
        return kept if kept is not None else memoryview(data)

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        check_key(key)
        if self._immutable(key):
            view = self._cached(key)
            if view is None:
                view = self._fill(key, max_bytes)
            check_size(self.url, key, len(view), max_bytes)
            return bytes(view)
        data, _ = self._fetch(key, max_bytes)
        return bytes(data)

    def map(self, key: str) -> memoryview:
        check_key(key)
        if self._immutable(key):
            view = self._cached(key)
            return view if view is not None else self._fill(key)
        data, _ = self._fetch(key)
        return memoryview(data)

    def get_versioned(self, key: str, max_bytes: int | None = None) -> tuple[bytes, str]:
        check_key(key)
        data, meta = self._fetch(key, max_bytes)
        return bytes(data), meta["e_tag"]

    def _range(self, key: str, start: int, length: int) -> Any:
        """Bytes ``start .. start+length`` of ``key`` as a buffer (fewer at the end), cache first."""
        check_key(key)
        if self._immutable(key):
            view = self._cached(key)
            if view is not None:
                return view[start : start + length]
        if length <= 0 or start < 0:
            self.size(key)  # as for a whole read: a missing key is an error even for no bytes
            return b""

        def send() -> Any:
            try:
                return obstore.get_range(self._client, key, start=start, length=length)
            except obx.GenericError as e:
                if status_of(e) == 416:  # the range starts at or past the end
                    return b""
                raise

        return self._request("get_range", key, send)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return bytes(self._range(key, start, length))

    def read_into(self, key: str, start: int, out: memoryview) -> None:
        data = self._range(key, start, len(out))
        if len(data) != len(out):
            raise DataCorruptionError(f"{self.url}/{key}: expected {len(out)} bytes at {start}, got {len(data)}")
        out[:] = memoryview(data).cast("B")

    def prefetch(self, keys: Sequence[str]) -> None:
        """Fetch the uncached immutable ``keys`` whole into the cache in the background, 8 in flight."""
        with self._in_flight_lock:
            for key in keys:
                check_key(key)
                if not self._immutable(key) or key in self._in_flight or self._identity(key) in self.cache:
                    continue
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(PREFETCH_IN_FLIGHT, thread_name_prefix="tensordb-s3-prefetch")
                fetched: Future = Future()  # resolved once the bytes arrive, before the cache has them on disk
                self._in_flight[key] = fetched
                self._pool.submit(self._prefetch_one, key, fetched)

    def _prefetch_one(self, key: str, fetched: Future) -> None:
        """Fetch ``key`` for a prefetch: readers waiting on ``fetched`` get the bytes, then the cache keeps them."""
        try:
            data, _ = self._fetch(key)
        except BaseException as e:  # a prefetch is only a hint: the reader fetches it itself and says why
            fetched.set_exception(e)
            self._prefetched(key)
            return
        fetched.set_result(memoryview(data))
        try:
            self._keep(key, memoryview(data))
        finally:
            self._prefetched(key)

    def _prefetched(self, key: str) -> None:
        with self._in_flight_lock:
            self._in_flight.pop(key, None)

    def close(self) -> None:
        """Stop the prefetch threads (after the fetches in flight)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- metadata -----------------------------------------------------------------------------------
    def _head(self, key: str) -> dict:
        check_key(key)
        return self._request("head", key, lambda: obstore.head(self._client, key))

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except KeyNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        if self._immutable(key):
            view = self._cached(key)  # a cached (or prefetched) copy answers without a request
            if view is not None:
                return len(view)
        return int(self._head(key)["size"])

    def modified_time(self, key: str) -> float:
        try:
            return self._head(key)["last_modified"].timestamp()
        except KeyNotFoundError:
            return 0.0

    def list(self, prefix: str = "") -> list[str]:
        # obstore lists whole path segments; "chunks" must also match "chunksfoo", so list the parent.
        parent = prefix.rpartition("/")[0] or None

        def send() -> list:
            return [meta["path"] for batch in obstore.list(self._client, prefix=parent, chunk_size=1000)
                    for meta in batch]

        paths = self._request("list", prefix, send)
        return sorted(p for p in paths if p.startswith(prefix) and not p.startswith(LEASE_PREFIX))

    def entries(self) -> list[str]:
        result = self._request("list", "", lambda: obstore.list_with_delimiter(self._client))
        names = {p.rstrip("/") for p in result["common_prefixes"]} | {m["path"] for m in result["objects"]}
        return sorted(n for n in names if n and n + "/" != LEASE_PREFIX)

    # -- writing ------------------------------------------------------------------------------------
    def put(self, key: str, data: bytes | memoryview | Sequence[bytes | memoryview]) -> None:
        """Create ``key`` (``If-None-Match: *``); an existing object is never replaced."""
        check_key(key)
        body = request_body(data)
        length = sum(len(p) for p in body) if isinstance(body, list) else len(body)

        def resolve(e: Exception) -> Any:
            # a try that failed may have created it: then it is ours (immutable keys are unique)
            if isinstance(e, obx.AlreadyExistsError) and self.size(key) == length:
                return None
            return _UNRESOLVED

        self._request(
            "put", key, lambda: obstore.put(self._client, key, body, mode="create", use_multipart=False), resolve
        )
        if length <= WRITE_THROUGH_BYTES and self._immutable(key):
            self._keep(key, body)  # small chunks are read back soon (appends merge them), states on open

    def _keep(self, key: str, body: Any) -> memoryview | None:
        """Put the immutable ``key``'s bytes in the cache; its cached view, or None if the cache cannot take it."""
        try:
            return self.cache.put(self._identity(key), body)
        except (OSError, StorageError):  # a full or unwritable cache costs speed, never the read or write
            return None

    def publish(self, key: str, data: bytes) -> None:
        check_key(key)
        body = request_body(data)
        self._request("put", key, lambda: obstore.put(self._client, key, body, mode="overwrite", use_multipart=False))

    def swap(self, key: str, data: bytes, expected: str | None) -> None:
        check_key(key)
        body = request_body(data)
        mode: Any = "create" if expected is None else {"e_tag": expected}

        def resolve(e: Exception) -> Any:
            # a try that failed may have been applied: then the key holds exactly our bytes
            if isinstance(e, (obx.AlreadyExistsError, obx.PreconditionError, FileNotFoundError)):
                try:
                    current, _ = self._fetch(key)
                except KeyNotFoundError:
                    return _UNRESOLVED
                if bytes(current) == bytes(body):
                    return None
            return _UNRESOLVED

        try:
            self._request("put", key, lambda: obstore.put(self._client, key, body, mode=mode, use_multipart=False),
                          resolve)
        except (PreconditionFailedError, KeyNotFoundError):
            found = "present" if expected is None else "replaced or deleted"
            raise PreconditionFailedError(
                f"{self.url}: {key!r} changed since it was read (expected version {expected}, found it {found}); "
                "nothing was written"
            ) from None

    def delete(self, key: str) -> None:
        check_key(key)
        self._request("delete", key, lambda: obstore.delete(self._client, key))
        if self._immutable(key):
            self.cache.discard(self._identity(key))

    def delete_many(self, keys: Sequence[str]) -> None:
        keys = list(keys)
        for key in keys:
            check_key(key)
        for i in range(0, len(keys), DELETE_BATCH):
            batch = keys[i : i + DELETE_BATCH]
            self._request("delete", batch[0], lambda batch=batch: obstore.delete(self._client, batch))
        for key in keys:
            if self._immutable(key):
                self.cache.discard(self._identity(key))

    def clear(self) -> None:
        self.delete_many(self.list())  # leases under locks/ stay valid, as a local store's LOCK does

    # -- locks and leases ---------------------------------------------------------------------------
    def acquire_writer_lock(self, timeout: float = 0.0, create: bool = True) -> _NoLock:
        """A lock that excludes nobody: writers commit with ``swap`` and rebase when they lose."""
        if not create:  # nothing to create on a bucket, but a missing bucket is an error
            self._request("list", "", lambda: obstore.list_with_delimiter(self._client))
        return _NoLock()

    @property
    def _leases(self) -> Any:
        if self._leases_impl is None:
            from .object_leases import ObjectLeases

            self._leases_impl = ObjectLeases(self)
        return self._leases_impl

    def hold_lease(self, name: str) -> Any:
        return self._leases.hold_lease(name)

    def lease_held(self, name: str) -> bool:
        return self._leases.lease_held(name)

    def drop_lease(self, name: str) -> None:
        self._leases.drop_lease(name)
