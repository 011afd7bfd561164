"""Named leases: exclusive, taken without waiting, and ended by the kernel when the holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest

from tensordb.errors import LockedError, StorageError
from tensordb.storage import LocalStore, MemoryStore


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(str(tmp_path / "store"))
    return MemoryStore.named(f"test-leases-{uuid.uuid4().hex}")


def test_a_lease_is_exclusive_until_released(store):
    assert not store.lease_held("jobs/a")
    lease = store.hold_lease("jobs/a")
    assert store.lease_held("jobs/a")
    assert not store.lease_held("jobs/b")
    with pytest.raises(LockedError, match="jobs/a"):
        store.hold_lease("jobs/a")
    lease.release()
    lease.release()  # twice is harmless
    assert not store.lease_held("jobs/a")
    store.hold_lease("jobs/a").release()


def test_lease_files_are_not_objects(store):
    store.put("chunks/c", b"x")
    lease = store.hold_lease("jobs/a")
    assert store.list() == ["chunks/c"]
    assert store.entries() == ["chunks"]
    lease.release()


def test_lease_names_are_checked(store):
    with pytest.raises(StorageError, match="invalid"):
        store.hold_lease("../x")


def test_asking_about_a_lease_creates_nothing(tmp_path):
    store = LocalStore(str(tmp_path / "s"))
    store.put("refs", b"r")
    assert not store.lease_held("jobs/a")
    assert sorted(os.listdir(store.root)) == ["refs"]


def test_clear_keeps_held_leases(tmp_path):
    store = LocalStore(str(tmp_path / "s"))
    lease = store.hold_lease("jobs/a")
    store.put("chunks/c", b"x")
    store.clear()
    assert store.list() == []
    assert store.lease_held("jobs/a")
    lease.release()


def test_a_lease_symlink_is_not_followed(tmp_path):
    store = LocalStore(str(tmp_path / "s"))
    store.hold_lease("jobs/a").release()
    target = tmp_path / "outside"
    target.write_text("x")
    link = os.path.join(store.root, "locks", "jobs", "b")
    os.symlink(target, link)
    with pytest.raises(StorageError, match="symbolic link"):
        store.hold_lease("jobs/b")
    with pytest.raises(StorageError, match="symbolic link"):
        store.lease_held("jobs/b")


def test_the_kernel_ends_the_lease_of_a_killed_process(tmp_path):
    root = str(tmp_path / "s")
    code = textwrap.dedent(f"""
        import sys, time
        from tensordb.storage import LocalStore
        lease = LocalStore({root!r}).hold_lease("jobs/a")
        print("held", flush=True)
        time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        store = LocalStore(root)
        assert store.lease_held("jobs/a")
        with pytest.raises(LockedError):
            store.hold_lease("jobs/a")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert not store.lease_held("jobs/a")
    store.hold_lease("jobs/a").release()
