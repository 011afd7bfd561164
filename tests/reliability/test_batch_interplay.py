"""An open ``with ds:`` block and the things that run beside it: Deep Memory jobs, close, other threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import tensordb
from tensordb import HashingEmbedding, VectorStore
from tensordb.errors import VersionError


def _store(path: str) -> tuple[VectorStore, list[str], list[list[tuple[str, float]]]]:
    vs = VectorStore(path, embedding_function=HashingEmbedding(32))
    texts = [f"document {i} about topic {i % 7} and word{i}" for i in range(40)]
    ids = vs.add(text=texts, id=[f"d{i}" for i in range(40)])
    queries = [f"word{i} topic {i % 7}" for i in range(20)]
    relevance = [[(ids[i], 1.0)] for i in range(20)]
    return vs, queries, relevance


def _finishes(target, seconds: float = 30.0) -> bool:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def test_train_and_wait_inside_a_batch_are_refused(tmp_path):
    vs, queries, relevance = _store(str(tmp_path / "vs"))
    with vs.dataset:
        with pytest.raises(VersionError, match="train inside a 'with ds:' block"):
            vs.deep_memory.train(queries=queries, relevance=relevance, max_seconds=1)
    job = vs.deep_memory.train(queries=queries, relevance=relevance, max_seconds=1)
    with vs.dataset:
        with pytest.raises(VersionError, match="wait inside a 'with ds:' block"):
            vs.deep_memory.wait(job)
    assert vs.deep_memory.wait(job, timeout=60)["status"] in ("completed", "cancelled", "failed")


def test_a_batch_can_manage_jobs_while_a_job_waits_to_record_its_progress(tmp_path):
    vs, queries, relevance = _store(str(tmp_path / "vs"))
    first = vs.deep_memory.train(queries=queries, relevance=relevance, max_seconds=1)
    assert vs.deep_memory.wait(first, timeout=60)["status"] == "completed"
    running = vs.deep_memory.train(queries=queries, relevance=relevance, max_seconds=2)

    def batch_that_deletes_a_job() -> None:
        with vs.dataset:
            vs.dataset.extend({"text": ["more"], "metadata": [{}], "embedding": np.ones((1, 32), np.float32),
                               "id": ["extra"]})
            threading.Event().wait(1.0)  # the running job now waits for the write lock to save its record
            vs.deep_memory.delete(first)  # took the job store's lock, which that job held: a deadlock

    assert _finishes(batch_that_deletes_a_job), "the batch deadlocked with the running job"
    assert vs.deep_memory.wait(running, timeout=60)["status"] == "completed"
    assert first not in [j["id"] for j in vs.deep_memory.list_jobs(show=False)]
    assert tensordb.verify(vs.dataset.path).ok


def test_close_inside_a_batch_is_refused_and_nothing_is_lost(tmp_path):
    path = str(tmp_path / "ds")
    ds = tensordb.empty(path)
    ds.create_tensor("n", dtype="int64")
    with ds:
        ds.extend({"n": [1, 2, 3]})
        with pytest.raises(VersionError, match="close inside"):
            ds.close()
    ds.close()
    other = tensordb.load(path)  # the lock was held until here: the batch landed under it
    other.extend({"n": [9]})
    other.close()
    assert tensordb.load(path, read_only=True).n.numpy().reshape(-1).tolist() == [1, 2, 3, 9]


def test_close_from_another_thread_waits_for_the_open_batch(tmp_path):
    path = str(tmp_path / "ds")
    ds = tensordb.empty(path)
    ds.create_tensor("n", dtype="int64")
    closed = threading.Event()
    with ds:
        ds.extend({"n": [1]})
        closer = threading.Thread(target=lambda: (ds.close(), closed.set()))
        closer.start()
        assert not closed.wait(0.5), "close released the lock under an open batch"
        ds.extend({"n": [2]})
    closer.join(10)
    assert closed.is_set()
    assert tensordb.load(path, read_only=True).n.numpy().reshape(-1).tolist() == [1, 2]


def test_a_flush_whose_refs_landed_before_a_failed_fsync_keeps_their_chunks(tmp_path):
    """The refs rename of a flush lands, then the directory fsync fails, and the error leaves the block.
    Before: the block's exit discarded the batch's chunks, which the refs on disk named: a damaged dataset."""
    from tensordb.errors import StorageError
    from tensordb.storage import LocalStore

    class FsyncFailsAfterRefs(LocalStore):
        fail_next_refs = False

        def publish(self, key, data):
            super().publish(key, data)
            if key == "refs" and self.fail_next_refs:
                self.fail_next_refs = False
                raise StorageError(f"{self.url}: fsync of the directory of 'refs' failed (simulated)")

    store = FsyncFailsAfterRefs(str(tmp_path / "ds"))
    ds = tensordb.empty(store)
    ds.create_tensor("x", dtype="int64")
    ds.extend({"x": [0, 1]})
    with pytest.raises(StorageError, match="fsync"):
        with ds:
            ds.append({"x": 10})
            store.fail_next_refs = True
            ds.flush()
    ds.close()
    reopened = tensordb.load(str(tmp_path / "ds"), read_only=True)
    assert reopened.verify().ok
    assert reopened.x.numpy().tolist() == [0, 1, 10]
