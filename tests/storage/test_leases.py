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


def test_a_dropped_lease_leaves_no_file_and_a_held_one_stays(tmp_path):
    store = LocalStore(str(tmp_path / "ds"))
    store.hold_lease("jobs/a").release()
    held = store.hold_lease("jobs/b")
    store.drop_lease("jobs/a")
    store.drop_lease("jobs/b")
    store.drop_lease("jobs/never")
    assert sorted(os.listdir(tmp_path / "ds" / "locks" / "jobs")) == ["b"]
    assert store.lease_held("jobs/b")
    held.release()


def test_deleting_a_deep_memory_job_drops_its_lease(tmp_path):
    from tensordb import HashingEmbedding, VectorStore

    vs = VectorStore(str(tmp_path / "vs"), embedding_function=HashingEmbedding(16))
    ids = vs.add(text=[f"text {i} word{i}" for i in range(20)])
    job = vs.deep_memory.train(queries=[f"word{i}" for i in range(10)], relevance=[[(ids[i], 1.0)] for i in range(10)],
                               max_seconds=1)
    vs.deep_memory.wait(job, timeout=60)
    lease_dir = tmp_path / "vs" / "locks" / "deep_memory" / "jobs"
    assert os.listdir(lease_dir) == [job]
    vs.deep_memory.delete(job)
    assert os.listdir(lease_dir) == []
