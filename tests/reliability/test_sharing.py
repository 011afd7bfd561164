"""Sharing one handle: threads serialize their writes, a forked child never writes through its parent's lock."""

from __future__ import annotations

import multiprocessing
import os
import threading

import numpy as np
import pytest

import tensordb
from tensordb.errors import LockedError, VersionError

THREADS = 8
WRITES_PER_THREAD = 25


def _new(path: str) -> tensordb.Dataset:
    ds = tensordb.empty(path)
    ds.create_tensor("text", htype="text")
    ds.create_tensor("n", htype="generic", dtype="int64")
    return ds


def _run_threads(target, count: int = THREADS) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(t: int) -> None:
        try:
            start.wait()
            target(t)
        except BaseException as e:  # reported by the test
            errors.append(e)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a writer thread hung"
    return errors


def test_threads_extending_one_handle_keep_every_row(tmp_path):
    path = str(tmp_path / "ds")
    ds = _new(path)

    def write(t: int) -> None:
        for i in range(WRITES_PER_THREAD):
            ds.extend({"text": [f"{t}:{i}"], "n": [t * 1000 + i]})

    assert _run_threads(write) == []
    expected = sorted(t * 1000 + i for t in range(THREADS) for i in range(WRITES_PER_THREAD))
    assert sorted(ds.n.numpy().reshape(-1).tolist()) == expected
    ds.close()
    reopened = tensordb.load(path, read_only=True)
    assert sorted(reopened.n.numpy().reshape(-1).tolist()) == expected
    assert len(reopened.text.numpy(aslist=True)) == len(expected)
    assert tensordb.verify(path).ok


def test_threads_mixing_writes_batches_and_commits(tmp_path):
    path = str(tmp_path / "ds")
    ds = _new(path)

    def write(t: int) -> None:
        for i in range(10):
            if t % 2:
                with ds:
                    ds.extend({"text": [f"{t}:{i}:a"], "n": [t * 1000 + 2 * i]})
                    ds.extend({"text": [f"{t}:{i}:b"], "n": [t * 1000 + 2 * i + 1]})
            else:
                ds.append({"text": f"{t}:{i}", "n": t * 1000 + i})
                ds.commit(f"{t}:{i}")

    assert _run_threads(write) == []
    ds.close()
    reopened = tensordb.load(path, read_only=True)
    values = reopened.n.numpy().reshape(-1).tolist()
    odd = [t * 1000 + j for t in range(1, THREADS, 2) for j in range(20)]
    even = [t * 1000 + i for t in range(0, THREADS, 2) for i in range(10)]
    assert sorted(values) == sorted(odd + even)
    # A batch lands whole: its two rows are next to each other.
    for t in range(1, THREADS, 2):
        for i in range(10):
            at = values.index(t * 1000 + 2 * i)
            assert values[at + 1] == t * 1000 + 2 * i + 1
    assert len(reopened.log(show=False)) == (THREADS // 2) * 10
    assert tensordb.verify(path).ok


def test_other_threads_do_not_see_an_open_batch(tmp_path):
    ds = _new(str(tmp_path / "ds"))
    ds.extend({"text": ["kept"], "n": [0]})
    inside, seen = threading.Event(), threading.Event()
    lengths: list[int] = []

    def reader() -> None:
        inside.wait(10)
        lengths.append(len(ds))  # a read takes no lock: it must not wait for the batch
        seen.set()

    thread = threading.Thread(target=reader)
    thread.start()
    with pytest.raises(RuntimeError):
        with ds:
            ds.extend({"text": ["discarded"], "n": [1]})
            assert len(ds) == 2  # the batch's own thread sees its writes
            inside.set()
            assert seen.wait(10), "a reader waited for the batch"
            raise RuntimeError("abandon the batch")
    thread.join(10)
    assert lengths == [1]
    assert ds.text.numpy(aslist=True) == ["kept"]


def test_vacuum_inside_a_batch_is_refused_and_loses_nothing(tmp_path):
    path = str(tmp_path / "ds")
    ds = _new(path)
    with ds:
        ds.extend({"text": ["a", "b"], "n": [1, 2]})
        with pytest.raises(VersionError, match="vacuum inside"):
            ds.vacuum(grace_seconds=0)
        ds.extend({"text": ["c"], "n": [3]})
    assert ds.n.numpy().reshape(-1).tolist() == [1, 2, 3]
    ds.close()
    assert tensordb.load(path, read_only=True).text.numpy(aslist=True) == ["a", "b", "c"]
    assert tensordb.verify(path).ok


def _child_writes(ds: tensordb.Dataset, queue) -> None:
    try:
        ds.extend({"text": ["child"], "n": [99]})
        queue.put("wrote")
    except LockedError as e:
        queue.put(f"LockedError: {e}")
    except BaseException as e:  # reported to the parent
        queue.put(f"{type(e).__name__}: {e}")
    finally:
        ds.close()  # must not release the parent's lock


@pytest.mark.parametrize("parent_wrote_first", [False, True])
def test_forked_child_gets_a_clear_error_and_the_parent_keeps_its_lock(tmp_path, parent_wrote_first):
    path = str(tmp_path / "ds")
    ds = _new(path)
    if parent_wrote_first:
        ds.extend({"text": ["parent"], "n": [1]})  # starts the handle's writer threads before the fork
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_writes, args=(ds, queue))
    child.start()
    child.join(30)
    assert child.exitcode == 0, "the child hung or crashed"
    message = queue.get(timeout=5)
    assert message.startswith("LockedError"), message
    assert "fork" in message and str(os.getpid()) in message
    # The parent still holds the lock and can write; no second writer got in.
    with pytest.raises(LockedError):
        tensordb.load(path)
    ds.extend({"text": ["after"], "n": [2]})
    expected = (["parent"] if parent_wrote_first else []) + ["after"]
    assert ds.text.numpy(aslist=True) == expected
    ds.close()
    reopened = tensordb.load(path, read_only=True)
    assert reopened.text.numpy(aslist=True) == expected
    assert np.array_equal(reopened.n.numpy().reshape(-1), [1, 2][-len(expected):])
