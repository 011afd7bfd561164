"""Distributed benchmark: ``engine="ray"`` queries, Ray Data reads and writes, and Deep Memory on Ray Train, each
against the local run in the same process.

    python benchmarks/distributed.py [--rows 2000000] [--workdir DIR] [--keep] [--scifact ../shared/data/scifact]
                                     [--skip-dm] [--out results.json]

Ray runs as a local cluster of 2 CPUs (``ray.init(num_cpus=2)``), as in the tests: on a 2-core
machine the point is correctness and overhead, not speed-up.

- **Data:** ``--rows`` random 384-d float32 unit vectors (seed 0) and an int32 ``label`` (row % 10) in a local
  dataset under ``--workdir``, written by ``ds.extend`` in batches and one commit (timed: the local ingest).
- **Single query:** exact top-10 (``select * order by cosine_similarity(embedding, ARRAY[...]) desc limit 10``,
  ``exact=True``) locally and with ``engine="ray"``, 1 and 2 workers. The first Ray query of the process
  (Ray workers start, import tensordb and open the snapshot) is reported as cold; after one warm-up query
  each way, the ways take turns (a shuffled order per query) over ``--queries`` queries; medians.
- **Batch:** ``query_batch`` of ``--batch-size`` such queries, the same ways, over ``--batch-repeats`` batches.
- Every Ray answer is checked against the local one: the same rows in the same order and the same scores.
- **Where the time goes:** two more ways take the same turns: local with one BLAS thread (as a Ray worker
  runs, ``OMP_NUM_THREADS=1``), and the local query inside one Ray task on the snapshot as the engine's
  workers open it, timed inside the task (the scan a 1-worker query does) and around it (plus a task's
  round trip). A Ray query's time is then its scan plus Ray's costs (planning on the driver, the work
  order, the tasks, results back, the merge).
- **Ray Data:** ``ds.to_arrow()`` against ``ds.ray()`` materialised and ``ds.ray().iter_batches`` consuming every
  block (rows/s and GB/s of Arrow data); ``tensordb.from_ray`` of a materialised ``ds.ray()`` against
  ``tensordb.from_arrow`` of the ``to_arrow`` table (both into new local datasets; row counts checked).
- **Overhead:** a trivial Ray task's round trip (median of ``--noop-tasks`` sequential ``ray.get(f.remote())``),
  the fixed cost of an ``engine="ray"`` query on a ``--tiny-rows`` dataset against local, and the cost of one
  more part, from the 1- and 2-worker timings.
- **Deep Memory:** ``compare`` of ``benchmarks/dm_ray_training.py`` on SciFact (``max_seconds=60``, 2 workers),
  unless ``--skip-dm``.

Memory: at most one extra copy of the embeddings is alive at once (the ``to_arrow`` table, or the materialised
``ds.ray()`` in Ray's object store); each copy written to disk is deleted once measured.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import dir_bytes, peak_rss_mb, print_table, print_targets, timed, write_json  # noqa: E402

DIM = 384
K = 10
INGEST_BATCH = 100_000
NUM_CPUS = 2
RAY_WAYS = (("ray, 1 worker", 1), ("ray, 2 workers", 2))
LOCAL, LOCAL_1_THREAD, IN_TASK = "local", "local, 1 BLAS thread", "local query inside one Ray task"
DEFAULT_SCIFACT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "scifact")


# -- data ----------------------------------------------------------------------------------------------------
def build_dataset(path: str, rows: int) -> float:
    """Write ``rows`` unit vectors (seed 0) and labels by ``ds.extend`` in batches, one commit; the seconds
    spent in extend and commit (making the random vectors is not timed)."""
    import tensordb

    rng = np.random.default_rng(0)
    ds = tensordb.empty(path, overwrite=True)
    ds.create_tensor("embedding", htype="embedding", dtype="float32")
    ds.create_tensor("label", dtype="int32")
    seconds = 0.0
    for lo in range(0, rows, INGEST_BATCH):
        hi = min(rows, lo + INGEST_BATCH)
        m = rng.standard_normal((hi - lo, DIM), dtype=np.float32)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        took, _ = timed(ds.extend, {"embedding": m, "label": (np.arange(lo, hi) % 10).astype(np.int32)})
        seconds += took
        del m
    took, _ = timed(ds.commit, "benchmark data")
    ds.close()
    return seconds + took


def make_queries(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, DIM), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q


def tql(q: np.ndarray) -> str:
    array = ", ".join(repr(float(x)) for x in q)
    return f"select * order by cosine_similarity(embedding, ARRAY[{array}]) desc limit {K}"


# -- answers -------------------------------------------------------------------------------------------------
def assert_same(local: Any, ray: Any, where: str) -> None:
    """The same rows in the same order and the same computed columns (the scores), bit for bit."""
    if not np.array_equal(local.row_positions, ray.row_positions):
        raise AssertionError(f"{where}: rows differ: local {local.row_positions[:K]}, ray {ray.row_positions[:K]}")
    lv, rv = local.virtual_columns, ray.virtual_columns
    if list(lv) != list(rv):
        raise AssertionError(f"{where}: computed columns differ: {list(lv)} vs {list(rv)}")
    for name, values in lv.items():
        a, b = np.asarray(values), np.asarray(rv[name])
        if a.dtype != b.dtype or not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
            raise AssertionError(f"{where}: column {name!r} differs: {a[:K]} vs {b[:K]}")


class Ways:
    """The ways a query (or a batch) is run, each a function of the query text(s) returning its time and answer.

    Besides local and ``engine="ray"`` with 1 and 2 workers: local with one BLAS thread (a Ray worker runs
    with ``OMP_NUM_THREADS=1``), and the local query run inside one Ray task on the snapshot as the engine's
    workers open it (``SnapshotAddress.open``, cached per process), timed in the task and around it. The
    task's own time is the scan a 1-worker query does; the rest of a Ray query's time is Ray's.
    """

    def __init__(self, ray: Any, ds: Any) -> None:
        from tensordb.core.snapshot_address import snapshot_address

        self.ray, self.ds = ray, ds
        self.address = ray.put(snapshot_address(ds, "benchmark"))
        self.task = ray.remote(run_in_task)
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            threadpool_limits = None
        self.limits = threadpool_limits

    def names(self) -> list[str]:
        return [LOCAL, *(n for n, _ in RAY_WAYS), *([LOCAL_1_THREAD] if self.limits else []), IN_TASK]

    def run(self, name: str, texts: str | list[str]) -> tuple[float, float | None, Any]:
        """(wall seconds, seconds inside the Ray task or None, answer or None)."""
        many = isinstance(texts, list)
        if name == IN_TASK:
            wall, inside = timed(lambda: self.ray.get(self.task.remote(self.address, texts)))
            return wall, inside, None
        if name == LOCAL_1_THREAD:
            with self.limits(1):
                wall, answer = timed(self.ds.query_batch if many else self.ds.query, texts, exact=True)
            return wall, None, answer
        workers = dict(RAY_WAYS).get(name)
        engine = {} if workers is None else {"engine": "ray", "num_workers": workers}
        wall, answer = timed(self.ds.query_batch if many else self.ds.query, texts, exact=True, **engine)
        return wall, None, answer


def run_in_task(address: Any, texts: str | list[str]) -> float:
    """Ray task: the local query (or batch) over the snapshot as engine workers open it; its seconds."""
    table = address.open()
    start = time.perf_counter()
    if isinstance(texts, list):
        table.query_batch(texts, exact=True)
    else:
        table.query(texts, exact=True)
    return time.perf_counter() - start


def compare(ways: Ways, items: list[Any], warmup: Any, shuffle_seed: int) -> dict[str, Any]:
    """The first Ray query (cold), one warm-up each way, then the ways take turns (shuffled) on every item;
    every Ray answer is checked against the local one."""
    out: dict[str, Any] = {}
    out["cold_ray_2_workers_s"], _, cold = ways.run("ray, 2 workers", warmup)
    out["cold_local_s"], _, local = ways.run(LOCAL, warmup)
    check(local, cold, "cold query, 2 workers")
    names = ways.names()
    for name in names:
        ways.run(name, warmup)
    times: dict[str, list[float]] = {name: [] for name in [*names, f"{IN_TASK} (in the task)"]}
    turns = random.Random(shuffle_seed)
    for i, item in enumerate(items):
        order = list(names)
        turns.shuffle(order)
        answers = {}
        for name in order:
            wall, inside, answers[name] = ways.run(name, item)
            times[name].append(wall)
            if inside is not None:
                times[f"{IN_TASK} (in the task)"].append(inside)
        for name, _ in RAY_WAYS:
            check(answers[LOCAL], answers[name], f"item {i}, {name}")
    out["median_s"] = {name: statistics.median(v) for name, v in times.items()}
    out["all_s"] = times
    return out


def check(local: Any, ray: Any, where: str) -> None:
    if isinstance(local, list):
        for i, (a, b) in enumerate(zip(local, ray, strict=True)):
            assert_same(a, b, f"{where}, query {i}")
    else:
        assert_same(local, ray, where)


# -- where the time goes -------------------------------------------------------------------------------------
def noop_round_trip(ray: Any, n: int) -> dict[str, float]:
    """Median and 90th percentile of ``ray.get(f.remote())`` for a task that does nothing, one at a time."""

    def noop() -> None:
        return None

    task = ray.remote(noop)
    for _ in range(10):
        ray.get(task.remote())
    times = [timed(lambda: ray.get(task.remote()))[0] for _ in range(n)]
    return {"median_s": statistics.median(times), "p90_s": float(np.percentile(times, 90)), "tasks": n}


def tiny_dataset_overhead(workdir: str, rows: int, queries: int) -> dict[str, Any]:
    """A query over a tiny dataset (the scan is nothing), each way: Ray's fixed cost per query."""
    path = os.path.join(workdir, "tiny")
    build_dataset(path, rows)
    import ray

    import tensordb

    ds = tensordb.load(path, read_only=True)
    texts = [tql(q) for q in make_queries(queries + 1, seed=3)]
    result = compare(Ways(ray, ds), texts[1:], texts[0], shuffle_seed=1)
    ds.close()
    shutil.rmtree(path, ignore_errors=True)
    return {"rows": rows, "queries": queries, **result}


# -- Ray Data --------------------------------------------------------------------------------------------------
def ray_data(ds: Any, workdir: str, rows: int, repeats: int) -> dict[str, Any]:
    """Reads (to_arrow, ds.ray() materialised, ds.ray() iterated) and writes (from_arrow, from_ray)."""
    import ray

    import tensordb

    out: dict[str, Any] = {"to_arrow_s": [], "materialize_s": [], "iter_batches_s": []}
    ds[0:1000].to_arrow()  # warm-up: Ray Data's first pipeline of the process starts its executor
    ds[0:1000].ray().materialize()
    for r in range(repeats):
        seconds, table = timed(ds.to_arrow)
        out["to_arrow_s"].append(seconds)
        out["arrow_bytes"] = table.nbytes
        check_rows("to_arrow", table.num_rows, rows)
        if r == 0:  # local ingest of the same rows, while this copy is alive
            target = os.path.join(workdir, "from_arrow")
            out["from_arrow_s"], copy = timed(tensordb.from_arrow, table, target, progress=False)
            if copy.has_head_changes:
                copy.commit("from_arrow")  # from_ray commits once too (not timed here; it is in from_ray)
            check_rows("from_arrow", len(copy), rows)
            copy.close()
            shutil.rmtree(target)
        del table
        gc.collect()

        seconds, materialized = timed(lambda: ds.ray().materialize())
        out["materialize_s"].append(seconds)
        out["ray_bytes"] = materialized.size_bytes()
        check_rows("ds.ray().materialize()", materialized.count(), rows)
        if r == 0:
            target = os.path.join(workdir, "from_ray")
            out["from_ray_s"], copy = timed(tensordb.from_ray, materialized, target)
            check_rows("from_ray", len(copy), rows)
            out["from_ray_commits"] = len(copy.log(show=False))
            copy.close()
            shutil.rmtree(target)
        del materialized
        gc.collect()

        def consume() -> tuple[int, int]:
            n = nbytes = 0
            for batch in ds.ray().iter_batches(batch_format="pyarrow", batch_size=None):
                n += batch.num_rows
                nbytes += batch.nbytes
            return n, nbytes

        seconds, (n, nbytes) = timed(consume)
        out["iter_batches_s"].append(seconds)
        out["iter_bytes"] = nbytes
        check_rows("ds.ray().iter_batches", n, rows)
    out["object_store_bytes"] = int(ray.cluster_resources().get("object_store_memory", 0))
    for key in ("to_arrow_s", "materialize_s", "iter_batches_s"):
        out[key.replace("_s", "_median_s")] = statistics.median(out[key])
    return out


def check_rows(what: str, got: int, expected: int) -> None:
    if got != expected:
        raise AssertionError(f"{what}: {got} rows, expected {expected}")


# -- Deep Memory -----------------------------------------------------------------------------------------------
def deep_memory(scifact: str) -> dict[str, Any]:
    from dm_ray_training import compare

    return compare(scifact, max_seconds=60, num_workers=2)


# -- main ------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--workdir", default=None, help="where the datasets go (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir's datasets at the end")
    parser.add_argument("--queries", type=int, default=7, help="single queries timed each way")
    parser.add_argument("--batch-size", type=int, default=100, help="queries in one query_batch")
    parser.add_argument("--batch-repeats", type=int, default=3)
    parser.add_argument("--read-repeats", type=int, default=3, help="repetitions of each Ray Data read")
    parser.add_argument("--noop-tasks", type=int, default=200)
    parser.add_argument("--tiny-rows", type=int, default=1_000)
    parser.add_argument("--scifact", default=DEFAULT_SCIFACT, help="BEIR SciFact folder (read in place)")
    parser.add_argument("--skip-dm", action="store_true", help="skip the Deep Memory training comparison")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/distributed.json)")
    args = parser.parse_args()

    import ray

    import tensordb

    workdir = args.workdir or tempfile.mkdtemp(prefix="tensordb-distributed-")
    os.makedirs(workdir, exist_ok=True)
    free = shutil.disk_usage(workdir).free
    needed = 3 * args.rows * (DIM * 4 + 4)  # the dataset and one copy at a time, with room to spare
    if free < needed:
        raise SystemExit(f"{workdir}: {free / 2**30:.1f} GiB free, the benchmark needs about {needed / 2**30:.1f}")
    path = os.path.join(workdir, "vectors")
    ray.init(num_cpus=NUM_CPUS, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    results: dict[str, Any] = {"rows": args.rows, "dim": DIM, "k": K, "ray_num_cpus": NUM_CPUS,
                               "ray_version": ray.__version__}
    try:
        seconds = build_dataset(path, args.rows)
        results["ingest_extend_s"], results["data_bytes"] = seconds, dir_bytes(path)
        print(f"{args.rows:,} rows ingested by ds.extend in {seconds:.1f}s "
              f"({results['data_bytes'] / 2**20:,.0f} MiB on disk)", flush=True)
        ds = tensordb.load(path, read_only=True)

        ways = Ways(ray, ds)
        texts = [tql(q) for q in make_queries(args.queries + 1, seed=1)]
        results["single"] = compare(ways, texts[1:], texts[0], shuffle_seed=0)
        print(f"single queries: {results['single']['median_s']}", flush=True)
        batches = [[tql(q) for q in make_queries(args.batch_size, seed=2 + r)] for r in range(args.batch_repeats)]
        results["batch"] = compare(ways, batches, texts[0:1], shuffle_seed=2)  # warm-up: a batch of one
        results["batch_size"] = args.batch_size
        print(f"batches: {results['batch']['median_s']}", flush=True)
        results["noop_task"] = noop_round_trip(ray, args.noop_tasks)
        results["tiny"] = tiny_dataset_overhead(workdir, args.tiny_rows, args.queries * 3)
        print(f"overheads: noop {results['noop_task']}, tiny {results['tiny']['median_s']}", flush=True)
        results["ray_data"] = ray_data(ds, workdir, args.rows, args.read_repeats)
        print("ray data done", flush=True)
        ds.close()
        if not args.skip_dm:
            results["deep_memory"] = deep_memory(os.path.abspath(args.scifact))
        results["peak_rss_mb"] = peak_rss_mb()
        results["load_average"] = os.getloadavg()
        report(args, results)
        write_json("distributed", results, args.out)
    finally:
        ray.shutdown()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def overheads(results: dict[str, Any]) -> dict[str, float]:
    """Ray's costs, in seconds, from the medians of the ways that took turns."""
    single, batch, tiny = (results[k]["median_s"] for k in ("single", "batch", "tiny"))
    inside = f"{IN_TASK} (in the task)"
    scan = single[inside]  # the whole scan in one Ray worker (one BLAS thread)
    costs = {
        "noop_task_round_trip_s": results["noop_task"]["median_s"],
        # The same local query, timed around its task and inside it: Ray's round trip for one task.
        "task_round_trip_around_a_query_s": single[IN_TASK] - scan,
        # A 1-worker query is one task running the whole query: what is not its scan is the engine's cost
        # (planning on the driver, the work order, the task, the result back, building the view).
        "engine_fixed_cost_s": single["ray, 1 worker"] - scan,
        "engine_fixed_cost_tiny_dataset_s": tiny["ray, 1 worker"] - tiny[inside],
        "tiny_query_ray_1_minus_local_s": tiny["ray, 1 worker"] - tiny[LOCAL],
        "tiny_query_ray_2_minus_local_s": tiny["ray, 2 workers"] - tiny[LOCAL],
        # Two parts on 2 cores, each scanning half: what exceeds half the scan plus the fixed cost is
        # the cost of the second part (its task, reading its own chunks, the merge), parallelism assumed.
        "second_part_s": single["ray, 2 workers"] - scan / 2 - (single["ray, 1 worker"] - scan),
        "batch_engine_fixed_cost_s": batch["ray, 1 worker"] - batch[inside],
        "batch_second_part_s": batch["ray, 2 workers"] - batch[inside] / 2 - (batch["ray, 1 worker"] - batch[inside]),
    }
    return costs


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    rows, gb = results["rows"], 1e9
    single, batch = results["single"], results["batch"]
    local = single["median_s"]["local"]
    print_table(
        f"Exact top-{K} over {rows:,} x {DIM} float32, median of {args.queries} queries (the ways take turns; "
        f"the first Ray query of the process: {single['cold_ray_2_workers_s'] * 1e3:,.0f} ms, 2 workers)",
        [{"engine": n, "median ms": v * 1e3, "vs local": v / local} for n, v in single["median_s"].items()],
        ["engine", "median ms", "vs local"],
    )
    blocal = batch["median_s"]["local"]
    print_table(
        f"query_batch of {results['batch_size']} exact top-{K} queries, {args.batch_repeats} batches (medians)",
        [{"engine": n, "total ms": v * 1e3, "ms per query": v * 1e3 / results["batch_size"], "vs local": v / blocal}
         for n, v in batch["median_s"].items()],
        ["engine", "total ms", "ms per query", "vs local"],
    )
    rd = results["ray_data"]
    reads = [("ds.to_arrow()", rd["to_arrow_median_s"], rd["arrow_bytes"]),
             ("ds.ray().materialize()", rd["materialize_median_s"], rd["ray_bytes"]),
             ("ds.ray().iter_batches() (all)", rd["iter_batches_median_s"], rd["iter_bytes"])]
    print_table(
        f"Reading every row ({rd['arrow_bytes'] / gb:.2f} GB as Arrow), median of {args.read_repeats}",
        [{"reader": n, "seconds": s, "rows/s": rows / s, "GB/s": b / gb / s, "vs to_arrow": rd["to_arrow_median_s"] / s}
         for n, s, b in reads],
        ["reader", "seconds", "rows/s", "GB/s", "vs to_arrow"],
    )
    writes = [("ds.extend per 100k rows + commit (data build)", results["ingest_extend_s"]),
              ("tensordb.from_arrow(to_arrow table)", rd["from_arrow_s"]),
              ("tensordb.from_ray(materialized ds.ray())", rd["from_ray_s"])]
    print_table(
        "Ingest into a new local dataset",
        [{"writer": n, "seconds": s, "rows/s": rows / s, "GB/s": rd["arrow_bytes"] / gb / s,
          "vs from_arrow": s / rd["from_arrow_s"]} for n, s in writes],
        ["writer", "seconds", "rows/s", "GB/s", "vs from_arrow"],
    )
    tiny = results["tiny"]
    print_table(
        f"Overhead: a trivial task (median of {results['noop_task']['tasks']}), and a {tiny['rows']:,}-row dataset "
        f"(median of {tiny['queries']} queries)",
        [{"what": "ray.get(noop.remote())", "median ms": results["noop_task"]["median_s"] * 1e3,
          "p90 ms": results["noop_task"]["p90_s"] * 1e3}]
        + [{"what": f"tiny query, {n}", "median ms": v * 1e3} for n, v in tiny["median_s"].items()]
        + [{"what": "tiny query, first Ray query", "median ms": tiny["cold_ray_2_workers_s"] * 1e3}],
        ["what", "median ms", "p90 ms"],
    )
    costs = overheads(results)
    results["overheads_s"] = costs
    print_table("Ray's costs derived from the timings (ms)",
                [{"cost": k.removesuffix("_s"), "ms": v * 1e3} for k, v in costs.items()], ["cost", "ms"])
    if "deep_memory" in results:
        dm = results["deep_memory"]
        views = [("max_seconds=60", dm), *([("untimed (same epochs)", dm["untimed"])] if "untimed" in dm else [])]
        print_table(
            f"Deep Memory training on SciFact, local vs Ray Train (2 workers); dev nDCG@10 without a model "
            f"{dm['local']['ndcg@10_without']:.4f}",
            [{"view": v, "engine": r["engine"], "ndcg@10": r["ndcg@10"], "recall@10": r["recall@10"],
              "train s": r["seconds"], "wall s": r["wall_seconds"], "epochs": r["epochs"],
              "budget": "cut" if r["time_budget"] else "not reached"}
             for v, result in views for r in (result["local"], result["ray"])],
            ["view", "engine", "ndcg@10", "recall@10", "train s", "wall s", "epochs", "budget"],
        )

    ratios = {
        "single_ray2_vs_local": single["median_s"]["ray, 2 workers"] / local,
        "single_ray1_vs_local": single["median_s"]["ray, 1 worker"] / local,
        "single_cold_ray2_vs_local": single["cold_ray_2_workers_s"] / local,
        "batch_ray2_vs_local": batch["median_s"]["ray, 2 workers"] / blocal,
        "batch_ray1_vs_local": batch["median_s"]["ray, 1 worker"] / blocal,
        "single_ray2_vs_local_1_thread": single["median_s"]["ray, 2 workers"] / single["median_s"].get(
            LOCAL_1_THREAD, float("nan")),
        "batch_ray2_vs_local_1_thread": batch["median_s"]["ray, 2 workers"] / batch["median_s"].get(
            LOCAL_1_THREAD, float("nan")),
        "ray_data_iter_vs_to_arrow": rd["to_arrow_median_s"] / rd["iter_batches_median_s"],
        "ray_data_materialize_vs_to_arrow": rd["to_arrow_median_s"] / rd["materialize_median_s"],
        "from_ray_vs_from_arrow_time": rd["from_ray_s"] / rd["from_arrow_s"],
    }
    targets = {
        "single_ray2_vs_local <= 1.5": ratios["single_ray2_vs_local"] <= 1.5,
        "batch_ray2_vs_local <= 1.1": ratios["batch_ray2_vs_local"] <= 1.1,
        "ray_data_iter_vs_to_arrow >= 0.5": ratios["ray_data_iter_vs_to_arrow"] >= 0.5,
        "ray_data_materialize_vs_to_arrow >= 0.5": ratios["ray_data_materialize_vs_to_arrow"] >= 0.5,
        "ray answers == local answers": True,  # every comparison above asserted it
    }
    if "deep_memory" in results:
        ratios["dm_ndcg@10_gap_points"] = results["deep_memory"]["ndcg@10_gap_points"]
        targets["dm |ndcg@10 gap| <= 0.5 points"] = abs(ratios["dm_ndcg@10_gap_points"]) <= 0.5
    results["ratios"], results["targets"] = ratios, targets
    print_targets(ratios, targets)


if __name__ == "__main__":
    main()
