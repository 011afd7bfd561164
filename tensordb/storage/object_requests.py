"""The pieces of an S3 request that do not depend on the store: counting, retry and error classification,
upload bodies and the obstore client."""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

from obstore import exceptions as obx
from obstore.store import S3Store as ObstoreS3

from ..errors import TensorDBError
from .object_location import S3Location

REQUEST_KINDS = ("get", "get_range", "head", "put", "list", "delete")
#: How error messages name each kind of request.
VERBS = {
    "get": "reading",
    "get_range": "reading a range of",
    "head": "looking up",
    "put": "writing",
    "list": "listing",
    "delete": "deleting",
}
STATUS = re.compile(r"status code: (\d{3})")
S3_CODE = re.compile(r"<Code>([A-Za-z0-9.]+)</Code>")
_TRANSIENT_TEXT = ("error sending request", "connection", "timed out", "timeout", "broken pipe", "reset by peer")


class RequestLog:
    """Counts of the requests a store sent, by kind (``get``, ``get_range``, ``head``, ``put``, ``list``,
    ``delete``); each retry attempt counts. Thread-safe."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count(self, kind: str) -> None:
        with self._lock:
            self._counts[kind] += 1

    def __getitem__(self, kind: str) -> int:
        with self._lock:
            return self._counts[kind]

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def counts(self) -> dict[str, int]:
        """A snapshot: kind → number of requests (kinds never sent are absent)."""
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def __repr__(self) -> str:
        return f"RequestLog({self.counts()})"


def status_of(e: Exception) -> int | None:
    """The HTTP status an obstore error reports, if any."""
    match = STATUS.search(str(e))
    return int(match.group(1)) if match else None


def is_transient(e: Exception) -> bool:
    """Whether retrying ``e`` may succeed: connection failures, timeouts, 5xx and 429 answers."""
    if isinstance(e, (FileNotFoundError, ValueError, TensorDBError)) or isinstance(
        e, (obx.PermissionDeniedError, obx.UnauthenticatedError, obx.AlreadyExistsError, obx.PreconditionError)
    ):
        return False
    if isinstance(e, (ConnectionError, TimeoutError)):
        return True
    status = status_of(e)
    if status is not None:
        return status >= 500 or status in (408, 429)
    text = str(e).lower()
    return isinstance(e, obx.BaseError) and any(t in text for t in _TRANSIENT_TEXT)


def request_body(data: bytes | memoryview | Sequence[bytes | memoryview]) -> Any:
    """What obstore uploads: one flat byte buffer, or a list of them (joined without a Python copy)."""
    if isinstance(data, (list, tuple)):
        return [memoryview(p).cast("B") for p in data if len(memoryview(p).cast("B"))]
    return memoryview(data).cast("B") if not isinstance(data, bytes) else data


def obstore_client(location: S3Location, connect_timeout: float, timeout: float) -> ObstoreS3:
    """The obstore client: its own retries off (the seam retries), explicit keys over its env lookup."""
    options: dict[str, Any] = {
        "connect_timeout": f"{int(connect_timeout * 1000)}ms",
        "timeout": f"{int(timeout * 1000)}ms",
        "allow_http": location.allow_http,
    }
    kwargs: dict[str, Any] = {"region": location.region}
    if location.endpoint:
        kwargs["endpoint"] = location.endpoint
    if location.access_key_id:
        credential = {
            "access_key_id": location.access_key_id,
            "secret_access_key": location.secret_access_key,
            "token": location.session_token,
            "expires_at": None,
        }
        # A provider, not config keys: obstore would otherwise pair our keys with AWS_SESSION_TOKEN of the env.
        kwargs["credential_provider"] = lambda: credential
    return ObstoreS3(
        location.bucket,
        prefix=location.prefix or None,
        client_options=options,
        retry_config={"max_retries": 0},
        **kwargs,
    )
