"""Crash safety: SIGKILL a process running a mixed workload, at random points, many times.

The child (``_crash_child.py``) ingests documents into a VectorStore, adds,
deletes, updates (in single calls and ``with ds:`` batches), commits, and trains
Deep Memory models, logging each operation before (``B``) and after (``D``) it
with an fsync. After each kill the parent reopens the dataset and checks:

* ``tensordb.verify(path).ok``;
* the contents equal the model after the last completed operation, or after the
  one in flight, nothing else (the model is replayed from the log);
* every commit the child reported still reads back exactly;
* no Deep Memory job reads as pending/running/completed-without-model: an
  interrupted job is ``failed`` (or ``cancelled``), a completed one has a model
  that loads, and ``search(deep_memory=True)`` uses a completed model only.

30 kills in CI, 200 with ``TENSORDB_LONG=1``. The dataset lives on across kills,
so later rounds run on top of everything earlier rounds left behind.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tensordb
from tensordb.deep_memory.jobs import MODEL_PREFIX

from .helpers import FIGURES, model_rows, scale, store_rows, vector

CHILD = os.path.join(os.path.dirname(__file__), "_crash_child.py")
KILLS = scale(30, 200)


def read_log(path: str) -> list[tuple[str, dict]]:
    out = []
    with open(path) as f:
        for line in f:
            if not line.endswith("\n"):
                break  # a torn last line: the child died while logging it
            kind, _, record = line.partition(" ")
            out.append((kind, json.loads(record)))
    return out


def apply(model: list[tuple[str, int]], op: dict) -> list[tuple[str, int]]:
    """The model after one completed operation (model = [(doc, version)] in row order)."""
    kind = op["op"]
    if kind == "add":
        return model + [(d, 0) for d in op["docs"]]
    if kind == "delete":
        gone = set(op["docs"])
        return [(d, v) for d, v in model if d not in gone]
    if kind == "update":
        new = op["versions"]
        return [(d, new.get(d, v)) for d, v in model]
    if kind == "batch":
        gone = set(op["gone"])
        return [(d, v) for d, v in model + [(d, 0) for d in op["docs"]] if d not in gone]
    return model  # commit, train: the rows stay


def current_rows(path: str) -> list[tuple[str, str, str, bytes]] | None:
    if not tensordb.exists(path):
        return None
    ds = tensordb.load(path, read_only=True)
    if not {"text", "metadata", "embedding", "id"} <= set(ds.tensors):
        assert not ds.tensors or len(ds) == 0
        return []
    return store_rows(ds)


def check_deep_memory(path: str, started: set[str], finished: dict[str, str]) -> dict[str, int]:
    vs = tensordb.VectorStore(path, read_only=True)
    dm = vs.deep_memory
    counts = {"completed": 0, "failed": 0, "cancelled": 0}
    jobs = dm.list_jobs(show=False)
    assert started <= {j["id"] for j in jobs}, "a job the child started has no record"
    for info in jobs:
        status = info["status"]
        assert status in counts, f"job {info['id']} reads {status!r} after its process died"
        counts[status] += 1
        names = vs.dataset.list_attachments(MODEL_PREFIX)
        if status == "completed":
            assert (MODEL_PREFIX + info["id"]) in names, "completed job without a model"
            vs.dataset.get_attachment(MODEL_PREFIX + info["id"])  # loads, checksums verified
        if finished.get(info["id"]) == "completed":
            assert status == "completed", "a job reported completed was lost"
        if status == "failed" and info["id"] not in finished:
            assert "interrupted" in (info["record"].error or ""), info["record"].error
    model = dm.model()
    if model is None:
        assert counts["completed"] == 0
        if len(vs):
            with pytest.raises((tensordb.TensorDBError, ValueError)):
                vs.search(embedding=vector("q", 0), k=3, deep_memory=True)
    else:
        latest = dm._jobs.latest_model()
        assert dm.status(latest[0], show=False)["status"] == "completed"
        if len(vs):
            ds = vs.dataset
            q = vector("probe", len(vs))
            got = vs.search(embedding=q, k=5, deep_memory=True)
            ranked = model.search(q[None, :], ds.embedding.numpy(), ds.id.numpy(aslist=True), k=5)[0]
            assert got["id"][0] == ranked[0] and set(got["id"][:3]) <= set(ranked), "search used another model"
    vs.close()
    return counts


def test_sigkill_random_workload(tmp_path):
    path = str(tmp_path / "vs")
    log = str(tmp_path / "ops.log")
    rng = random.Random(int(os.environ.get("TENSORDB_CRASH_SEED", "1234")))
    model: list[tuple[str, int]] = []
    commits: dict[str, list[tuple[str, int]]] = {}
    started: set[str] = set()
    finished: dict[str, str] = {}
    consumed = 0
    survived = in_flight_landed = in_flight_lost = 0
    dm_counts = {"completed": 0, "failed": 0, "cancelled": 0}
    for round_no in range(KILLS):
        # every few rounds, one that trains with some probability; others stay cheap (no torch import)
        train_p = 0.35 if round_no % 3 == 0 else 0.0
        child = subprocess.Popen([sys.executable, CHILD, path, log, str(round_no), str(train_p)],
                                 stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        target = consumed + rng.randint(1, 14)
        delay = rng.uniform(0, 0.4 if train_p else 0.05)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            with open(log) if os.path.exists(log) else open(os.devnull) as f:
                if sum(1 for _ in f) >= target:
                    break
            time.sleep(0.002)
        time.sleep(delay)
        if child.poll() is not None:
            pytest.fail(f"child exited by itself (rc {child.returncode}): {child.stderr.read().decode()[-3000:]}")
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stderr.close()

        entries = read_log(log)
        pending = None
        for kind, op in entries[consumed:]:
            if kind == "B":
                pending = op
            elif kind == "D":
                if op["op"] == "train_started":
                    started.add(op["job"])
                    continue
                if op["op"] == "train_done":
                    assert op["status"] == "completed", f"training failed without a crash: {op}"
                    finished[op["job"]] = op["status"]
                    pending = None
                    continue
                model = apply(model, op)
                if op["op"] == "commit":
                    commits[op["commit"]] = list(model)
                pending = None
        consumed = len(entries)

        report = tensordb.verify(path)
        assert report.ok, f"round {round_no}: verify found {report.problems}"
        rows = current_rows(path)
        if rows is None:
            assert not model
            continue
        candidates = [model] + ([apply(model, pending)] if pending is not None else [])
        matched = [c for c in candidates if rows == model_rows(c)]
        assert matched, (f"round {round_no}: state is neither the last completed op nor the one in flight "
                         f"({pending}); {len(rows)} rows vs model {len(model)}")
        if pending is not None and pending["op"] in ("add", "delete", "update", "batch"):
            if matched[-1] is not model:
                in_flight_landed += 1
            else:
                in_flight_lost += 1
        model = matched[-1]

        ds = tensordb.load(path, read_only=True)
        if pending is not None and pending["op"] == "commit" and ds.commit_id not in commits and ds.commit_id:
            commits[ds.commit_id] = list(model)  # the in-flight commit landed
        for cid in list(commits)[-4:]:
            old = tensordb.load(f"{path}@{cid}", read_only=True)
            assert store_rows(old) == model_rows(commits[cid]), f"commit {cid} changed or was lost"
        if round_no % 3 == 0 or round_no == KILLS - 1:
            counts = check_deep_memory(path, started, finished)
            dm_counts = counts
        survived += 1

    FIGURES["crash: kills survived"] += survived
    FIGURES["crash: in-flight writes that landed"] += in_flight_landed
    FIGURES["crash: in-flight writes rolled back"] += in_flight_lost
    FIGURES["crash: commits checked"] += len(commits)
    FIGURES["crash: deep memory jobs completed"] += dm_counts["completed"]
    FIGURES["crash: deep memory jobs interrupted (failed)"] += dm_counts["failed"]
    assert survived == KILLS
    assert len(model) > 0 and np.isfinite(len(model))
