"""Hostile files in a local dataset directory: FIFOs, a LOCK symlink, huge sparse files.

Each must give a clear ``TensorDBError`` at once: never block forever, never
follow a link out of the dataset, never read gigabytes to reject a file.
A watchdog thread turns a regression into a failure instead of a hung suite.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import tensordb
from tensordb.errors import DataCorruptionError, StorageError, TensorDBError
from tensordb.storage import LocalStore

WATCHDOG_SECONDS = 10


def within_watchdog(fn):
    """Run ``fn`` on a thread; its result, or the exception it raised. A hang fails the test."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as e:  # handed back to the test
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(WATCHDOG_SECONDS)
    if thread.is_alive():
        _unblock_fifos()
        pytest.fail(f"{fn} blocked for {WATCHDOG_SECONDS} s (opened a FIFO for reading?)")
    return box


_FIFOS: list[str] = []


def _unblock_fifos():
    """Open every FIFO for writing once, so a reader stuck in open() returns and the thread ends."""
    for path in _FIFOS:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass


def make_fifo(path: str) -> None:
    os.mkfifo(path)
    _FIFOS.append(path)


def expect_tensordb_error(fn, *words: str) -> TensorDBError:
    box = within_watchdog(fn)
    assert "error" in box, f"expected a TensorDBError, got {box.get('result')!r}"
    error = box["error"]
    assert isinstance(error, TensorDBError), f"expected a TensorDBError, got {error!r}"
    for word in words:
        assert word in str(error), f"{word!r} not in {error}"
    return error


@pytest.fixture
def dataset_path(tmp_path):
    path = str(tmp_path / "ds")
    ds = tensordb.empty(path)
    ds.create_tensor("x", dtype="float32")
    ds.extend({"x": np.arange(6, dtype=np.float32).reshape(6, 1)})
    ds.close()
    return path


def chunk_file(path: str) -> str:
    names = os.listdir(os.path.join(path, "chunks"))
    assert len(names) == 1
    return os.path.join(path, "chunks", names[0])


# -- FIFOs -----------------------------------------------------------------------------------
def test_fifo_in_place_of_refs_is_refused_at_once(dataset_path):
    refs = os.path.join(dataset_path, "refs")
    os.unlink(refs)
    make_fifo(refs)
    expect_tensordb_error(lambda: tensordb.load(dataset_path, read_only=True), "FIFO", "refs")
    expect_tensordb_error(lambda: tensordb.load(dataset_path), "FIFO", "refs")
    box = within_watchdog(lambda: tensordb.verify(dataset_path))
    if "error" in box:
        assert isinstance(box["error"], TensorDBError) and "FIFO" in str(box["error"])
    else:
        assert not box["result"].ok and any("FIFO" in p for p in box["result"].problems), box["result"].problems


def test_fifo_in_place_of_a_chunk_is_refused_at_once(dataset_path):
    chunk = chunk_file(dataset_path)
    os.unlink(chunk)
    make_fifo(chunk)
    ds = within_watchdog(lambda: tensordb.load(dataset_path, read_only=True))["result"]
    expect_tensordb_error(lambda: ds.x.numpy(), "FIFO")
    expect_tensordb_error(lambda: ds.x[2].numpy(), "FIFO")
    report = within_watchdog(lambda: tensordb.verify(dataset_path))["result"]
    assert not report.ok and any("FIFO" in p for p in report.problems), report.problems


@pytest.mark.parametrize("read", ["get", "get_range", "read_into", "map"])
def test_every_read_path_refuses_a_fifo(tmp_path, read):
    store = LocalStore(str(tmp_path / "s"))
    store.put("chunks/a", b"x")
    make_fifo(os.path.join(store.root, "chunks", "b"))
    calls = {
        "get": lambda: store.get("chunks/b"),
        "get_range": lambda: store.get_range("chunks/b", 0, 4),
        "read_into": lambda: store.read_into("chunks/b", 0, memoryview(bytearray(4))),
        "map": lambda: store.map("chunks/b"),
    }
    error = expect_tensordb_error(calls[read], "chunks/b", "is a FIFO, not a regular file")
    assert isinstance(error, StorageError)


def test_directory_in_place_of_an_object_is_refused(tmp_path):
    store = LocalStore(str(tmp_path / "s"))
    os.makedirs(os.path.join(store.root, "chunks", "d"))
    expect_tensordb_error(lambda: store.get("chunks/d"), "is a directory, not a regular file")


# -- the LOCK file ---------------------------------------------------------------------------
def test_lock_symlink_out_of_the_dataset_is_not_followed(dataset_path, tmp_path):
    target = tmp_path / "outside.txt"
    target.write_bytes(b"precious")
    before = os.stat(target)
    lock = os.path.join(dataset_path, "LOCK")
    os.unlink(lock)
    os.symlink(target, lock)
    for open_for_write in (lambda: tensordb.load(dataset_path), lambda: LocalStore(dataset_path).acquire_writer_lock()):
        error = expect_tensordb_error(open_for_write, "LOCK", "symbolic link")
        assert isinstance(error, StorageError)
        assert dataset_path in str(error)
    after = os.stat(target)
    assert target.read_bytes() == b"precious"
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)
    # reading needs no lock, and still works
    assert tensordb.load(dataset_path, read_only=True).x.numpy().shape == (6, 1)


def test_lock_fifo_is_refused(dataset_path):
    lock = os.path.join(dataset_path, "LOCK")
    os.unlink(lock)
    make_fifo(lock)
    expect_tensordb_error(lambda: LocalStore(dataset_path).acquire_writer_lock(), "LOCK", "FIFO")


# -- huge files ------------------------------------------------------------------------------
def test_bounded_get_refuses_a_huge_sparse_file_without_reading_it(tmp_path):
    store = LocalStore(str(tmp_path / "s"))
    store.put("refs", b"")
    with open(os.path.join(store.root, "refs"), "r+b") as f:
        f.truncate(20 << 30)  # sparse: 20 GiB that reading whole would take minutes and all memory
    error = expect_tensordb_error(lambda: store.get("refs", max_bytes=64 << 20), "refs", str(64 << 20), str(20 << 30))
    assert isinstance(error, DataCorruptionError)
    assert store.get_range("refs", 0, 4) == b"\0" * 4
