"""Child process of test_crash_workloads: runs a random workload until it is killed.

Usage: python _crash_child.py DATASET_PATH LOG_PATH SEED [TRAIN_PROBABILITY]

Before each operation it logs ``B <json>`` and after it ``D <json>``, each line
flushed and fsynced, so the parent knows exactly which operations completed and
which one was in flight when the SIGKILL came.
"""

from __future__ import annotations

import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from helpers import DIM, meta_of, parse_text, text_of, vector  # noqa: E402

import tensordb  # noqa: E402

CORPUS = 300
QUERIES = 40


def embed(texts):
    """Text ``doc:vN`` embeds to the row's own vector, so queries find their documents."""
    return np.stack([vector(*parse_text(t)) for t in texts])


def main() -> None:
    path, log_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    train_p = float(sys.argv[4]) if len(sys.argv) > 4 else 0.1
    rng = random.Random(seed)
    log = open(log_path, "a")

    def note(kind: str, record: dict) -> None:
        log.write(f"{kind} {json.dumps(record)}\n")
        log.flush()
        os.fsync(log.fileno())

    vs = tensordb.VectorStore(path, embedding_function=embed)
    ds = vs.dataset
    ids = ds.id.numpy(aslist=True)
    versions = {d: parse_text(t)[1] for d, t in zip(ids, ds.text.numpy(aslist=True))}
    note("S", {"pid": os.getpid(), "rows": len(ids)})
    counter = 0

    def new_ids(n: int) -> list[str]:
        nonlocal counter
        out = [f"s{seed}-{counter + i}" for i in range(n)]
        counter += n
        return out

    def add(docs: list[str]) -> None:
        vs.add(text=[text_of(d, 0) for d in docs], metadata=[meta_of(d, 0) for d in docs],
               embedding=np.stack([vector(d, 0) for d in docs]), id=docs)

    if len(ids) < CORPUS:
        docs = new_ids(CORPUS - len(ids))
        note("B", {"op": "add", "docs": docs})
        add(docs)
        ids += docs
        versions.update((d, 0) for d in docs)
        note("D", {"op": "add", "docs": docs})

    for _ in range(10_000):
        r = rng.random()
        live = [d for d in ids if d in versions]
        if r < train_p and len(live) >= QUERIES:
            docs = rng.sample(live, QUERIES)
            queries = [text_of(d, versions[d]) for d in docs]
            note("B", {"op": "train"})
            job = vs.deep_memory.train(queries, [[d] for d in docs], max_seconds=rng.uniform(0.3, 1.5), seed=seed)
            note("D", {"op": "train_started", "job": job})
            status = vs.deep_memory.wait(job)["status"]
            note("D", {"op": "train_done", "job": job, "status": status})
        elif r < 0.4:
            docs = new_ids(rng.randint(1, 25))
            note("B", {"op": "add", "docs": docs})
            add(docs)
            versions.update((d, 0) for d in docs)
            ids += docs
            note("D", {"op": "add", "docs": docs})
        elif r < 0.55 and len(live) > 50:
            docs = rng.sample(live, rng.randint(1, 10))
            note("B", {"op": "delete", "docs": docs})
            vs.delete(ids=docs)
            for d in docs:
                del versions[d]
            note("D", {"op": "delete", "docs": docs})
        elif r < 0.75 and live:
            docs = rng.sample(live, rng.randint(1, 10))
            new = {d: versions[d] + 1 for d in docs}
            note("B", {"op": "update", "versions": new})
            order = ds.id.numpy(aslist=True)
            rows = [order.index(d) for d in docs]
            ds.update(rows, {"text": [text_of(d, new[d]) for d in docs],
                             "metadata": [meta_of(d, new[d]) for d in docs],
                             "embedding": np.stack([vector(d, new[d]) for d in docs])})
            versions.update(new)
            note("D", {"op": "update", "versions": new})
        elif r < 0.85 and len(live) > 50:
            # one atomic batch: add some, delete some
            docs = new_ids(rng.randint(1, 8))
            gone = rng.sample(live, rng.randint(1, 5))
            note("B", {"op": "batch", "docs": docs, "gone": gone})
            with ds:
                add(docs)
                vs.delete(ids=gone)
            versions.update((d, 0) for d in docs)
            ids += docs
            for d in gone:
                del versions[d]
            note("D", {"op": "batch", "docs": docs, "gone": gone})
        else:
            note("B", {"op": "commit"})
            cid = ds.commit(f"round {seed}")
            note("D", {"op": "commit", "commit": cid})
        ids = [d for d in ids if d in versions]
    assert DIM == ds.embedding.meta.dim


if __name__ == "__main__":
    main()
