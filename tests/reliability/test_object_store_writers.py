"""Writers on S3 (moto on loopback): two processes at once, SIGKILL mid-commit, and a fault on every request.

* Two writer processes append at once: every row lands, exactly once.
* A writer killed with SIGKILL at random moments: the dataset opens, ``verify`` is clean
  (orphan chunks allowed), and the rows are a prefix of the batches the writer ran: every
  acknowledged batch is there, none half.
* A workload (open, append, update, commit, create_index) run once per request it makes, with a
  fault injected at that request through the store's request seam (``S3Store.intercept``):
  permanent faults end in success or a typed ``TensorDBError`` and leave the state after the
  last acknowledged step (or the step in flight, whole); transient ones are retried away and
  leave exactly the fault-free result.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import tensordb
from tensordb.errors import TensorDBError
from tensordb.format import manifest as mf
from tensordb.storage.object_cache import ObjectCache
from tensordb.storage.object_store import S3Store

from .helpers import FIGURES

ROOT = Path(__file__).resolve().parents[2]

#: A writer process: appends ``TDB_BATCHES`` batches of ``TDB_ROWS`` ids from batch ``TDB_START`` on,
#: prints each batch number once the call returned (acknowledged), and commits every 5th batch.
WRITER = """
import os, sys
import numpy as np
import tensordb
url, writer = os.environ["TDB_URL"], int(os.environ["TDB_WRITER"])
start, batches, rows = (int(os.environ[k]) for k in ("TDB_START", "TDB_BATCHES", "TDB_ROWS"))
ds = tensordb.load(url)
print("ready", flush=True)
for b in range(start, start + batches):
    ds.extend({"id": np.arange(b * rows, (b + 1) * rows, dtype=np.int64) + writer * 10**6})
    print(b, flush=True)
    if b % 5 == 4:
        ds.commit(f"writer {writer} batch {b}")
print("done", flush=True)
"""


def start_writer(s3_server, url: str, cache: Path, writer: int, start: int, batches: int, rows: int):
    env = {**os.environ, **s3_server.env, "TENSORDB_CACHE_DIR": str(cache), "TDB_URL": url,
           "TDB_WRITER": str(writer), "TDB_START": str(start), "TDB_BATCHES": str(batches), "TDB_ROWS": str(rows)}
    return subprocess.Popen([sys.executable, "-c", WRITER], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def ids_dataset(url: str) -> None:
    ds = tensordb.empty(url)
    ds.create_tensor("id", dtype="int64", max_chunk_size=4096)
    ds.commit("empty")


def ids_of(url: str) -> np.ndarray:
    return tensordb.load(url, read_only=True).id.numpy().astype(np.int64)


# ------------------------------------------------------------------------------ two writer processes


def test_two_writer_processes_appending_at_once_lose_no_row(s3_server, s3_url, tmp_path):
    batches, rows = 20, 50
    ids_dataset(s3_url)
    children = [start_writer(s3_server, s3_url, tmp_path / f"cache{w}", w, 0, batches, rows) for w in (1, 2)]
    outputs = [child.communicate(timeout=120) for child in children]
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0, err
        assert out.split() == ["ready", *map(str, range(batches)), "done"]
    ids = ids_of(s3_url)
    assert len(ids) == 2 * batches * rows
    assert len(np.unique(ids)) == len(ids)
    for w in (1, 2):  # each writer's rows, all of them, in the order it appended them
        mine = ids[ids // 10**6 == w] - w * 10**6
        assert mine.tolist() == list(range(batches * rows))
    assert tensordb.load(s3_url).verify().ok


# ------------------------------------------------------------------------------ SIGKILL mid-commit


def test_sigkill_of_a_writer_keeps_a_prefix_of_whole_batches(s3_server, s3_url, tmp_path):
    rows, rounds = 10, 5
    ids_dataset(s3_url)
    rng = random.Random(15)
    acknowledged: list[int] = []
    for round_ in range(rounds):
        start = len(ids_of(s3_url)) // rows
        child = start_writer(s3_server, s3_url, tmp_path / "cache", 0, start, 1000, rows)
        lines: list[str] = []
        reader = threading.Thread(target=lambda out=child.stdout, got=lines: got.extend(line.strip() for line in out))
        reader.start()
        deadline = time.monotonic() + 30
        while "ready" not in lines and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "ready" in lines, child.stderr.read()
        time.sleep(rng.uniform(0.05, 0.6))  # somewhere inside an append or a commit
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        reader.join(10)
        child.stdout.close()
        child.stderr.close()
        assert child.returncode == -signal.SIGKILL, f"round {round_}: the writer ended before the kill"
        acknowledged += [int(line) for line in lines if line.isdigit()]

        ds = tensordb.load(s3_url)
        report = ds.verify()
        assert report.ok, report.problems
        ids = ds.id.numpy().astype(np.int64)
        assert len(ids) % rows == 0, f"round {round_}: a batch landed in part"
        present = len(ids) // rows
        assert ids.tolist() == list(range(present * rows)), f"round {round_}: not a prefix of the batches"
        assert acknowledged == list(range(len(acknowledged)))
        assert present in (len(acknowledged), len(acknowledged) + 1)  # plus at most the one in flight
        acknowledged = list(range(present))  # the next writer goes on from what is there
    FIGURES["s3 writer kills survived"] += rounds


# ------------------------------------------------------------------------------ a fault on every request


class InjectedFault(ConnectionError):
    """What the seam raises in place of a request: a connection failure, which the store retries."""


def prior_dataset(url: str) -> None:
    ds = tensordb.empty(url)
    ds.create_tensor("id", dtype="int64")
    ds.create_tensor("embedding", htype="embedding", dtype="float32")
    ds.extend({"id": np.arange(30), "embedding": np.tile(np.arange(4, dtype=np.float32), (30, 1))})
    ds.commit("prior")


def workload() -> list[Callable[[tensordb.Dataset], object]]:
    """The steps of the workload; each public write is one step (opening the dataset makes no change)."""
    return [
        lambda ds: ds.extend({"id": np.arange(30, 50), "embedding": np.full((20, 4), 2.0, np.float32)}),
        lambda ds: ds.id.__setitem__(3, -3),
        lambda ds: ds.pop(7),
        lambda ds: ds.commit("new"),
        lambda ds: ds.embedding.create_index("v", kind="flat"),
    ]


def contents(url: str) -> tuple:
    """What the workload changes, as a fresh healthy reader sees it."""
    ds = tensordb.load(url, read_only=True)
    return (ds.id.numpy().tolist(), ds.embedding.numpy().tobytes(), sorted(ds.indexes),
            [entry["message"] for entry in ds.log(show=False)])


def contents_or_damage(url: str) -> tuple:
    """``contents(url)``, or the error that made it unreadable (so that a failed assertion says where)."""
    try:
        return contents(url)
    except TensorDBError as e:
        return ("unreadable", repr(e))


def fresh_store(url: str, cache: Path, attempts: int) -> S3Store:
    """A new S3Store with its own empty cache, so that every run makes the same requests."""
    return S3Store(url, immutable_prefixes=mf.IMMUTABLE_PREFIXES, cache=ObjectCache(str(cache), 1 << 26),
                   attempts=attempts, backoff=0.001)


class Faults:
    """An ``intercept`` that fails the requests numbered ``first`` to ``last`` (1-based, inclusive).

    ``ambiguous``: request ``first`` is sent, and then fails as if the answer had been lost.
    """

    def __init__(self, first: int, last: float, ambiguous: bool):
        self.first, self.last, self.ambiguous = first, last, ambiguous
        self.seen = 0
        self.injected = 0
        self._lock = threading.Lock()

    def __call__(self, kind: str, key: str, send: Callable[[], object]) -> object:
        with self._lock:
            self.seen += 1
            number = self.seen
        if not self.first <= number <= self.last:
            return send()
        self.injected += 1
        if self.ambiguous and number == self.first:
            send()
        raise InjectedFault(f"injected fault on request {number} ({kind} {key!r})")


@pytest.fixture(scope="module")
def reference(s3_server, tmp_path_factory):
    """The fault-free run: the contents after each step, and the number of requests it makes."""
    url = f"s3://{s3_server.bucket}/{uuid.uuid4().hex}"
    env = {**s3_server.env, "TENSORDB_CACHE_DIR": str(tmp_path_factory.mktemp("reader-cache"))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        prior_dataset(url)
        store = fresh_store(url, tmp_path_factory.mktemp("reference-cache"), attempts=5)
        states = [contents(url)]
        ds = tensordb.load(store)
        for step in workload():
            step(ds)
            states.append(contents(url))
        requests = store.requests.total
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert len(set(map(repr, states))) == len(states)  # each step changes what a reader sees
    return states, requests


def run_with_faults(url: str, tmp_path: Path, faults: Faults, attempts: int) -> tuple[int, TensorDBError | None]:
    """Create the prior state (healthy), then run the workload through a store with ``faults``:
    how many steps were acknowledged, and the typed error that ended it (``None``: it completed)."""
    prior_dataset(url)
    store = fresh_store(url, tmp_path / uuid.uuid4().hex, attempts)
    store.intercept = faults
    done = 0
    try:
        ds = tensordb.load(store)
        for step in workload():
            step(ds)
            done += 1
    except TensorDBError as e:
        return done, e
    finally:
        store.intercept = None
        store.close()
    return done, None


#: name → (faulted requests after the first, ambiguous first, attempts per request)
PERMANENT_MODES = {
    "permanent": (float("inf"), False, 2),  # the server is gone from request n on
    "permanent-ambiguous": (float("inf"), True, 2),  # ... and request n reached it before the answer was lost
    "blip-ambiguous": (3, True, 2),  # request n reached it, then n..n+3 fail, then the network is back
}


@pytest.mark.parametrize("mode", list(PERMANENT_MODES))
def test_a_fault_on_every_request_keeps_a_whole_state(mode, s3_url, tmp_path, reference):
    states, requests = reference
    extra, ambiguous, attempts = PERMANENT_MODES[mode]
    failed_runs = 0
    for n in range(1, requests + 1):
        url = f"{s3_url}/{n}"
        faults = Faults(n, n + extra, ambiguous)
        done, error = run_with_faults(url, tmp_path, faults, attempts)
        where = f"{mode}, fault from request {n} of {requests}"
        assert faults.injected, f"{where}: no fault was injected"
        failed_runs += error is not None
        got = contents_or_damage(url)
        if error is None:  # a late fault (e.g. after the last publish) may cost nothing
            assert got == states[-1], where
        else:
            assert got in (states[done], states[min(done + 1, len(states) - 1)]), f"{where}: {error!r}: {got[:2]}"
        report = tensordb.load(url).verify()
        assert report.ok, f"{where}: {report.problems}"
    assert failed_runs >= requests // 2  # the faults did bite
    FIGURES[f"s3 workload faults ({mode})"] += requests


#: A lost answer (the request was applied) is the harder case: it runs on every request; a lost request on every
#: third, to keep the file fast.
@pytest.mark.parametrize(("ambiguous", "stride"), [(False, 3), (True, 1)], ids=["lost-request", "lost-answer"])
def test_a_transient_fault_on_any_request_is_retried_away(ambiguous, stride, s3_url, tmp_path, reference):
    states, requests = reference
    for n in range(1, requests + 1, stride):
        url = f"{s3_url}/{n}"
        faults = Faults(n, n, ambiguous)
        done, error = run_with_faults(url, tmp_path, faults, attempts=5)
        where = f"transient fault on request {n} of {requests}"
        assert faults.injected == 1, where
        assert error is None, f"{where}: {error!r}"
        assert contents_or_damage(url) == states[-1], where
        assert tensordb.load(url).verify().ok, where
    FIGURES["s3 workload transient faults"] += len(range(1, requests + 1, stride))
