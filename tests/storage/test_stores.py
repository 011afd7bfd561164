"""The storage layer: LocalStore (directory), MemoryStore (mem://) and S3Store (s3://, on moto), one contract."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import numpy as np
import pytest

from tensordb.errors import (
    DataCorruptionError,
    KeyNotFoundError,
    LockedError,
    PreconditionFailedError,
    StorageError,
    TensorDBError,
)
from tensordb.storage import LocalStore, MemoryStore, open_store


def _make_store(kind: str, request, tmp_path):
    if kind == "local":
        return LocalStore(str(tmp_path / "store"))
    if kind == "memory":
        return MemoryStore.named(f"test-stores-{uuid.uuid4().hex}")
    # chunks/ read through the object cache, the other keys straight from the server
    return open_store(request.getfixturevalue("s3_url"), immutable_prefixes=("chunks/",))


@pytest.fixture(params=["local", "memory", "s3"])
def store(request, tmp_path):
    return _make_store(request.param, request, tmp_path)


# An S3 store's writer lock excludes nobody (writers there commit with swap and rebase), so the tests
# of an exclusive writer lock run on the stores that have one.
@pytest.fixture(params=["local", "memory"])
def locking_store(request, tmp_path):
    return _make_store(request.param, request, tmp_path)


def test_open_store_picks_the_backend(tmp_path, s3_url):
    from tensordb.storage.object_store import S3Store

    assert isinstance(open_store(str(tmp_path)), LocalStore)
    mem = open_store("mem://open-store-" + uuid.uuid4().hex)
    assert isinstance(mem, MemoryStore)
    assert open_store(mem.url) is mem
    s3 = open_store(s3_url)
    assert isinstance(s3, S3Store) and s3.url == s3_url
    with pytest.raises(StorageError, match="unsupported storage scheme"):
        open_store("gs://bucket/x")
    with pytest.raises(TypeError, match="s3:// paths only"):
        open_store(str(tmp_path), creds={"aws_access_key_id": "k"})


def test_put_get_roundtrip(store):
    store.put("a", b"hello")
    store.put("dir/sub/b", memoryview(b"\x00\x01\x02"))
    assert store.get("a") == b"hello"
    assert store.get("dir/sub/b") == b"\x00\x01\x02"
    store.put("empty", b"")
    assert store.get("empty") == b""
    assert bytes(store.map("empty")) == b""
    assert bytes(store.map("dir/sub/b")) == b"\x00\x01\x02"


def test_put_of_buffer_parts_writes_them_back_to_back(store):
    array = np.arange(1000, dtype=np.float32).reshape(10, 100)
    parts = [b"head", memoryview(array.reshape(-1).view(np.uint8)), b"", memoryview(b"tail")]
    store.put("chunks/parts", parts)
    assert store.get("chunks/parts") == b"head" + array.tobytes() + b"tail"


def test_overwrite_replaces_whole_object(store):
    store.put("k", b"x" * 1000)
    if store.concurrent_writers:
        # An object store's put is create-only (If-None-Match): immutable objects are never replaced.
        with pytest.raises(PreconditionFailedError, match="already exists"):
            store.put("k", b"short")
        assert store.get("k") == b"x" * 1000
    else:
        store.put("k", b"short")
        assert store.get("k") == b"short"
    store.publish("k", b"published")
    assert store.get("k") == b"published"


def test_get_missing_raises_key_not_found(store):
    with pytest.raises(KeyNotFoundError) as info:
        store.get("nope")
    assert "nope" in str(info.value)
    assert isinstance(info.value, TensorDBError)
    with pytest.raises(KeyNotFoundError):
        store.get_range("nope", 0, 1)
    with pytest.raises(KeyNotFoundError):
        store.read_into("nope", 0, memoryview(bytearray(1)))
    with pytest.raises(KeyNotFoundError):
        store.map("nope")


def test_get_range(store):
    data = bytes(range(256)) * 3
    store.put("r", data)
    assert store.get_range("r", 0, 10) == data[:10]
    assert store.get_range("r", 100, 50) == data[100:150]
    assert store.get_range("r", len(data) - 5, 50) == data[-5:]  # fewer at the end
    assert store.get_range("r", len(data) + 10, 5) == b""
    assert store.get_range("r", 7, 0) == b""


def test_read_into(store):
    data = os.urandom(5000)
    store.put("r", data)
    out = bytearray(1000)
    store.read_into("r", 123, memoryview(out))
    assert bytes(out) == data[123:1123]
    full = bytearray(5000)
    store.read_into("r", 0, memoryview(full))
    assert bytes(full) == data


def test_read_into_short_data_is_corruption(store):
    store.put("r", b"0123456789")
    out = bytearray(8)
    with pytest.raises(DataCorruptionError):
        store.read_into("r", 5, memoryview(out))


def test_list_exists_delete(store):
    assert store.list() == []
    for key in ["b", "a", "chunks/2", "chunks/1", "states/x", "chunksfoo"]:
        store.put(key, key.encode())
    assert store.list() == sorted(["a", "b", "chunks/1", "chunks/2", "chunksfoo", "states/x"])
    assert store.list("chunks/") == ["chunks/1", "chunks/2"]
    assert store.list("chunks") == ["chunks/1", "chunks/2", "chunksfoo"]
    assert store.list("zzz") == []
    assert store.exists("chunks/1")
    assert not store.exists("chunks/3")
    assert not store.exists("chunks")  # a "directory" is not an object
    store.delete("chunks/1")
    assert not store.exists("chunks/1")
    store.delete("chunks/1")  # deleting a missing key is fine
    store.delete("never-there")
    assert store.list("chunks/") == ["chunks/2"]
    with pytest.raises(KeyNotFoundError):
        store.get("chunks/1")


def test_publish_is_visible_and_listed(store):
    store.put("chunks/c", b"data")
    store.publish("refs", b"v1")
    assert store.get("refs") == b"v1"
    store.publish("refs", b"v2")
    assert store.get("refs") == b"v2"
    assert store.list() == ["chunks/c", "refs"]


def test_clear(store):
    store.put("a", b"1")
    store.put("x/y", b"2")
    store.clear()
    assert store.list() == []
    assert not store.exists("a")


@pytest.mark.parametrize("key", ["..", "../x", "a/../b", "a/..", "/abs", "", "a//b", "./a", "a/./b", "a/"])
def test_invalid_keys_are_rejected(store, key, tmp_path):
    for call in (
        lambda: store.put(key, b"x"),
        lambda: store.publish(key, b"x"),
        lambda: store.get(key),
        lambda: store.delete(key),
        lambda: store.exists(key),
    ):
        with pytest.raises(StorageError, match="invalid storage key"):
            call()
    # nothing escaped the store
    assert not (tmp_path / "x").exists()
    assert store.list() == []


def test_local_put_leaves_no_temp_files(tmp_path):
    store = LocalStore(str(tmp_path / "s"))
    for i in range(5):
        store.put(f"chunks/{i}", b"x" * i)
        store.publish("refs", str(i).encode())
    assert store.temp_files() == []
    names = sorted(os.listdir(tmp_path / "s"))
    assert names == ["chunks", "refs"]


def test_local_list_skips_temp_files_and_lock(tmp_path):
    store = LocalStore(str(tmp_path / "s"))
    store.put("chunks/a", b"1")
    (tmp_path / "s" / "chunks" / "a.tdb-tmp-123").write_bytes(b"partial")
    lock = store.acquire_writer_lock()
    try:
        assert store.list() == ["chunks/a"]
        assert len(store.temp_files()) == 1
    finally:
        lock.release()


def test_local_modified_time(tmp_path):
    store = LocalStore(str(tmp_path / "s"))
    before = time.time()
    store.put("a", b"1")
    assert store.modified_time("a") >= before - 2
    assert store.modified_time("missing") == 0.0


def test_local_get_on_directory_is_storage_error(tmp_path):
    store = LocalStore(str(tmp_path / "s"))
    store.put("d/x", b"1")
    with pytest.raises(StorageError):
        store.get("d")


def test_memory_stores_are_shared_by_name():
    name = f"shared-{uuid.uuid4().hex}"
    a = MemoryStore.named(name)
    b = MemoryStore.named(name)
    assert a is b
    a.put("k", b"v")
    assert b.get("k") == b"v"
    assert not MemoryStore.named(name + "-other").exists("k")


# -- the writer lock ---------------------------------------------------------------------------


def test_second_acquire_raises_locked(locking_store):
    store = locking_store
    lock = store.acquire_writer_lock()
    try:
        with pytest.raises(LockedError):
            store.acquire_writer_lock()
    finally:
        lock.release()
    again = store.acquire_writer_lock()
    again.release()
    again.release()  # twice is harmless


def test_local_lock_conflicts_between_store_objects(tmp_path):
    a = LocalStore(str(tmp_path / "s"))
    b = LocalStore(str(tmp_path / "s"))
    lock = a.acquire_writer_lock()
    try:
        with pytest.raises(LockedError, match="locked"):
            b.acquire_writer_lock()
    finally:
        lock.release()
    b.acquire_writer_lock().release()


def test_lock_timeout_waits_then_fails(locking_store):
    store = locking_store
    lock = store.acquire_writer_lock()
    try:
        start = time.monotonic()
        with pytest.raises(LockedError):
            store.acquire_writer_lock(timeout=0.3)
        waited = time.monotonic() - start
        assert 0.25 <= waited < 5
    finally:
        lock.release()


def test_lock_timeout_succeeds_when_released(locking_store):
    store = locking_store
    lock = store.acquire_writer_lock()
    timer = threading.Timer(0.2, lock.release)
    timer.start()
    try:
        start = time.monotonic()
        got = store.acquire_writer_lock(timeout=5)
        assert time.monotonic() - start >= 0.15
        got.release()
    finally:
        timer.join()


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from tensordb.storage import LocalStore
    lock = LocalStore(sys.argv[1]).acquire_writer_lock()
    print("LOCKED", flush=True)
    time.sleep(120)
    """
)


def _spawn_holder(root: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, root], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "LOCKED", line
    return proc


def test_lock_of_killed_process_is_released(tmp_path):
    root = str(tmp_path / "s")
    proc = _spawn_holder(root)
    try:
        store = LocalStore(root)
        with pytest.raises(LockedError):
            store.acquire_writer_lock()
        with pytest.raises(LockedError):
            store.acquire_writer_lock(timeout=0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        lock = store.acquire_writer_lock(timeout=5)
        lock.release()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_lock_waiter_gets_lock_when_holder_is_killed(tmp_path):
    root = str(tmp_path / "s")
    proc = _spawn_holder(root)
    try:
        threading.Timer(0.3, lambda: os.kill(proc.pid, signal.SIGKILL)).start()
        start = time.monotonic()
        lock = LocalStore(root).acquire_writer_lock(timeout=10)
        assert time.monotonic() - start >= 0.2
        lock.release()
    finally:
        proc.wait(timeout=10)
        proc.stdout.close()


def test_size_is_the_object_length(store):
    store.put("chunks/a", [b"abc", b"defg"])
    assert store.size("chunks/a") == 7
    with pytest.raises(KeyNotFoundError):
        store.size("chunks/missing")
