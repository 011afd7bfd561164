from __future__ import annotations

import pytest

from .helpers import mem_path


@pytest.fixture(params=["local", "memory"])
def path(request, tmp_path):
    """A fresh dataset location: a local directory or a unique mem:// name."""
    return str(tmp_path / "ds") if request.param == "local" else mem_path()


@pytest.fixture(autouse=True)
def one_faiss_thread(monkeypatch):
    """faiss with 2 threads is slower than with 1 on the shared 2-core development machine."""
    monkeypatch.setenv("TENSORDB_NUM_THREADS", "1")
