from __future__ import annotations

import pytest

from .helpers import mem_path

LOCATIONS = ["local", "memory", "s3"]


@pytest.fixture(params=LOCATIONS)
def path(request, tmp_path):
    """A fresh dataset location: a local directory, a unique mem:// name, or a fresh s3:// prefix on moto."""
    if request.param == "local":
        return str(tmp_path / "ds")
    if request.param == "s3":
        return request.getfixturevalue("s3_url")
    return mem_path()


@pytest.fixture(autouse=True)
def one_faiss_thread(monkeypatch):
    """faiss with 2 threads is slower than with 1 on the shared 2-core development machine."""
    monkeypatch.setenv("TENSORDB_NUM_THREADS", "1")
