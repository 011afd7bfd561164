"""Id lookup benchmark: documents by id through the id index against TQL ``id IN (...)``.

    python benchmarks/id_lookup.py [--rows 20000] [--ids 2000] [--many 30000] [--out results.json]

Data: ``rows`` chunks in a ``mem://`` VectorStore (text, metadata ``{"k": i % 3}``, 8-d
embeddings, ids in UUID form, as LangChain and LlamaIndex make them). Lookups ask for
``ids`` stored ids in shuffled order (seed 0).

- baseline: the path the integrations took before, the ids printed into a TQL
  ``where id IN ('...', ...)`` query, then the matching rows read back;
- ``VectorStore.get(ids=...)``: rows from the id index, then read back; "cold" is the first
  lookup after a write (it rebuilds the index), "warm" the next ones;
- LangChain ``TensorDB.get_by_ids`` and LlamaIndex ``get_nodes`` on the same store (warm);
- the same with ``many`` ids on ``max(rows, many + 1000)`` rows, where the TQL text
  passes the parser's length limit (the baseline's error is recorded).

Times are medians of three runs (one for the baseline, which is slow).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import print_table, write_json  # noqa: E402

from tensordb import VectorStore  # noqa: E402

DIM = 8


def make_store(rows: int) -> VectorStore:
    vs = VectorStore(f"mem://id-lookup-{uuid.uuid4().hex}", overwrite=True)
    rng = np.random.default_rng(0)
    vs.add(text=[f"text {i}" for i in range(rows)], metadata=[{"k": i % 3} for i in range(rows)],
           embedding=rng.standard_normal((rows, DIM)).astype(np.float32), id=doc_ids(rows))
    return vs


def doc_ids(rows: int) -> list[str]:
    return [str(uuid.UUID(int=i)) for i in range(rows)]


def wanted_ids(rows: int, count: int) -> list[str]:
    return random.Random(0).sample(doc_ids(rows), count)


def tql_lookup(vs: VectorStore, ids: list[str]) -> dict[str, list]:
    """The old integration path: ``id IN (...)`` as TQL text, then the rows read back."""
    quoted = ", ".join("'" + i.replace("'", "''") + "'" for i in ids)
    rows = vs.rows_where(f"id IN ({quoted})")
    view = vs.dataset[rows.tolist()]
    return {name: view[name].numpy(aslist=True) for name in ("text", "metadata", "id")}


def median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cold_get(vs: VectorStore, ids: list[str]) -> float:
    """One lookup right after a write, so the id index is rebuilt."""
    vs.upsert(text=["touch"], embedding=[[1.0] * DIM], id=["touch-" + uuid.uuid4().hex])
    start = time.perf_counter()
    vs.get(ids=ids)
    return time.perf_counter() - start


def measure(rows: int, count: int, baseline: bool) -> list[dict]:
    from tensordb.integrations.langchain import TensorDB
    from tensordb.integrations.llama_index import TensorDBVectorStore

    vs = make_store(rows)
    ids = wanted_ids(rows, count)
    out = []
    if baseline:
        try:
            start = time.perf_counter()
            found = tql_lookup(vs, ids)
            seconds = time.perf_counter() - start
            assert sorted(found["id"]) == sorted(ids), "the baseline returned the wrong documents"
            out.append({"path": "TQL id IN (...) (old)", "seconds": seconds})
        except Exception as e:  # noqa: BLE001 - the baseline's failure is a result
            out.append({"path": "TQL id IN (...) (old)", "seconds": float("nan"), "error": str(e)[:80]})
    out.append({"path": "VectorStore.get, cold index", "seconds": statistics.median(cold_get(vs, ids)
                                                                                   for _ in range(3))})
    got = vs.get(ids=ids)
    assert got["id"] == ids, "VectorStore.get returned the wrong documents"
    out.append({"path": "VectorStore.get, warm index", "seconds": median_seconds(lambda: vs.get(ids=ids), 3)})
    out.append({"path": "VectorStore.rows_for_ids, warm", "seconds": median_seconds(lambda: vs.rows_for_ids(ids), 3)})
    lc = TensorDB(vs)
    out.append({"path": "LangChain get_by_ids", "seconds": median_seconds(lambda: lc.get_by_ids(ids), 3)})
    li = TensorDBVectorStore(vs)
    out.append({"path": "LlamaIndex get_nodes", "seconds": median_seconds(lambda: li.get_nodes(ids), 3)})
    for row in out:
        row.update(rows=rows, ids=count)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--ids", type=int, default=2_000)
    parser.add_argument("--many", type=int, default=30_000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    results = measure(args.rows, args.ids, baseline=True)
    results += measure(max(args.rows, args.many + 1000), args.many, baseline=True)
    print_table("Documents by id", results, ["rows", "ids", "path", "seconds", "error"])
    base = next(r for r in results if r["ids"] == args.ids and r["path"].startswith("TQL"))
    warm = next(r for r in results if r["ids"] == args.ids and r["path"] == "VectorStore.get, warm index")
    speedup = base["seconds"] / warm["seconds"]
    print(f"\nspeed-up of VectorStore.get (warm) over TQL id IN, {args.ids} ids on {args.rows} rows: {speedup:,.0f}x")
    write_json("id_lookup", {"params": vars(args), "results": results, "speedup_warm_vs_tql": speedup},
               args.out)


if __name__ == "__main__":
    main()
