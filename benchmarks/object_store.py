"""Object-storage benchmark: tensordb on a loopback S3 server (moto) against a local path, plain puts and LanceDB.

    python benchmarks/object_store.py [--rows 200000] [--repeats 3] [--queries 30] [--out results.json]

The benchmark starts moto in server mode on 127.0.0.1 (a free port) in this process, creates a bucket,
and stops the server at the end. Data: the rows of ``benchmarks/ingest.py`` (text ~200 bytes, JSON
metadata, a 384-d float32 embedding and a uuid id per row, in batches of ``--batch``).

Every measurement runs in a fresh worker process (credentials and the endpoint come as ``creds=``,
each worker gets an empty private ``TENSORDB_CACHE_DIR``):

- ingest: ``ds.extend`` per batch + one ``commit`` (as ingest.py), on S3 and on a local directory;
  ``--repeats`` runs each, the systems taking turns, the median run counts;
- the floor: plain obstore puts (``If-None-Match``, as tensordb writes) of objects of exactly the sizes
  tensordb stored, to the same server, with as many in flight as tensordb's ingest had at most (observed
  by wrapping its store's ``put``); then the same objects read back with 8 in flight (the read floor);
- LanceDB: the same rows into ``s3://<bucket>/lance-*`` on the same server;
- cold open + first top-10 query (``order by cosine_similarity(embedding, ARRAY[...]) desc limit 10``,
  the ids fetched) in a fresh process with an empty cache, with its requests: counted by the S3Store
  (``store.requests``, by kind) and by the server (its request log, by method);
- warm top-10 query: the median of ``--queries`` more queries in that process;
- reading the embedding column (``ds.embedding.numpy()``): cold (empty cache, streamed from S3)
  and warm (a fresh dataset object over the filled cache);
- two writer processes appending at once, ``--writer-rows`` rows each in ``--writer-commits`` commits:
  on S3 without a lock (each commit a compare-and-swap of ``refs``; failed swaps counted), and locally
  (the writers take turns on the flock). The final row count and every id are checked.

Every result set is checked against numpy's exact cosine top-10.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import dir_bytes, peak_rss_mb, print_table, print_targets, timed, write_json  # noqa: E402
from ingest import DIM, make_batch, raw_bytes  # noqa: E402
from search import K, make_queries, tql  # noqa: E402

BUCKET = "tensordb-bench"
ACCESS_KEY, SECRET_KEY, REGION = "bench-access-key", "bench-secret-key", "us-east-1"
PHASES_ENV = "TENSORDB_BENCH_PHASES"  # set for a worker whose parent counts server requests per phase
WRITE_THREADS = 4  # tensordb's ChunkWriter default, for the floor when no S3 ingest ran to observe it
READ_THREADS = 8  # the S3Store's prefetch: gets in flight while streaming a column
WORKER_TIMEOUT_S = 1800


# -- the server ---------------------------------------------------------------------------------
class RequestCounter(logging.Handler):
    """Counts the requests the moto server answers, by kind, from werkzeug's request log.

    Installing it on the ``werkzeug`` logger also keeps werkzeug from printing a line per request.
    """

    LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3})')
    ANSI = re.compile(r"\x1b\[[0-9;]*m")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        match = self.LINE.search(self.ANSI.sub("", record.getMessage()))  # werkzeug colours some lines
        if not match:
            return
        method, target, status = match.groups()
        query = target.partition("?")[2]
        if method == "GET" and ("list-type" in query or "prefix=" in query or target.rstrip("/").count("/") <= 1):
            kind = "list"
        elif method == "GET" and status == "206":
            kind = "get_range"
        elif method == "POST" and "delete" in query:
            kind = "delete_many"
        else:
            kind = method.lower()
        with self._lock:
            self.counts[kind] += 1
            self.counts["total"] += 1
            if status == "412":
                self.counts["412 precondition failed"] += 1
            elif status.startswith(("4", "5")) and status != "404":
                self.counts[f"{status} errors"] += 1

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> tuple[Any, str, RequestCounter]:
    """moto in server mode on 127.0.0.1 with the bucket created; returns (server, endpoint, counter)."""
    from moto.server import ThreadedMotoServer

    counter = RequestCounter()
    log = logging.getLogger("werkzeug")
    log.setLevel(logging.INFO)
    log.addHandler(counter)
    log.propagate = False
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                 region_name=REGION).create_bucket(Bucket=BUCKET)
    return server, endpoint, counter


def obstore_bucket(endpoint: str, prefix: str = ""):
    from obstore.store import S3Store

    return S3Store(BUCKET, endpoint=endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY,
                   region=REGION, allow_http=True, prefix=prefix or None)


def object_sizes(endpoint: str, prefix: str) -> dict[str, int]:
    import obstore

    store = obstore_bucket(endpoint)
    return {m["path"]: m["size"] for batch in obstore.list(store, prefix=prefix.rstrip("/") + "/") for m in batch}


def delete_prefix(endpoint: str, prefix: str) -> None:
    """Free the server's memory of a finished run (moto keeps objects in this process)."""
    import obstore

    keys = list(object_sizes(endpoint, prefix))
    store = obstore_bucket(endpoint)
    for start in range(0, len(keys), 1000):
        obstore.delete(store, keys[start : start + 1000])


# -- tensordb access ----------------------------------------------------------------------------
def s3_creds(endpoint: str) -> dict[str, str]:
    return {"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY, "endpoint_url": endpoint,
            "aws_region": REGION}


def open_location(path: str, endpoint: str) -> tuple[Any, Any]:
    """What to hand ``tensordb.empty/load`` for ``path``, and the S3Store whose request log counts (or None).

    For ``s3://`` the store is opened through ``tensordb.storage.open_store`` with the dataset's own
    immutable prefixes (as ``tensordb.load(path, creds=...)`` opens it), so the request log is reachable;
    a local path goes in as is.
    """
    if not path.startswith("s3://"):
        return path, None
    from tensordb.format.manifest import IMMUTABLE_PREFIXES
    from tensordb.storage import open_store

    store = open_store(path, creds=s3_creds(endpoint), immutable_prefixes=IMMUTABLE_PREFIXES)
    return store, store


def request_counts(store: Any) -> dict[str, int]:
    """The S3Store's requests by kind, plus ``total`` (empty for a local store)."""
    if store is None:
        return {}
    log = store.requests
    counts = log.counts() if callable(log.counts) else log.counts
    counts = {kind: n for kind, n in counts.items() if n}
    return {**counts, "total": log.total}


def phase(name: str) -> None:
    """Tell the parent a phase ends here, and wait until it has read the server's request count."""
    if os.environ.get(PHASES_ENV):
        print(f"PHASE {name}", flush=True)
        sys.stdin.readline()


# -- workers (each in a fresh process) ------------------------------------------------------------
def worker_ingest_tensordb(path: str, endpoint: str, rows: int, batch: int) -> dict:
    import tensordb

    location, store = open_location(path, endpoint)
    in_flight = track_puts_in_flight(store)
    phase("begin")
    ds = tensordb.empty(location, overwrite=True)
    ds.create_tensor("text", htype="text")
    ds.create_tensor("metadata", htype="json")
    ds.create_tensor("embedding", htype="embedding", dtype="float32")
    ds.create_tensor("id", htype="text")
    elapsed = 0.0
    for start in range(0, rows, batch):
        data = make_batch(start, min(rows, start + batch))
        seconds, _ = timed(ds.extend, data)
        elapsed += seconds
    seconds, _ = timed(ds.commit, "ingest")
    elapsed += seconds
    ds.close()
    phase("end")
    return {"seconds": elapsed, "peak_rss_mb": peak_rss_mb(), "requests": request_counts(store),
            "max_puts_in_flight": in_flight["max"]}


def track_puts_in_flight(store: Any) -> dict[str, int]:
    """Wrap ``store.put`` to record the most puts running at once (the floor then uses as many)."""
    seen = {"now": 0, "max": 0}
    if store is None:
        return seen
    lock, plain_put = threading.Lock(), store.put

    def put(key: str, data: Any) -> None:
        with lock:
            seen["now"] += 1
            seen["max"] = max(seen["max"], seen["now"])
        try:
            plain_put(key, data)
        finally:
            with lock:
                seen["now"] -= 1

    store.put = put
    return seen


def lance_options(endpoint: str) -> dict[str, str]:
    return {"aws_endpoint": endpoint, "aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY,
            "aws_region": REGION, "allow_http": "true"}


def lance_arrow(data: dict):
    import pyarrow as pa

    return pa.table({
        "text": pa.array(data["text"], pa.string()),
        "metadata": pa.array(data["metadata"]),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(data["embedding"].reshape(-1)), DIM),
        "id": pa.array(data["id"], pa.string()),
    })


def worker_ingest_lancedb(path: str, endpoint: str, rows: int, batch: int) -> dict:
    """As ingest.py's LanceDB worker, on the S3 server."""
    import lancedb

    phase("begin")
    db = lancedb.connect(path, storage_options=lance_options(endpoint))
    table = None
    elapsed = 0.0
    for start in range(0, rows, batch):
        data = make_batch(start, min(rows, start + batch))
        t0 = time.perf_counter()
        arrow = lance_arrow(data)
        if table is None:
            table = db.create_table("docs", data=arrow, mode="overwrite")
        else:
            table.add(arrow)
        elapsed += time.perf_counter() - t0
    phase("end")
    return {"seconds": elapsed, "peak_rss_mb": peak_rss_mb()}


def worker_floor(endpoint: str, prefix: str, sizes_file: str, threads: int) -> dict:
    """Plain puts of objects of the given sizes (If-None-Match, ``threads`` in flight), then gets of them."""
    from concurrent.futures import ThreadPoolExecutor

    import obstore

    with open(sizes_file) as f:
        sizes = json.load(f)
    store = obstore_bucket(endpoint, prefix)
    block = np.random.default_rng(0).bytes(max(sizes))
    keys = [f"floor-{i}" for i in range(len(sizes))]

    def put(i: int) -> None:
        obstore.put(store, keys[i], memoryview(block)[: sizes[i]], mode="create")

    def get(i: int) -> int:
        return len(obstore.get(store, keys[i]).bytes())

    phase("begin")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, range(len(sizes))))
    put_s = time.perf_counter() - t0
    phase("puts")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(READ_THREADS) as pool:
        got = sum(pool.map(get, range(len(sizes))))
    get_s = time.perf_counter() - t0
    phase("gets")
    assert got == sum(sizes), (got, sum(sizes))
    return {"seconds": put_s, "get_seconds": get_s, "objects": len(sizes), "bytes": sum(sizes),
            "threads": threads, "peak_rss_mb": peak_rss_mb()}


def worker_query_tensordb(path: str, endpoint: str, queries: int) -> dict:
    """Cold open + first query (empty cache), then warm queries; the ids of every query come back."""
    import tensordb

    texts = [tql(q) for q in make_queries(queries + 1)]
    phase("begin")
    t0 = time.perf_counter()
    location, store = open_location(path, endpoint)
    ds = tensordb.load(location, read_only=True)
    open_s = time.perf_counter() - t0
    open_requests = request_counts(store)
    phase("open")
    ids = [ds.query(texts[0]).id.numpy(aslist=True)]
    cold_s = time.perf_counter() - t0
    first_requests = request_counts(store)
    phase("first_query")
    warm = []
    for text in texts[1:]:
        t1 = time.perf_counter()
        ids.append(ds.query(text).id.numpy(aslist=True))
        warm.append(time.perf_counter() - t1)
    warm_requests = request_counts(store)
    phase("warm")
    return {"open_s": open_s, "cold_s": cold_s, "warm_median_s": statistics.median(warm), "ids": ids,
            "open_requests": open_requests, "cold_requests": first_requests, "after_warm_requests": warm_requests,
            "peak_rss_mb": peak_rss_mb()}


def worker_query_lancedb(path: str, endpoint: str, queries: int) -> dict:
    import lancedb

    qs = make_queries(queries + 1)

    def search(table, q) -> list[str]:
        return table.search(q).metric("cosine").limit(K).to_arrow()["id"].to_pylist()

    phase("begin")
    t0 = time.perf_counter()
    table = lancedb.connect(path, storage_options=lance_options(endpoint)).open_table("docs")
    open_s = time.perf_counter() - t0
    phase("open")
    ids = [search(table, qs[0])]
    cold_s = time.perf_counter() - t0
    phase("first_query")
    warm = []
    for q in qs[1:]:
        t1 = time.perf_counter()
        ids.append(search(table, q))
        warm.append(time.perf_counter() - t1)
    phase("warm")
    return {"open_s": open_s, "cold_s": cold_s, "warm_median_s": statistics.median(warm), "ids": ids,
            "peak_rss_mb": peak_rss_mb()}


def worker_read(path: str, endpoint: str, rows: int, batch: int) -> dict:
    """The whole embedding column: cold (empty cache), then warm (a fresh dataset object, cache filled)."""
    import tensordb

    phase("begin")
    t0 = time.perf_counter()
    location, store = open_location(path, endpoint)
    cold = tensordb.load(location, read_only=True).embedding.numpy()
    cold_s = time.perf_counter() - t0
    requests = request_counts(store)
    phase("cold")
    del cold
    warm_s = []
    for _ in range(3):
        t0 = time.perf_counter()
        location, store = open_location(path, endpoint)
        matrix = tensordb.load(location, read_only=True).embedding.numpy()
        warm_s.append(time.perf_counter() - t0)
    warm_requests = request_counts(store)  # of the last warm read alone
    phase("warm")
    expected = np.concatenate([make_batch(s, min(rows, s + batch))["embedding"] for s in range(0, rows, batch)])
    assert np.array_equal(matrix, expected), "the embedding column read back differs from what was written"
    return {"cold_s": cold_s, "warm_s": min(warm_s), "bytes": matrix.nbytes, "cold_requests": requests,
            "warm_requests": warm_requests}


def worker_append(path: str, endpoint: str, first_row: int, rows: int, commits: int, start_at: float) -> dict:
    """One of the concurrent writers: opens the dataset, appends ``rows`` rows in ``commits`` commits."""
    import tensordb

    location, store = open_location(path, endpoint)
    swaps = Counter()
    if store is not None:  # count the commits' compare-and-swaps of refs, and the lost races among them
        from tensordb.errors import PreconditionFailedError

        plain_swap = store.swap

        def counting_swap(key: str, data: bytes, expected: str | None) -> None:
            swaps["swaps"] += 1
            swaps[f"swaps of {key.split('/')[0]}"] += 1
            try:
                plain_swap(key, data, expected)
            except PreconditionFailedError:
                swaps["failed_swaps"] += 1
                swaps[f"failed swaps of {key.split('/')[0]}"] += 1
                raise

        store.swap = counting_swap
    batches = writer_batches(first_row, rows, commits)
    time.sleep(max(0.0, start_at - time.time()))
    t0 = time.perf_counter()
    # Locally the writers take turns on the flock: the wait for it is part of the time.
    ds = tensordb.load(location, lock_timeout=WORKER_TIMEOUT_S) if store is None else tensordb.load(location)
    for start, stop in batches:
        ds.extend(make_batch(start, stop))
        ds.commit(f"append {start}..{stop}")
    ds.close()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "requests": request_counts(store), **swaps}


def writer_batches(first_row: int, rows: int, commits: int) -> list[tuple[int, int]]:
    """The (start, stop) rows of a writer's commits (make_batch's ids depend on the batch start)."""
    parts = np.array_split(np.arange(first_row, first_row + rows), commits)
    return [(int(p[0]), int(p[-1]) + 1) for p in parts if len(p)]


# -- running workers ----------------------------------------------------------------------------
def run_phased(counter: RequestCounter, *args: str, cache_dir: str | None = None) -> dict:
    """Run ``--worker ...`` in a fresh process; returns its JSON result plus the server's requests per phase."""
    env = {**os.environ, PHASES_ENV: "1"}
    if cache_dir:
        env["TENSORDB_CACHE_DIR"] = cache_dir
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        phases: dict[str, dict[str, int]] = {}
        last, result = counter.snapshot(), None
        for line in proc.stdout:
            if line.startswith("PHASE "):
                now = counter.snapshot()
                phases[line.split()[1]] = dict(now - last)
                last = now
                proc.stdin.write("\n")
                proc.stdin.flush()
            elif line.strip():
                result = line
        code = proc.wait(WORKER_TIMEOUT_S)
        if code != 0 or result is None:
            err.seek(0)
            raise RuntimeError(f"worker {args} failed (exit {code}):\n{err.read()[-4000:]}")
    out = json.loads(result)
    phases.pop("begin", None)  # imports and setup before the first measured step
    out["server_requests"] = phases
    return out


def run_writers(counter: RequestCounter, path: str, endpoint: str, first_row: int, rows: int, commits: int,
                cache_dirs: list[str]) -> dict:
    """Two writer processes at once, each appending ``rows`` rows; wall time from their common start."""
    start_at = time.time() + 3.0  # both have imported tensordb by then
    before = counter.snapshot()
    procs = []
    for i, cache_dir in enumerate(cache_dirs):
        args = ["--worker", "append", "--path", path, "--endpoint", endpoint, "--first-row",
                str(first_row + i * rows), "--rows", str(rows), "--commits", str(commits), "--start-at", str(start_at)]
        procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), *args], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "TENSORDB_CACHE_DIR": cache_dir}))
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=WORKER_TIMEOUT_S)
        if proc.returncode != 0:
            outs.append({"error": stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {proc.returncode}",
                         "stderr": stderr[-4000:]})
        else:
            outs.append(json.loads(stdout.strip().splitlines()[-1]))
    wall = time.time() - start_at
    return {"wall_s": wall, "writers": outs, "server_requests": dict(counter.snapshot() - before)}


def create_writers_dataset(path: str, endpoint: str) -> None:
    import tensordb

    location, _store = open_location(path, endpoint)
    ds = tensordb.empty(location, overwrite=True)
    ds.create_tensor("text", htype="text")
    ds.create_tensor("metadata", htype="json")
    ds.create_tensor("embedding", htype="embedding", dtype="float32")
    ds.create_tensor("id", htype="text")
    ds.commit("schema")
    ds.close()


def check_writers(path: str, endpoint: str, first_row: int, rows: int, commits: int, writers: int) -> dict:
    """The final row count and whether every appended id is there exactly once."""
    import tensordb

    location, _store = open_location(path, endpoint)
    ds = tensordb.load(location, read_only=True)
    ids = ds.id.numpy(aslist=True)
    expected = [i for w in range(writers) for start, stop in writer_batches(first_row + w * rows, rows, commits)
                for i in make_batch(start, stop)["id"]]
    return {"rows": len(ds), "expected_rows": writers * rows, "ids_match": sorted(ids) == sorted(expected)}


# -- the run --------------------------------------------------------------------------------------
def median_run(runs: list[dict]) -> dict:
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return {**ordered[len(ordered) // 2], "all_seconds": [r["seconds"] for r in runs]}


def median_query(runs: list[dict]) -> dict:
    """The run with the median cold time; warm is the median of the runs' warm medians."""
    ordered = sorted(runs, key=lambda r: r["cold_s"])
    out = {k: v for k, v in ordered[len(ordered) // 2].items() if k != "ids"}
    out["warm_median_s"] = statistics.median(r["warm_median_s"] for r in runs)
    out["all_cold_s"] = [r["cold_s"] for r in runs]
    return out


def exact_top_ids(rows: int, batch: int, queries: int) -> list[list[str]]:
    """numpy's exact cosine top-K ids for the benchmark's queries."""
    qs = make_queries(queries + 1)
    scores, ids = [], []
    for start in range(0, rows, batch):
        data = make_batch(start, min(rows, start + batch))
        m = data["embedding"]
        scores.append((m / np.linalg.norm(m, axis=1, keepdims=True)) @ qs.T)
        ids.extend(data["id"])
    s = np.concatenate(scores)
    top = np.argsort(-s, axis=0, kind="stable")[:K]
    return [[ids[i] for i in top[:, j]] for j in range(qs.shape[0])]


def mismatches(runs: list[dict], truth: list[list[str]]) -> int:
    return sum(got != want for run in runs for got, want in zip(run["ids"], truth))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each ingest and cold query (median counts)")
    parser.add_argument("--queries", type=int, default=30, help="warm queries after the first")
    parser.add_argument("--writer-rows", type=int, default=None, help="rows per concurrent writer (default rows/10)")
    parser.add_argument("--writer-commits", type=int, default=5, help="commits per concurrent writer")
    parser.add_argument("--no-tensordb-s3", action="store_true", help=argparse.SUPPRESS)  # baselines only (dev)
    parser.add_argument("--out", default=None, help="JSON output path (default benchmarks/results/object_store.json)")
    parser.add_argument("--worker", choices=["ingest-tensordb", "ingest-lancedb", "floor", "query-tensordb",
                                             "query-lancedb", "read", "append"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--sizes-file", help=argparse.SUPPRESS)
    parser.add_argument("--first-row", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--commits", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker_mode(args)))
        return

    scratch = tempfile.mkdtemp(prefix="tensordb-object-store-")
    server, endpoint, counter = start_server()
    caches = iter(range(1_000_000))

    def cache() -> str:  # an empty private object cache for each worker
        return os.path.join(scratch, f"cache-{next(caches)}")

    try:
        results = run(args, scratch, endpoint, counter, cache)
        report(args, results)
        write_json("object_store", results, args.out)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def run_worker_mode(args: argparse.Namespace) -> dict:
    if args.worker == "ingest-tensordb":
        return worker_ingest_tensordb(args.path, args.endpoint, args.rows, args.batch)
    if args.worker == "ingest-lancedb":
        return worker_ingest_lancedb(args.path, args.endpoint, args.rows, args.batch)
    if args.worker == "floor":
        return worker_floor(args.endpoint, args.path, args.sizes_file, args.threads)
    if args.worker == "query-tensordb":
        return worker_query_tensordb(args.path, args.endpoint, args.queries)
    if args.worker == "query-lancedb":
        return worker_query_lancedb(args.path, args.endpoint, args.queries)
    if args.worker == "read":
        return worker_read(args.path, args.endpoint, args.rows, args.batch)
    return worker_append(args.path, args.endpoint, args.first_row, args.rows, args.commits, args.start_at)


def run(args: argparse.Namespace, scratch: str, endpoint: str, counter: RequestCounter, cache) -> dict:
    s3 = not args.no_tensordb_s3
    data = ["--rows", str(args.rows), "--batch", str(args.batch), "--endpoint", endpoint]
    local_path = os.path.join(scratch, "tensordb-local")
    runs: dict[str, list[dict]] = {"s3": [], "local": [], "floor": [], "floor_serial": [], "lancedb": []}
    s3_path = lance_path = ""
    for r in range(args.repeats):
        # The systems take turns, each run in a fresh process on a fresh location; earlier runs'
        # objects are deleted so the server holds one copy of each.
        if s3:
            if s3_path:
                delete_prefix(endpoint, s3_path.split("/", 3)[3])
            s3_path = f"s3://{BUCKET}/tensordb-{r}"
            runs["s3"].append(run_phased(counter, "--worker", "ingest-tensordb", "--path", s3_path, *data,
                                         cache_dir=cache()))
        shutil.rmtree(local_path, ignore_errors=True)
        runs["local"].append(run_phased(counter, "--worker", "ingest-tensordb", "--path", local_path, *data,
                                        cache_dir=cache()))
        sizes = (list(object_sizes(endpoint, s3_path.split("/", 3)[3]).values()) if s3 else
                 [os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(local_path) for f in fs])
        sizes_file = os.path.join(scratch, "sizes.json")
        with open(sizes_file, "w") as f:
            json.dump(sizes, f)
        # As many puts in flight as tensordb had (its chunk writer's pool), WRITE_THREADS without an S3 run.
        threads = max(1, runs["s3"][-1]["max_puts_in_flight"]) if s3 else WRITE_THREADS
        runs["floor"].append(run_phased(counter, "--worker", "floor", "--path", f"floor-{r}", "--sizes-file",
                                        sizes_file, "--endpoint", endpoint, "--threads", str(threads)))
        delete_prefix(endpoint, f"floor-{r}")
        # The same puts one at a time: each extend is durable when it returns, so its chunks, which are
        # few and one of them large, are all the uploads that can overlap.
        runs["floor_serial"].append(run_phased(counter, "--worker", "floor", "--path", f"floor-serial-{r}",
                                               "--sizes-file", sizes_file, "--endpoint", endpoint, "--threads", "1"))
        delete_prefix(endpoint, f"floor-serial-{r}")
        if lance_path:
            delete_prefix(endpoint, lance_path.split("/", 3)[3])
        lance_path = f"s3://{BUCKET}/lance-{r}"
        runs["lancedb"].append(run_phased(counter, "--worker", "ingest-lancedb", "--path", lance_path, *data))
    ingest = {name: median_run(v) for name, v in runs.items() if v}
    stored = sum(object_sizes(endpoint, s3_path.split("/", 3)[3]).values()) if s3 else dir_bytes(local_path)

    truth = exact_top_ids(args.rows, args.batch, args.queries)
    q = ["--queries", str(args.queries), "--endpoint", endpoint]
    qruns: dict[str, list[dict]] = {"s3": [], "local": [], "lancedb": []}
    for _ in range(args.repeats):
        if s3:
            qruns["s3"].append(run_phased(counter, "--worker", "query-tensordb", "--path", s3_path, *q,
                                          cache_dir=cache()))
        qruns["local"].append(run_phased(counter, "--worker", "query-tensordb", "--path", local_path, *q,
                                         cache_dir=cache()))
        qruns["lancedb"].append(run_phased(counter, "--worker", "query-lancedb", "--path", lance_path, *q))
    query = {name: {**median_query(v), "mismatches": mismatches(v, truth)} for name, v in qruns.items() if v}

    read = {"local": run_phased(counter, "--worker", "read", "--path", local_path, *data, cache_dir=cache())}
    if s3:
        read["s3"] = run_phased(counter, "--worker", "read", "--path", s3_path, *data, cache_dir=cache())

    writer_rows = args.writer_rows or max(1, args.rows // 10)
    writers = {}
    for name, path in (("s3", f"s3://{BUCKET}/writers"), ("local", os.path.join(scratch, "writers")))[
            0 if s3 else 1:]:
        create_writers_dataset(path, endpoint)
        outcome = run_writers(counter, path, endpoint, 0, writer_rows, args.writer_commits, [cache(), cache()])
        outcome.update(check_writers(path, endpoint, 0, writer_rows, args.writer_commits, 2))
        writers[name] = outcome

    return {"rows": args.rows, "batch": args.batch, "raw_bytes": raw_bytes(args.rows, args.batch),
            "stored_bytes": stored, "read_threads": READ_THREADS,
            "ingest": ingest, "query": query, "read_embedding": read, "writers": writers,
            "writer_rows": writer_rows, "writer_commits": args.writer_commits, "load_average": os.getloadavg()}


def report(args: argparse.Namespace, results: dict) -> None:
    rows, mb = results["rows"], 2**20
    ingest, query, read, writers = (results[k] for k in ("ingest", "query", "read_embedding", "writers"))
    names = {"s3": "tensordb, S3 (moto)", "local": "tensordb, local dir", "lancedb": "lancedb, S3 (moto)",
             "floor": f"plain puts, {ingest['floor']['threads']} in flight (floor)",
             "floor_serial": "plain puts, one at a time"}
    print_table(
        f"Ingest of {rows:,} rows ({results['stored_bytes'] / mb:,.1f} MiB stored), median of {args.repeats}",
        [{"system": names[n], "rows/s": rows / r["seconds"], "seconds": r["seconds"],
          "requests (server)": r["server_requests"].get("end", r["server_requests"].get("puts", {})).get("total", ""),
          "peak RSS MiB": r["peak_rss_mb"]} for n, r in ingest.items()],
        ["system", "rows/s", "seconds", "requests (server)", "peak RSS MiB"],
    )
    print_table(
        f"Top-{K} query in a fresh process (cold: open + first query, empty cache; warm: median of {args.queries})",
        [{"system": names[n], "open ms": r["open_s"] * 1e3, "cold ms": r["cold_s"] * 1e3,
          "requests (client)": r.get("cold_requests", {}).get("total", ""),
          "requests (server)": sum(r["server_requests"][p].get("total", 0) for p in ("open", "first_query")),
          "warm ms": r["warm_median_s"] * 1e3, "wrong results": r["mismatches"]} for n, r in query.items()],
        ["system", "open ms", "cold ms", "requests (client)", "requests (server)", "warm ms", "wrong results"],
    )
    floor = ingest["floor"]
    read_floor_s = results["rows"] * DIM * 4 / (floor["bytes"] / floor["get_seconds"])
    print_table(
        "Read the whole embedding column (ds.embedding.numpy())",
        [*({"reader": f"{names[n]}, {state}", "seconds": r[f"{state}_s"], "MiB/s": r["bytes"] / mb / r[f"{state}_s"],
            "requests": r.get(f"{state}_requests", {}).get("total", "")}
           for n, r in read.items() for state in ("cold", "warm")),
         {"reader": f"plain gets, {READ_THREADS} in flight (floor)", "seconds": read_floor_s,
          "MiB/s": floor["bytes"] / mb / floor["get_seconds"], "requests": ""}],
        ["reader", "seconds", "MiB/s", "requests"],
    )
    print_table(
        f"Two writers appending {results['writer_rows']:,} rows each in {results['writer_commits']} commits, at once",
        [{"store": names[n], "wall s": w["wall_s"],
          "writer s": ", ".join(f"{x['seconds']:.2f}" if "seconds" in x else "failed" for x in w["writers"]),
          "swaps": sum(x.get("swaps", 0) for x in w["writers"]),
          "failed swaps": sum(x.get("failed_swaps", 0) for x in w["writers"]),
          "412s": w["server_requests"].get("412 precondition failed", 0),
          "rows": f"{w['rows']:,} / {w['expected_rows']:,}", "ids ok": w["ids_match"]} for n, w in writers.items()],
        ["store", "wall s", "writer s", "swaps", "failed swaps", "412s", "rows", "ids ok"],
    )
    print("\nRequests by kind, counted by tensordb's S3Store:")
    if "s3" in ingest:
        print(f"  ingest: {ingest['s3']['requests']}")
        print(f"  cold open: {query['s3']['open_requests']}; open + first query: {query['s3']['cold_requests']}")
        print(f"  embedding column: cold {read['s3']['cold_requests']}, warm {read['s3']['warm_requests']}")
    for n, w in writers.items():
        for i, x in enumerate(w["writers"]):
            print(f"  {names[n]} writer {i}: " + (x.get("error") or
                  f"{x['requests']}; {({k: v for k, v in x.items() if k.startswith(('swaps', 'failed'))})}"))
    ratios: dict[str, float] = {}
    targets: dict[str, bool] = {}
    if "s3" in ingest:
        s3q = query["s3"]
        ratios["ingest_s3_time_vs_floor"] = ingest["s3"]["seconds"] / floor["seconds"]
        ratios["ingest_s3_time_vs_serial_floor"] = ingest["s3"]["seconds"] / ingest["floor_serial"]["seconds"]
        ratios["ingest_s3_vs_local_time"] = ingest["s3"]["seconds"] / ingest["local"]["seconds"]
        ratios["warm_query_s3_vs_local"] = s3q["warm_median_s"] / query["local"]["warm_median_s"]
        ratios["first_query_requests"] = s3q["cold_requests"].get("total", float("nan"))
        ratios["ingest_s3_speed_vs_lancedb"] = ingest["lancedb"]["seconds"] / ingest["s3"]["seconds"]
        ratios["cold_query_s3_vs_lancedb"] = s3q["cold_s"] / query["lancedb"]["cold_s"]
        ratios["read_cold_s3_vs_floor"] = read["s3"]["cold_s"] / read_floor_s
        targets = {
            "ingest_s3_time_vs_floor <= 1.3": ratios["ingest_s3_time_vs_floor"] <= 1.3,
            "warm_query_s3_vs_local <= 1.2": ratios["warm_query_s3_vs_local"] <= 1.2,
            "first_query_requests <= 50": ratios["first_query_requests"] <= 50,
            "ingest_s3_speed_vs_lancedb >= 1": ratios["ingest_s3_speed_vs_lancedb"] >= 1,
            "cold_query_s3_vs_lancedb <= 1": ratios["cold_query_s3_vs_lancedb"] <= 1,
            "results match numpy": all(r["mismatches"] == 0 for n, r in query.items() if n != "lancedb"),
            "concurrent writers lose no row": all(w["ids_match"] and w["rows"] == w["expected_rows"]
                                                  for w in writers.values()),
        }
    results["ratios"], results["targets"] = ratios, targets
    if targets:
        print_targets(ratios, targets)


if __name__ == "__main__":
    main()
