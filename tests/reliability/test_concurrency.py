"""Concurrency: readers never see a torn snapshot while a writer works; one writer at a time.

Row ``r<i>`` sits at position ``i`` (the writer only appends and updates) and at
version ``v`` has text ``r<i>:v<v>``, metadata ``{"doc": "r<i>", "v": v}`` and the
embedding ``vector("r<i>", v)``; an update changes all three in one atomic call.
So a reader can check every row it sees: the three values agree, tensors have
equal lengths, and (across its successive reads) row counts and versions never
go backwards.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import threading
import time

import numpy as np
import pytest

import tensordb
from tensordb.errors import LockedError

from .helpers import FIGURES, check_row, meta_of, parse_text, scale, text_of, vector

DURATION = scale(4.0, 30.0)
READERS = 4


def rows_for(docs: list[str], version: int = 0) -> dict:
    return {"text": [text_of(d, version) for d in docs], "metadata": [meta_of(d, version) for d in docs],
            "embedding": np.stack([vector(d, version) for d in docs]), "id": docs}


def make_store(path: str, n: int = 40) -> None:
    vs = tensordb.VectorStore(path)
    vs.add(**rows_for([f"r{i}" for i in range(n)]))
    vs.dataset.commit("initial")
    vs.close()


def write_loop(ds, seconds: float, seed: int) -> int:
    """Extend, update and commit for ``seconds``; returns the number of completed writes."""
    rng = random.Random(seed)
    versions = {d: parse_text(t)[1] for d, t in zip(ds.id.numpy(aslist=True), ds.text.numpy(aslist=True))}
    writes = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r = rng.random()
        if r < 0.4:
            n = len(versions)
            docs = [f"r{i}" for i in range(n, n + rng.randint(1, 20))]
            ds.extend(rows_for(docs))
            versions.update((d, 0) for d in docs)
        elif r < 0.9:
            rows = sorted(rng.sample(range(len(versions)), rng.randint(1, 8)))
            docs = [f"r{i}" for i in rows]
            new = {d: versions[d] + 1 for d in docs}
            ds.update(rows, {"text": [text_of(d, new[d]) for d in docs],
                             "metadata": [meta_of(d, new[d]) for d in docs],
                             "embedding": np.stack([vector(d, new[d]) for d in docs])})
            versions.update(new)
        else:
            ds.commit(f"w{writes}")
        writes += 1
    return writes


def check_snapshot(view, seen: dict[str, int]) -> int:
    """Check one consistent snapshot (a dataset handle or a query view); returns its row count."""
    ids = view.id.numpy(aslist=True)
    texts = view.text.numpy(aslist=True)
    metas = view.metadata.numpy(aslist=True)
    embs = view.embedding.numpy()
    assert len(ids) == len(texts) == len(metas) == len(embs), "tensors of one snapshot differ in length"
    for doc, text, meta, emb in zip(ids, texts, metas, embs):
        version = check_row(doc, text, meta, emb)
        assert version >= seen.get(doc, 0), f"{doc}: version went back from {seen[doc]} to {version}"
        seen[doc] = version
    return len(ids)


def check_positions(ds) -> None:
    ids = ds.id.numpy(aslist=True)
    assert ids == [f"r{i}" for i in range(len(ids))], "rows out of place"


def reader_loop(path: str, deadline: float, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    seen: dict[str, int] = {}
    last_len = 0
    reads = 0
    while time.time() < deadline:
        ds = tensordb.load(path, read_only=True)
        n = check_snapshot(ds, seen)
        check_positions(ds)
        assert n >= last_len, f"row count went back from {last_len} to {n}"
        last_len = n
        i = rng.randrange(n)
        view = ds.query(f"select * where id == 'r{i}'")
        assert len(view) == 1 and check_snapshot(view, {}) == 1
        view = ds.query("select * where metadata['v'] >= 1 order by metadata['v'] desc limit 5")
        check_snapshot(view, {})
        vs = tensordb.VectorStore(path, read_only=True)
        version = parse_text(vs.dataset.text[i].numpy())[1]  # the store's own snapshot may be newer
        got = vs.search(embedding=vector(f"r{i}", version), k=3, return_tensors=["id", "text", "metadata", "embedding"])
        for doc, text, meta, emb in zip(got["id"], got["text"], got["metadata"], got["embedding"]):
            check_row(doc, text, meta, np.asarray(emb, np.float32))
        assert got["id"][0] == f"r{i}", "the exact vector of a row must rank that row first"
        reads += 3
    return {"reads": reads, "rows": last_len}


def _reader_proc(path, deadline, seed, queue):
    try:
        queue.put(("ok", reader_loop(path, deadline, seed)))
    except BaseException as e:  # report, don't hang the parent
        import traceback

        queue.put(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))


def _writer_proc(path, seconds, seed, queue, started):
    try:
        ds = tensordb.load(path)
        started.set()
        writes = write_loop(ds, seconds, seed)
        ds.close()
        queue.put(("writer", writes, time.time()))
    except BaseException as e:
        started.set()
        queue.put(("writer-error", f"{type(e).__name__}: {e}", time.time()))


def test_readers_see_consistent_snapshots_across_processes(tmp_path):
    path = str(tmp_path / "vs")
    make_store(path)
    ctx = mp.get_context("spawn")
    results, wq = ctx.Queue(), ctx.Queue()
    started = ctx.Event()
    writer = ctx.Process(target=_writer_proc, args=(path, DURATION, 7, wq, started))
    writer.start()
    assert started.wait(60)
    deadline = time.time() + DURATION
    readers = [ctx.Process(target=_reader_proc, args=(path, deadline, s, results)) for s in range(READERS)]
    for p in readers:
        p.start()

    # A second writer is refused at once while the first holds the lock ...
    t0 = time.monotonic()
    with pytest.raises(LockedError):
        tensordb.load(path)
    assert time.monotonic() - t0 < 1.0, "LockedError must come at once without lock_timeout"
    with pytest.raises(LockedError):
        tensordb.VectorStore(path)
    # ... and one with lock_timeout waits, then gets the lock when the first closes.
    second = tensordb.load(path, lock_timeout=DURATION + 120)
    got_lock_at = time.time()
    kind, writes, closed_at = wq.get(timeout=60)
    assert kind == "writer", writes
    assert got_lock_at >= closed_at - 0.01, "the second writer got in while the first still wrote"
    second.append({"text": text_of("r999999", 0), "metadata": meta_of("r999999", 0),
                   "embedding": vector("r999999", 0), "id": "r999999"})
    second.close()

    outcomes = [results.get(timeout=DURATION + 120) for _ in readers]
    for p in readers + [writer]:
        p.join(60)
    errors = [o[1] for o in outcomes if o[0] != "ok"]
    assert not errors, errors[0]
    assert tensordb.verify(path).ok
    FIGURES["concurrency: reader snapshots checked (processes)"] += sum(o[1]["reads"] for o in outcomes)
    FIGURES["concurrency: writes during reads (processes)"] += writes


def test_reader_threads_and_writer_thread(tmp_path):
    """One process: a writer thread writes through its handle while reader threads read, through
    their own read-only handles and through queries on the writer's live handle."""
    path = str(tmp_path / "vs")
    make_store(path)
    ds = tensordb.load(path)
    stop = time.monotonic() + DURATION
    errors: list[str] = []
    counts = {"reads": 0}

    def guard(fn):
        def run():
            try:
                fn()
            except BaseException as e:
                import traceback

                errors.append(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        return run

    def live_reader():
        seen: dict[str, int] = {}
        while time.monotonic() < stop and not errors:
            view = ds.query("select *")
            check_snapshot(view, seen)
            view = ds[0:5]
            check_snapshot(view, {})
            counts["reads"] += 2

    def own_handle_reader():
        deadline = time.time() + (stop - time.monotonic())
        counts["reads"] += reader_loop(path, deadline, 3)["reads"]

    writes = {}
    threads = [threading.Thread(target=guard(live_reader)) for _ in range(2)]
    threads += [threading.Thread(target=guard(own_handle_reader)) for _ in range(2)]
    threads.append(threading.Thread(target=guard(lambda: writes.setdefault("n", write_loop(ds, DURATION, 11)))))
    for t in threads:
        t.start()
    for t in threads:
        t.join(DURATION + 120)
    ds.close()
    assert not errors, errors[0]
    assert tensordb.verify(path).ok
    FIGURES["concurrency: reader snapshots checked (threads)"] += counts["reads"]
    FIGURES["concurrency: writes during reads (threads)"] += writes.get("n", 0)
