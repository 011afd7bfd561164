"""A real S3 server on loopback for tests: moto in server mode, on 127.0.0.1 and a free port."""

from __future__ import annotations

import contextlib
import socket
import urllib.request
from collections.abc import Iterator

BUCKET = "tensordb-test"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoS3:
    """Starts ``ThreadedMotoServer`` in this process, creates ``bucket``, and stops it.

    Moto accepts any key pair unless authentication is enforced (:meth:`auth_enforced`): then it
    checks signatures and denies unknown keys with 403, as S3 does.
    """

    def __init__(self, bucket: str = BUCKET):
        self.bucket = bucket
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.creds = {
            "aws_access_key_id": "testing-key-id",
            "aws_secret_access_key": "testing-secret-key",
            "endpoint_url": self.endpoint,
            "aws_region": REGION,
        }
        self.env = {
            "AWS_ACCESS_KEY_ID": self.creds["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": self.creds["aws_secret_access_key"],
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_ALLOW_HTTP": "true",
        }
        self._server = None

    def start(self) -> MotoS3:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.create_bucket(self.bucket)
        return self

    def create_bucket(self, name: str) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/{name}", method="PUT"), timeout=10).read()

    @contextlib.contextmanager
    def auth_enforced(self) -> Iterator[None]:
        """While inside, the server checks every request's credentials (the keys above are unknown to it)."""
        previous = self._set_auth("0")
        try:
            yield
        finally:
            self._set_auth(previous)

    def _set_auth(self, count: str) -> str:
        import json

        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=count.encode(), method="POST",
                                         headers={"Content-Type": "text/plain"})  # not form data: moto reads the body
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
