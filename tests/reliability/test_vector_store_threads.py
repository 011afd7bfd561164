"""One VectorStore shared by threads: concurrent add, upsert and delete calls each land whole."""

from __future__ import annotations

import threading
import uuid

import numpy as np

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
