"""The order of the system calls that make a LocalStore write durable, checked on a recorded trace.

The promise: new files are written to a temporary name, fsynced and renamed;
every directory that got a new entry (a file renamed in, a subdirectory made,
a file removed) is fsynced after that entry and before the write that depends
on it becomes visible: before the next rename of ``refs``, before ``publish``
returns, before ``delete`` returns. ``os`` calls are wrapped to record
``(call, path)`` in order while a real dataset is written.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import tensordb
from tensordb.storage import LocalStore


class Trace:
    """Events ``(call, path[, path])`` in the order they happened, from every thread."""

    def __init__(self):
        self.events: list[tuple] = []
        self._lock = threading.Lock()

    def add(self, *event) -> None:
        with self._lock:
            self.events.append(event)


@pytest.fixture
def trace(monkeypatch):
    t = Trace()
    real_fsync, real_replace, real_mkdir, real_unlink = os.fsync, os.replace, os.mkdir, os.unlink
    real_publish, real_delete = LocalStore.publish, LocalStore.delete

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        real_fsync(fd)
        t.add("fsync", path)

    def replace(src, dst, **kw):
        real_replace(src, dst, **kw)
        t.add("replace", os.path.abspath(src), os.path.abspath(dst))

    def mkdir(path, *args, **kw):
        real_mkdir(path, *args, **kw)
        t.add("mkdir", os.path.abspath(path))

    def unlink(path, *args, **kw):
        real_unlink(path, *args, **kw)
        t.add("unlink", os.path.abspath(path))

    def publish(self, key, data):
        real_publish(self, key, data)
        t.add("publish-return", key)

    def delete(self, key):
        real_delete(self, key)
        t.add("delete-return", key)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(LocalStore, "publish", publish)
    monkeypatch.setattr(LocalStore, "delete", delete)
    return t


def entry_directory(event: tuple) -> str | None:
    """The directory whose entries ``event`` changed, if any."""
    if event[0] in ("mkdir", "unlink"):
        return os.path.dirname(event[1])
    if event[0] == "replace":
        return os.path.dirname(event[2])
    return None


def deadline(events: list[tuple], i: int, refs: str) -> int | None:
    """Index of the first event by which the entry made at ``i`` must be durable (None: nothing depends on it)."""
    for j in range(i + 1, len(events)):
        call = events[j][0]
        if events[i][0] == "unlink":
            if call == "delete-return":
                return j
        elif call == "publish-return" or (call == "replace" and events[j][2] == refs):
            return j
    return None


def check_order(events: list[tuple], root: str) -> None:
    refs = os.path.join(root, "refs")
    for i, event in enumerate(events):
        if event[0] == "replace":
            src = event[1]
            assert ("fsync", src) in events[:i], f"{src} renamed into place before it was fsynced"
        directory = entry_directory(event)
        if directory is None or event[0] == "unlink" and ".tdb-tmp-" in event[1]:
            continue
        end = deadline(events, i, refs)
        if end is None:
            continue
        assert ("fsync", directory) in events[i + 1 : end], (
            f"{directory} got a new entry ({event}) but was not fsynced before {events[end]}:\n"
            + "\n".join(map(str, events[i : end + 1]))
        )


def write_dataset(path: str) -> None:
    ds = tensordb.empty(path)
    ds.create_tensor("x", dtype="float32", max_chunk_size=1024)
    ds.extend({"x": np.arange(1000, dtype=np.float32).reshape(500, 2)})
    ds.commit("first")
    ds.put_attachment("deep_memory/models/x", {"dim": 2}, {"m": np.eye(2, dtype=np.float32)})
    ds.put_attachment("deep_memory/jobs/x", {"status": "completed"})
    ds.delete_attachment("deep_memory/jobs/x")
    ds.extend({"x": np.ones((3, 2), dtype=np.float32)})
    ds.close()


def test_every_rename_and_directory_entry_is_durable_before_it_is_relied_on(tmp_path, trace):
    root = str(tmp_path / "parent" / "ds")
    write_dataset(root)
    events = trace.events
    made = {e[1] for e in events if e[0] == "mkdir"}
    for sub in ("parent", "parent/ds", "parent/ds/chunks", "parent/ds/attachments/deep_memory/models"):
        assert str(tmp_path / sub) in made, f"{sub} was not created by the store (trace is incomplete)"
    assert any(e[0] == "replace" and e[2] == os.path.join(root, "refs") for e in events)
    check_order(events, root)


def test_the_new_attachment_directories_are_fsynced_before_publish_returns(tmp_path, trace):
    root = str(tmp_path / "ds")
    store = LocalStore(root)
    store.acquire_writer_lock().release()
    store.publish("attachments/deep_memory/models/m", b"model")
    ends = [i for i, e in enumerate(trace.events) if e[0] == "publish-return"]
    synced = {e[1] for e in trace.events[: ends[-1]] if e[0] == "fsync"}
    for sub in ("", "attachments", "attachments/deep_memory", "attachments/deep_memory/models"):
        assert os.path.join(root, sub).rstrip("/") in synced, f"{sub or 'the root'} not fsynced"
    check_order(trace.events, root)


def test_delete_fsyncs_its_directory(tmp_path, trace):
    root = str(tmp_path / "ds")
    store = LocalStore(root)
    store.put("chunks/a", b"x")
    store.delete("chunks/a")
    end = next(i for i, e in enumerate(trace.events) if e[0] == "delete-return")
    unlinked = next(i for i, e in enumerate(trace.events) if e[0] == "unlink")
    assert ("fsync", os.path.join(root, "chunks")) in trace.events[unlinked:end]


class SlowDirFsyncStore(LocalStore):
    """Holds every fsync of one directory until ``go`` is set, and records when each one ends."""

    def __init__(self, root: str):
        super().__init__(root)
        self.slow_dir: str | None = None
        self.entered = 0
        self.entered_twice = threading.Event()
        self.go = threading.Event()
        self.order: list[str] = []

    def _os_fsync(self, fd):
        slow = self.slow_dir is not None and os.path.samestat(os.fstat(fd), os.stat(self.slow_dir))
        if slow:
            self.entered += 1
            if self.entered >= 2:
                self.entered_twice.set()
            assert self.go.wait(30), "the slow fsync was never released"
        super()._os_fsync(fd)
        if slow:
            self.order.append("slow dir fsynced")

    def _os_replace(self, src, dst):
        super()._os_replace(src, dst)
        if dst.endswith(os.sep + "refs"):
            self.order.append("refs renamed")


def test_a_publish_waits_for_a_directory_fsync_another_thread_is_still_doing(tmp_path):
    """``_sync_dirs`` once handed its pending set to whichever thread published first: a second
    publisher saw nothing pending and renamed ``refs`` while the first was still fsyncing ``chunks/``."""
    store = SlowDirFsyncStore(str(tmp_path / "ds"))
    store.put("chunks/a", b"chunk the new refs points at")
    store.slow_dir = os.path.join(store.root, "chunks")
    first = threading.Thread(target=store.publish, args=("attachments/other", b"x"), daemon=True)
    first.start()
    while store.entered == 0 and first.is_alive():
        first.join(0.01)
    second_done = threading.Event()

    def second():
        store.publish("refs", b"points at chunks/a")
        second_done.set()
        store.entered_twice.set()

    other = threading.Thread(target=second, daemon=True)
    other.start()
    # Either the second publisher finished without waiting (the bug), or it is waiting on the same fsync.
    assert store.entered_twice.wait(30)
    store.go.set()
    first.join(30)
    other.join(30)
    assert second_done.is_set()
    assert store.order.index("slow dir fsynced") < store.order.index("refs renamed"), store.order
