from __future__ import annotations

import pytest

from .helpers import mem_path


@pytest.fixture(params=["local", "memory"])
def path(request, tmp_path):
    """A fresh dataset location: a local directory or a unique mem:// name."""
    return str(tmp_path / "ds") if request.param == "local" else mem_path()
