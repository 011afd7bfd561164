"""``Store.get(key, max_bytes)``: an object over the bound is refused before it is read."""

from __future__ import annotations

import uuid

import pytest

from tensordb.errors import DataCorruptionError, KeyNotFoundError
from tensordb.storage import LocalStore, MemoryStore


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(str(tmp_path / "store"))
    return MemoryStore.named(f"test-bounds-{uuid.uuid4().hex}")


def test_get_within_the_bound_returns_the_bytes(store):
    store.put("refs", b"12345")
    assert store.get("refs", max_bytes=5) == b"12345"
    assert store.get("refs", max_bytes=None) == b"12345"
    assert store.get("refs") == b"12345"


def test_get_over_the_bound_names_key_bound_and_size(store):
    store.put("states/s", b"x" * 101)
    with pytest.raises(DataCorruptionError, match=r"states/s: expected at most 100 bytes, got a file of 101 bytes"):
        store.get("states/s", max_bytes=100)


def test_bounded_get_of_a_missing_key_is_key_not_found(store):
    with pytest.raises(KeyNotFoundError):
        store.get("refs", max_bytes=10)
