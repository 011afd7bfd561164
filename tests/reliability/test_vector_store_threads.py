"""One VectorStore shared by threads: concurrent add, upsert and delete calls each land whole."""

from __future__ import annotations

import threading
import uuid

import numpy as np
import pytest

from tensordb import VectorStore
from tensordb.errors import SampleError

THREADS = 8
CALLS = 50
DIM = 8


def run_threads(work) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(t: int) -> None:
        start.wait()
        try:
            work(t)
        except BaseException as e:  # noqa: BLE001 - collected and asserted on below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_threads_adding_distinct_ids_store_every_row(tmp_path) -> None:
    vs = VectorStore(str(tmp_path / "vs"))

    def work(t: int) -> None:
        for c in range(CALLS):
            vs.add(text=[f"{t}-{c}"], metadata=[{"t": t, "c": c}], embedding=[np.full(DIM, t * CALLS + c + 1.0)],
                   id=[f"t{t}-c{c}"])

    assert run_threads(work) == []
    ids = vs.dataset.id.numpy(aslist=True)
    assert sorted(ids) == sorted(f"t{t}-c{c}" for t in range(THREADS) for c in range(CALLS))
    texts = vs.dataset.text.numpy(aslist=True)
    embeddings = vs.dataset.embedding.numpy()
    for doc_id, text, vector in zip(ids, texts, embeddings, strict=True):
        t, c = (int(part[1:]) for part in doc_id.split("-"))
        assert text == f"{t}-{c}" and vector[0] == t * CALLS + c + 1.0
    assert vs.dataset.verify().ok
    vs.close()
    reopened = VectorStore(str(tmp_path / "vs"), read_only=True)
    assert len(reopened) == THREADS * CALLS


def test_threads_adding_the_same_new_id_store_it_once() -> None:
    vs = VectorStore(f"mem://{uuid.uuid4().hex}")
    vs.add(text=["seed"], embedding=[np.ones(DIM)], id=["seed"])

    def work(t: int) -> None:
        for c in range(CALLS // 5):
            try:
                vs.add(text=[f"{t}"], embedding=[np.full(DIM, t + 1.0)], id=[f"shared-{c}"])
            except SampleError as e:
                assert "already in the store" in str(e)

    assert run_threads(work) == []
    ids = vs.dataset.id.numpy(aslist=True)
    assert sorted(ids) == sorted(["seed"] + [f"shared-{c}" for c in range(CALLS // 5)])
    assert vs.dataset.verify().ok


def test_update_embedding_and_delete_on_threads_never_write_to_a_shifted_row(tmp_path):
    """update_embedding finds its rows, embeds and writes in one step: a concurrent delete cannot move them."""
    import threading

    started, release = threading.Event(), threading.Event()

    def slow_embedding(texts):
        started.set()
        release.wait(10)  # a delete on another thread tries to run while the texts embed
        return np.stack([np.full(4, float(t.split("-")[1]), np.float32) for t in texts])

    vs = VectorStore(str(tmp_path / "vs"))
    vs.add(text=[f"doc-{i}" for i in range(6)], embedding=np.zeros((6, 4), np.float32),
           id=[f"d{i}" for i in range(6)])
    updater = threading.Thread(target=vs.update_embedding, kwargs={"ids": ["d4"],
                                                                   "embedding_function": slow_embedding})
    updater.start()
    assert started.wait(10)
    deleter = threading.Thread(target=vs.delete, kwargs={"ids": ["d0"]})
    deleter.start()
    release.set()
    updater.join(10)
    deleter.join(10)
    got = vs.get(ids=[f"d{i}" for i in range(1, 6)], return_tensors=["id", "embedding"])
    vectors = dict(zip(got["id"], got["embedding"]))
    assert np.allclose(vectors["d4"], 4.0)  # the text it was computed from
    assert all(np.allclose(vectors[f"d{i}"], 0.0) for i in (1, 2, 3, 5))
    assert "d0" not in vs.get(ids=["d0"])["id"]


@pytest.mark.parametrize("read", ["get", "search"])
def test_reads_by_id_come_from_one_snapshot_while_another_thread_deletes(tmp_path, monkeypatch, read):
    """The rows an id lookup finds and the values read for them come from the same snapshot."""
    vs = VectorStore(str(tmp_path / "vs"))
    ids = [f"d{i}" for i in range(8)]
    vs.add(text=[f"text of {i}" for i in ids], embedding=np.eye(8, dtype=np.float32), id=ids)
    found = VectorStore.rows_for_ids

    def rows_then_a_delete_lands(self, *args, **kwargs):
        rows = found(self, *args, **kwargs)
        deleter = threading.Thread(target=self.dataset.pop, args=(0,))  # the row of d0
        deleter.start()  # another thread's delete lands between the lookup and the read
        deleter.join(10)
        return rows

    monkeypatch.setattr(VectorStore, "rows_for_ids", rows_then_a_delete_lands)
    if read == "get":
        got = vs.get(ids=["d3", "d5"])
    else:
        got = vs.search(embedding=np.eye(8, dtype=np.float32)[3], ids=["d3", "d5"], k=2)
    assert sorted(zip(got["id"], got["text"])) == [("d3", "text of d3"), ("d5", "text of d5")]
    assert "d0" not in vs.get(ids=["d0"])["id"]  # the delete did land
