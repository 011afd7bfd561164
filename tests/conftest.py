"""Fixtures for every test directory: a loopback S3 server (moto) and fresh s3:// dataset paths."""

from __future__ import annotations

import os
import uuid

import pytest
from s3_server import MotoS3


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1 with the bucket ``tensordb-test``; ``.endpoint``, ``.creds``, ``.env``."""
    server = MotoS3().start()
    yield server
    server.stop()


@pytest.fixture
def s3_url(s3_server, monkeypatch, tmp_path):
    """A fresh ``s3://tensordb-test/<uuid>``, with the AWS_* variables set and a private object cache."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TENSORDB_CACHE_DIR", str(tmp_path / "object-cache"))
    return f"s3://{s3_server.bucket}/{uuid.uuid4().hex}"


@pytest.fixture(params=["memory", "s3"])
def vs_path(request, tmp_path):
    """A fresh VectorStore or dataset location: a unique mem:// name or a fresh s3:// prefix.

    Tests that reopen a store from disk choose ``local`` and ``s3`` with
    ``@pytest.mark.parametrize("vs_path", ["local", "s3"], indirect=True)``.
    """
    if request.param == "s3":
        return request.getfixturevalue("s3_url")
    if request.param == "local":
        return str(tmp_path / "vs")
    return f"mem://vs-{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for the whole session (started on first use, about 5 s)."""
    import ray

    # Workers import what tests hand them (TQL functions, helpers) from the tests folder, as pytest does.
    tests = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join([tests, os.path.dirname(tests), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()
