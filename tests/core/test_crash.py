"""Crash test: SIGKILL a writer at random moments; every reopen must see a consistent state.

A child process loops doing extend, update, pop, batches and commits on a local
dataset with small chunks. Before each operation it logs (flush + fsync) the
operation, and after it returns it logs completion. The parent kills it at a
random moment, reopens the dataset, checks ``verify().ok`` and that the contents
equal the model either before or after the operation that was in flight, then
starts a new child on the reopened dataset.

TENSORDB_CRASH_KILLS sets the number of kills (default 50; TENSORDB_LONG=1: 200).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time

import numpy as np

import tensordb

from .helpers import canon, snapshot

LONG = os.environ.get("TENSORDB_LONG") == "1"
KILLS = int(os.environ.get("TENSORDB_CRASH_KILLS", "200" if LONG else "50"))
DIM = 4

CHILD = textwrap.dedent(
    """
    import json, os, random, sys
    import numpy as np
    import tensordb

    path, log_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(seed)
    ds = tensordb.load(path, lock_timeout=30)
    log = open(log_path, "a")

    def emit(record):
        log.write(json.dumps(record) + "\\n")
        log.flush()
        os.fsync(log.fileno())

    def emb(v):
        return [float(v), float(v) + 0.5, -float(v), 1.0]

    def rows(k):
        return {
            "x": [[rng.randint(-1000, 1000) for _ in range(rng.randint(0, 5))] for _ in range(k)],
            "t": [None if rng.random() < 0.1 else "t%d" % rng.randint(0, 10**6) * rng.randint(1, 4) for _ in range(k)],
            "e": [rng.randint(-50, 50) for _ in range(k)],
        }

    def apply(op):
        kind = op["op"]
        if kind == "extend":
            ds.extend({"x": op["x"], "t": op["t"], "e": [emb(v) for v in op["e"]]})
        elif kind == "update":
            ds.update(op["idx"], {"x": op["x"], "t": op["t"], "e": [emb(v) for v in op["e"]]})
        elif kind == "pop":
            ds.pop(op["idx"])
        elif kind == "batch":
            with ds:
                ds.extend({"x": op["x"], "t": op["t"], "e": [emb(v) for v in op["e"]]})
                ds.pop(op["idx"])
        elif kind == "commit":
            return ds.commit(op["msg"])

    n = len(ds)
    print("READY", flush=True)
    while True:
        r = rng.random()
        if n == 0 or r < 0.35:
            op = {"op": "extend", **rows(rng.randint(1, 40))}
        elif r < 0.6:
            k = rng.randint(1, min(n, 6))
            op = {"op": "update", "idx": rng.sample(range(n), k), **rows(k)}
        elif r < 0.8:
            k = rng.randint(1, min(n, 30 if n > 150 else 4))
            op = {"op": "pop", "idx": rng.sample(range(n), k)}
        elif r < 0.9:
            op = {"op": "batch", **rows(rng.randint(1, 10)), "idx": rng.sample(range(n), min(n, 2))}
        else:
            op = {"op": "commit", "msg": "c%d" % rng.randint(0, 10**9)}
        emit({"begin": op})
        result = apply(op)
        emit({"done": result})
        if op["op"] in ("extend", "batch"):
            n += len(op["x"])
        if op["op"] in ("pop", "batch"):
            n -= len(set(op["idx"]))
    """
)


def _emb(v):
    return canon(np.asarray([float(v), float(v) + 0.5, -float(v), 1.0], "float32"))


def _rows(op):
    return (
        [canon(np.asarray(v, "int32")) for v in op["x"]],
        list(op["t"]),
        [_emb(v) for v in op["e"]],
    )


def apply_model(model: dict, op: dict) -> dict:
    """The contents after ``op``; ``model`` is not changed."""
    m = {k: list(v) for k, v in model.items()}
    kind = op["op"]
    if kind in ("extend", "batch"):
        x, t, e = _rows(op)
        m["x"] += x
        m["t"] += t
        m["e"] += e
    if kind == "update":
        x, t, e = _rows(op)
        for j, i in enumerate(op["idx"]):
            m["x"][i], m["t"][i], m["e"][i] = x[j], t[j], e[j]
    if kind in ("pop", "batch"):
        drop = set(op["idx"])
        m = {k: [v for i, v in enumerate(col) if i not in drop] for k, col in m.items()}
    return m


def _read_log(path):
    """Completed ops, and the op in flight (begun, not known done) if any."""
    with open(path) as f:
        text = f.read()
    lines = text.split("\n")[:-1]  # a last line without newline was cut by the kill: it never began
    done, pending = [], None
    for line in lines:
        record = json.loads(line)
        if "begin" in record:
            assert pending is None, "a begin without done mid-log"
            pending = record["begin"]
        else:
            done.append((pending, record["done"]))
            pending = None
    return done, pending


def test_crash_consistency(tmp_path):
    seed = int(os.environ.get("TENSORDB_CRASH_SEED", random.randrange(10**9)))
    rng = random.Random(seed)
    path = str(tmp_path / "ds")
    child_file = tmp_path / "child.py"
    child_file.write_text(CHILD)

    ds = tensordb.empty(path)
    ds.create_tensor("x", dtype="int32", max_chunk_size=1024)
    ds.create_tensor("t", htype="text", max_chunk_size=1024, chunk_compression="lz4")
    ds.create_tensor("e", htype="embedding", max_chunk_size=1024)
    ds.close()

    model = {"x": [], "t": [], "e": []}
    commits: dict[str, dict] = {}
    landed_in_flight = completed_ops = 0
    start = time.monotonic()
    for kill in range(KILLS):
        log_path = tmp_path / f"log{kill}.jsonl"
        err_path = tmp_path / f"err{kill}.txt"
        with open(err_path, "w") as err:
            proc = subprocess.Popen(
                [sys.executable, str(child_file), path, str(log_path), str(rng.randrange(10**9))],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        try:
            ready = proc.stdout.readline()
            assert ready.strip() == "READY", f"seed {seed}: child failed to start: {err_path.read_text()}"
            time.sleep(rng.uniform(0.05, 0.5))
            assert proc.poll() is None, f"seed {seed}: child died on its own: {err_path.read_text()}"
            proc.kill()  # SIGKILL
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()

        done, pending = _read_log(log_path)
        for op, result in done:
            model = apply_model(model, op)
            if op["op"] == "commit":
                commits[result] = model
        completed_ops += len(done)

        ds = tensordb.load(path, read_only=True)
        report = ds.verify()
        assert report.ok, f"seed {seed}, kill {kill}: {report.problems}"
        actual = snapshot(ds)
        history = ds.log(show=False)
        expected_commits = len(commits)
        if actual == model:
            if pending is not None and pending["op"] == "commit" and len(history) == expected_commits + 1:
                commits[history[0]["commit"]] = model  # the commit landed before the kill
                landed_in_flight += 1
        else:
            assert pending is not None, f"seed {seed}, kill {kill}: contents differ and no op was in flight"
            after = apply_model(model, pending)
            assert actual == after, f"seed {seed}, kill {kill}: contents match neither side of {pending['op']}"
            model = after
            landed_in_flight += 1
        assert len(history) == len(commits), f"seed {seed}, kill {kill}"
        assert {h["commit"] for h in history} == set(commits)
        assert len(ds) == len(model["x"])

        if kill % 10 == 9 or kill == KILLS - 1:
            for cid, snap in commits.items():
                assert snapshot(tensordb.load(f"{path}@{cid}", read_only=True)) == snap, f"seed {seed}"
            writer = tensordb.load(path)
            writer.vacuum(grace_seconds=0)  # removes what killed writers left behind
            assert writer.verify().ok
            assert snapshot(writer) == model
            writer.close()
            assert not [f for _d, _s, fs in os.walk(path) for f in fs if ".tdb-tmp-" in f]

    assert completed_ops > KILLS, "the children hardly ran: the test did not exercise anything"
    print(f"crash test: seed {seed}, {KILLS} kills, {completed_ops} ops completed, "
          f"{landed_in_flight} in-flight ops landed, {len(commits)} commits, {time.monotonic() - start:.0f}s")
