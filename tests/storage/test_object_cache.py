"""The local cache of immutable objects: verified on every use, bounded by LRU, shared by processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensordb.errors import StorageError
from tensordb.storage.object_cache import ObjectCache, parse_bytes

URL = "s3://bucket1/ds"


def entry_files(cache: ObjectCache) -> list[str]:
    return sorted(n for n in os.listdir(cache.directory) if n.endswith(".obj"))


def entry_path(cache: ObjectCache, identity: str) -> str:
    return cache._path(identity)  # the test needs the file to damage it


def test_round_trip_of_bytes_and_buffer_sequences(tmp_path):
    cache = ObjectCache(str(tmp_path / "c"), 1 << 20)
    assert cache.get(f"{URL}/chunks/a") is None
    view = cache.put(f"{URL}/chunks/a", b"hello world")
    assert bytes(view) == b"hello world" and view.readonly
    array = np.arange(100, dtype=np.float32)
    cache.put(f"{URL}/chunks/b", [b"head", memoryview(array), bytearray(b"tail")])
    got = cache.get(f"{URL}/chunks/a")
    assert bytes(got) == b"hello world" and got.readonly
    got_b = cache.get(f"{URL}/chunks/b")
    assert bytes(got_b) == b"head" + array.tobytes() + b"tail"
    payload = np.frombuffer(got_b[4 : 4 + array.nbytes], dtype=np.float32)
    assert np.array_equal(payload, array)
    assert cache.get(f"{URL}/chunks/c") is None
    assert cache.get("s3://bucket1/other/chunks/a") is None  # identity includes the store url
    assert len(entry_files(cache)) == 2


def test_empty_object_is_cached(tmp_path):
    cache = ObjectCache(str(tmp_path), 1 << 20)
    assert bytes(cache.put("x/empty", b"")) == b""
    got = cache.get("x/empty")
    assert got is not None and got.nbytes == 0


def test_discard_and_clear(tmp_path):
    cache = ObjectCache(str(tmp_path), 1 << 20)
    cache.put("a", b"1")
    cache.put("b", b"2")
    cache.discard("a")
    cache.discard("a")  # absent is not an error
    assert cache.get("a") is None and bytes(cache.get("b")) == b"2"
    (tmp_path / "unrelated.txt").write_text("keep me")
    cache.clear()
    assert cache.get("b") is None and entry_files(cache) == []
    assert (tmp_path / "unrelated.txt").exists()


def test_eviction_is_least_recently_used_and_keeps_the_bound(tmp_path):
    size = 1000
    probe = ObjectCache(str(tmp_path / "probe"), 1 << 20)
    probe.put("k0", b"x" * size)
    entry = probe.total_bytes()  # one entry's file size: header + identity + payload
    cache = ObjectCache(str(tmp_path / "c"), 3 * entry)
    for name in ("k1", "k2", "k3"):
        cache.put(name, name.encode() * (size // 2))
    assert cache.total_bytes() == 3 * entry
    assert cache.get("k1") is not None  # k1 is now the most recent: k2 is the oldest
    cache.put("k4", b"4" * size)
    assert cache.get("k2") is None
    assert all(cache.get(k) is not None for k in ("k1", "k3", "k4"))
    for i in range(5, 12):
        cache.put(f"k{i}", b"z" * size)
        assert cache.total_bytes() <= cache.max_bytes
    assert [k for k in ("k9", "k10", "k11") if cache.get(k) is None] == []
    assert len(entry_files(cache)) == 3


def test_an_object_larger_than_the_bound_is_returned_but_not_kept(tmp_path):
    cache = ObjectCache(str(tmp_path), 500)
    cache.put("small", b"s" * 10)
    view = cache.put("big", b"b" * 1000)
    assert bytes(view) == b"b" * 1000 and view.readonly
    assert cache.get("big") is None
    assert bytes(cache.get("small")) == b"s" * 10  # nothing evicted for it
    zero = ObjectCache(str(tmp_path / "off"), 0)
    assert bytes(zero.put("a", [b"x", b"y"])) == b"xy" and zero.get("a") is None


@pytest.mark.parametrize(
    "damage",
    ["flip_payload", "flip_header", "truncate", "extend", "empty", "garbage", "other_version"],
)
def test_a_damaged_entry_is_a_miss_and_is_removed(tmp_path, damage):
    cache = ObjectCache(str(tmp_path), 1 << 20)
    cache.put("good", b"g" * 100)
    cache.put("id", bytes(range(200)))
    path = entry_path(cache, "id")
    data = bytearray(open(path, "rb").read())
    if damage == "flip_payload":
        data[-7] ^= 0x01
    elif damage == "flip_header":
        data[20] ^= 0xFF  # inside the length / checksum
    elif damage == "truncate":
        data = data[:-1]
    elif damage == "extend":
        data += b"\0"
    elif damage == "empty":
        data = bytearray()
    elif damage == "garbage":
        data = bytearray(b"not a cache entry at all" * 3)
    else:
        data[8] = 99  # the version field
    with open(path, "wb") as f:
        f.write(data)
    assert cache.get("id") is None
    assert not os.path.exists(path)
    assert bytes(cache.get("good")) == b"g" * 100
    assert bytes(cache.put("id", b"again")) == b"again" and bytes(cache.get("id")) == b"again"


def test_a_file_name_collision_is_a_miss(tmp_path):
    cache = ObjectCache(str(tmp_path), 1 << 20)
    cache.put("first", b"1")
    os.replace(entry_path(cache, "first"), entry_path(cache, "second"))  # as if the names' hashes collided
    assert cache.get("second") is None


def test_views_stay_valid_after_eviction_and_replacement(tmp_path):
    cache = ObjectCache(str(tmp_path), 1 << 20)
    view = cache.put("a", b"A" * 64)
    got = cache.get("a")
    cache.discard("a")
    cache.put("a", b"B" * 64)
    assert bytes(view) == b"A" * 64 and bytes(got) == b"A" * 64
    assert bytes(cache.get("a")) == b"B" * 64


def test_stale_temp_files_are_removed_fresh_ones_kept(tmp_path):
    cache = ObjectCache(str(tmp_path), 1 << 20)
    stale, fresh = tmp_path / ".tmp-dead", tmp_path / ".tmp-busy"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    os.utime(stale, (1.0, 1.0))
    cache.total_bytes()
    assert not stale.exists() and fresh.exists()
    assert cache.get("dead") is None


def test_default_reads_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORDB_CACHE_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("TENSORDB_CACHE_BYTES", "3M")
    cache = ObjectCache.default()
    assert cache.directory == str(tmp_path / "env") and cache.max_bytes == 3 << 20
    monkeypatch.delenv("TENSORDB_CACHE_BYTES")
    assert ObjectCache.default().max_bytes == 2 << 30
    monkeypatch.delenv("TENSORDB_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ObjectCache.default().directory == str(tmp_path / "home" / ".cache" / "tensordb" / "objects")
    for bad in ("lots", "-1", "1.5G", "12X"):
        monkeypatch.setenv("TENSORDB_CACHE_BYTES", bad)
        with pytest.raises(StorageError, match="TENSORDB_CACHE_BYTES.*expected a byte count"):
            ObjectCache.default()


def test_parse_bytes():
    assert parse_bytes("1048576") == 1 << 20
    assert parse_bytes("512k") == 512 << 10
    assert parse_bytes("2GiB") == 2 << 30
    assert parse_bytes(" 1 TB ") == 1 << 40
    assert parse_bytes("0") == 0


def test_bad_directory_and_bound_are_clear_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="object cache directory"):
        ObjectCache(str(tmp_path / "file"), 100)
    with pytest.raises(StorageError, match="expected a byte count >= 0"):
        ObjectCache(str(tmp_path / "c"), -5)


def test_threads_share_one_cache(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    cache = ObjectCache(str(tmp_path), 40_000)

    def work(i: int) -> bool:
        key = f"k{i % 20}"
        data = key.encode() * 200
        cache.put(key, data)
        got = cache.get(key)
        return got is None or bytes(got) == data  # evicted by another thread is fine, wrong bytes never

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(work, range(400)))
    assert cache.total_bytes() <= 40_000


WRITER = textwrap.dedent(
    """
    import sys
    from tensordb.storage.object_cache import ObjectCache
    cache = ObjectCache(sys.argv[1], 1 << 30)
    for round in range(40):
        for i in range(10):
            cache.put(f"k{i}", (f"k{i}-".encode() * 5000))
            got = cache.get(f"k{(i + 3) % 10}")
            assert got is None or bytes(got) == f"k{(i + 3) % 10}-".encode() * 5000, "a reader saw a bad entry"
    """
)


def test_two_processes_putting_the_same_keys_leave_valid_entries(tmp_path):
    directory = str(tmp_path / "shared")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, directory], stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    cache = ObjectCache(directory, 1 << 30)
    for i in range(10):
        assert bytes(cache.get(f"k{i}")) == f"k{i}-".encode() * 5000
    assert [n for n in os.listdir(directory) if not n.endswith(".obj")] == []  # no temp files left
    assert len(entry_files(cache)) == 10


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=5000), identity=st.text(min_size=1, max_size=200), split=st.integers(0, 5000))
def test_round_trip_of_arbitrary_bytes(tmp_path_factory, data, identity, split):
    cache = ObjectCache(str(tmp_path_factory.mktemp("h")), 1 << 20)
    assert bytes(cache.put(identity, [data[:split], data[split:]])) == data
    assert bytes(cache.get(identity)) == data
