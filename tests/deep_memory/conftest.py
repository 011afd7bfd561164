"""Where the Deep Memory tests keep their stores: in memory, on a local disk, and on the loopback S3 server (moto)."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture(params=["memory", "s3"])
def vs_path(request, tmp_path):
    """A fresh VectorStore or dataset location: a unique mem:// name or a fresh s3:// prefix.

    Tests that need a store on disk choose ``local`` and ``s3`` with
    ``@pytest.mark.parametrize("vs_path", ["local", "s3"], indirect=True)``.
    """
    if request.param == "s3":
        return request.getfixturevalue("s3_url")
    if request.param == "local":
        return str(tmp_path / "vs")
    return f"mem://vs-{uuid.uuid4().hex}"
