"""I/O fault injection: fail the Nth write, fsync, rename or read, for every N along a workload.

``FaultyStore`` is a ``LocalStore`` whose system-call hooks fail on demand with
``ENOSPC``, ``EIO``, or a short write (``write`` stores half the bytes, returns
that count, and the next ``write`` fails). Reads fail through ``get``,
``get_range``, ``map`` and ``read_into``. For each operation of the workload and
each fault kind, the operation is first run fault-free to count its calls, then
once per call number N with the fault armed at N. Each run must:

* raise a ``StorageError`` (a ``TensorDBError``) that says what failed;
* leave the live handle AND the dataset reopened from disk equal to the state
  before the operation (one documented exception: when the failing call is the
  directory fsync after the atomic rename, the write is already visible; then
  live handle and disk must both equal the state after it), with ``verify`` ok;
* let a retry of the same operation succeed with the fault-free result.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import threading

import numpy as np
import pytest

import tensordb
from tensordb.errors import StorageError, TensorDBError
from tensordb.storage import LocalStore
from tensordb.vectorstore.index_params import IndexPolicy, TextIndexPolicy

from .helpers import FIGURES, LONG, meta_of, text_of, vector

READ_KINDS = ("get", "get_range", "map", "read_into")


class InjectedFault(Exception):
    pass


class FaultyStore(LocalStore):
    """Counts system calls by kind and fails the ``n``-th one of ``kind`` with ``mode``."""

    def __init__(self, root: str, kind: str | None = None, n: int = 0, mode: str = "EIO"):
        super().__init__(root)
        self.counts = {"write": 0, "fsync": 0, "replace": 0, "read": 0}
        self.kind, self.n, self.mode = kind, n, mode
        self.fired: str | None = None  # what failed: "write", "fsync-dir", "fsync-file", ...
        self._short_pending = False
        self._lock = threading.Lock()

    def arm(self, kind: str | None, n: int = 0, mode: str = "EIO") -> None:
        with self._lock:
            self.counts = dict.fromkeys(self.counts, 0)
            self.kind, self.n, self.mode, self.fired = kind, n, mode, None

    def _hit(self, kind: str) -> bool:
        with self._lock:
            self.counts[kind] += 1
            return self.kind == kind and self.counts[kind] == self.n

    def _error(self) -> OSError:
        code = errno.ENOSPC if self.mode == "ENOSPC" else errno.EIO
        return OSError(code, f"injected {os.strerror(code)}")

    def _os_write(self, fd, data):
        if self._short_pending:
            self._short_pending = False
            raise OSError(errno.ENOSPC, "injected ENOSPC after a short write")
        if self._hit("write"):
            self.fired = "write"
            if self.mode == "short" and len(data) > 1:
                self._short_pending = True
                return os.write(fd, data[: len(data) // 2])
            raise self._error()
        return super()._os_write(fd, data)

    def _os_fsync(self, fd):
        if self._hit("fsync"):
            self.fired = "fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file"
            raise self._error()
        # No real fsync: these tests check control flow, not durability (the process never dies
        # here), and thousands of fsyncs would dominate the run time.

    def _os_replace(self, src, dst):
        if self._hit("replace"):
            self.fired = "replace"
            raise self._error()
        return super()._os_replace(src, dst)

    def _read_fault(self, key: str) -> None:
        if self._hit("read"):
            self.fired = "read"
            err = self._error()
            raise StorageError(f"{self.url}: reading {key!r} failed: {err}") from err

    def get(self, key, max_bytes=None):
        self._read_fault(key)
        return super().get(key, max_bytes)

    def get_range(self, key, start, length):
        self._read_fault(key)
        return super().get_range(key, start, length)

    def map(self, key):
        self._read_fault(key)
        return super().map(key)

    def read_into(self, key, start, out):
        self._read_fault(key)
        return super().read_into(key, start, out)


# -- the workload -----------------------------------------------------------------------------
def docs(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def columns(ids: list[str], version: int = 0) -> dict:
    return {"text": [text_of(d, version) for d in ids], "metadata": [meta_of(d, version) for d in ids],
            "embedding": np.stack([vector(d, version) for d in ids]), "id": ids}


def op_create(vs_ds):
    ds = vs_ds
    with ds:
        ds.create_tensor("text", htype="text", max_chunk_size=1024)
        ds.create_tensor("metadata", htype="json", max_chunk_size=1024, chunk_compression="lz4")
        ds.create_tensor("embedding", htype="embedding", dtype="float32", max_chunk_size=1024)
        ds.create_tensor("id", htype="id", max_chunk_size=1024)


def op_create_single(ds):
    ds.create_tensor("extra", htype="json")


def op_delete_tensor(ds):
    ds.delete_tensor("extra")


def op_extend_a(ds):
    ds.extend(columns(docs("a", 40)))


def op_extend_b(ds):
    ds.extend([{k: v[i] for k, v in columns(docs("b", 12)).items()} for i in range(12)])


def op_update(ds):
    ids = ["a1", "a7", "a30", "b3"]
    rows = [ds.id.numpy(aslist=True).index(d) for d in ids]
    ds.update(rows, {k: v for k, v in columns(ids, 1).items() if k != "id"})


def op_setitem(ds):
    ds.text[5] = text_of("a5", 9)


def op_pop(ds):
    ds.pop([0, 17, 41])


def op_commit(ds):
    ds.commit("fault test")


def op_batch(ds):
    with ds:
        ds.extend(columns(docs("c", 6)))
        ds.update([2], {"text": [text_of("a3", 4)], "metadata": [meta_of("a3", 4)],
                        "embedding": vector("a3", 4)[None, :]})
        ds.pop(1)


def op_attachment(ds):
    ds.put_attachment("deep_memory/models/job1", {"format_version": 1, "dim": 16},
                      {"query_matrix": np.eye(16, dtype=np.float32)})


def op_branch(ds):
    ds.checkout("side", create=True)


class VSOps:
    """VectorStore operations, run on a VectorStore wrapping the handle under test."""

    @staticmethod
    def add(ds):
        vs = _vector_store(ds)
        vs.add(**columns(docs("v", 7)))

    @staticmethod
    def delete(ds):
        _vector_store(ds).delete(ids=["a4", "v3"])


def _vector_store(ds):
    """A VectorStore over the handle under test (opening another would need the writer lock)."""
    vs = tensordb.VectorStore.__new__(tensordb.VectorStore)
    vs.embedding_function, vs.dataset, vs._id_rows, vs._deep_memory = None, ds, None, None
    vs.index_policy, vs.text_index_policy = IndexPolicy(), TextIndexPolicy()  # the defaults: build no index
    return vs


WORKLOAD = [
    ("create tensors", op_create),
    ("create tensor", op_create_single),
    ("delete tensor", op_delete_tensor),
    ("extend", op_extend_a),
    ("extend rows", op_extend_b),
    ("update", op_update),
    ("setitem", op_setitem),
    ("pop", op_pop),
    ("commit", op_commit),
    ("vectorstore add", VSOps.add),
    ("batch", op_batch),
    ("attachment", op_attachment),
    ("vectorstore delete", VSOps.delete),
    ("branch", op_branch),
    ("commit on branch", op_commit),
]

FAULTS = [("write", "ENOSPC"), ("write", "EIO"), ("write", "short"), ("fsync", "EIO"), ("replace", "ENOSPC"),
          ("read", "EIO")]


def state_of(ds) -> dict:
    tensors = {}
    for name, t in ds.tensors.items():
        values = t.numpy(aslist=True)
        tensors[name] = [v.tobytes() if isinstance(v, np.ndarray) else v for v in values]
    atts = {name: ds.get_attachment(name)[0] for name in ds.list_attachments()}
    return {"tensors": tensors, "attachments": atts, "branch": ds.branch, "commit": ds.commit_id,
            "branches": ds.branches}


def same_content(a: dict, b: dict) -> bool:
    """Equal apart from commit ids (a retried commit gets a new id)."""
    keys = ("tensors", "attachments", "branch", "branches")
    return all(a[k] == b[k] for k in keys) and (a["commit"] is None) == (b["commit"] is None)


def disk_state(path: str, branch: str) -> dict:
    ds = tensordb.load(f"{path}@{branch}", read_only=True)
    return state_of(ds)


@pytest.fixture(scope="module")
def prefixes(tmp_path_factory):
    """The dataset before each workload operation, and the state after it (fault-free)."""
    base = tmp_path_factory.mktemp("faults")
    path = str(base / "live")
    ds = tensordb.empty(path)
    out = []
    for i, (name, op) in enumerate(WORKLOAD):
        snap = str(base / f"before{i}")
        ds.close()
        shutil.copytree(path, snap)
        ds = tensordb.load(f"{path}@{ds.branch}")
        before = state_of(ds)
        op(ds)
        out.append((name, op, snap, before, state_of(ds)))
    ds.close()
    return out


def open_faulty(path: str, branch: str) -> tuple[tensordb.Dataset, FaultyStore]:
    store = FaultyStore(path)
    ds = tensordb.load(store)
    if ds.branch != branch:
        ds.checkout(branch)
    return ds, store


def count_calls(snap: str, tmp: str, op, branch: str) -> dict[str, int]:
    shutil.copytree(snap, tmp)
    ds, store = open_faulty(tmp, branch)
    store.arm(None)
    op(ds)
    counts = dict(store.counts)
    ds.close()
    shutil.rmtree(tmp)
    return counts


@pytest.mark.parametrize("index", range(len(WORKLOAD)), ids=[w[0] for w in WORKLOAD])
def test_fault_at_every_call(prefixes, tmp_path, index):
    name, op, snap, before, after = prefixes[index]
    counts = count_calls(snap, str(tmp_path / "count"), op, before["branch"])
    trials = landed = 0
    for kind, mode in FAULTS:
        n_calls = counts[kind]
        for n in range(1, n_calls + 1):
            if not LONG and mode == "EIO" and kind == "write" and n % 2:
                continue  # CI: ENOSPC and EIO write faults alternate over N; long mode runs both at every N
            work = str(tmp_path / f"w-{kind}-{mode}-{n}")
            shutil.copytree(snap, work)
            ds, store = open_faulty(work, before["branch"])
            store.arm(kind, n, mode)
            try:
                op(ds)
                raised = None
            except TensorDBError as e:
                raised = e
            fired = store.fired
            store.arm(None)
            where = f"{name}: {mode} at {kind} #{n} of {n_calls}"
            if fired is None:  # e.g. background writes numbered differently: nothing failed
                assert raised is None, f"{where}: raised {raised!r} though no fault fired"
                ds.close()
                shutil.rmtree(work)
                continue
            trials += 1
            assert raised is not None, f"{where}: the fault ({fired}) was swallowed"
            assert isinstance(raised, StorageError), f"{where}: expected StorageError, got {raised!r}"
            assert "injected" in str(raised) and work in str(raised), f"{where}: unclear message {raised}"
            live = state_of(ds)
            disk = disk_state(work, live["branch"])
            report = tensordb.verify(work)
            assert report.ok, f"{where}: verify found {report.problems}"
            if fired == "fsync-dir" and disk != before:
                # the rename had landed; only its directory fsync failed: the write is visible, consistently
                assert same_content(disk, after) and same_content(live, after), f"{where}: half-landed write"
                assert live == disk, f"{where}: live handle and disk disagree"
                landed += 1
            else:
                assert live == before, f"{where}: live handle changed by a failed write"
                assert disk == before, f"{where}: disk changed by a failed write"
                op(ds)  # the retry succeeds
                assert same_content(state_of(ds), after), f"{where}: retry gave a different result"
                assert same_content(disk_state(work, after["branch"]), after), f"{where}: retry did not reach the disk"
            ds.close()
            shutil.rmtree(work)
    FIGURES["faults: injected"] += trials
    FIGURES["faults: writes visible after post-rename dir fsync failure"] += landed
    assert trials > 0 or not any(counts.values())


def test_create_dataset_fault_then_retry(tmp_path):
    """Creating a dataset: a fault leaves no dataset, and creating again succeeds."""
    probe = FaultyStore(str(tmp_path / "probe"))
    tensordb.empty(probe).close()
    counts = dict(probe.counts)
    trials = 0
    for kind, mode in FAULTS[:5]:
        for n in range(1, counts[kind] + 1):
            path = str(tmp_path / f"c-{kind}-{mode}-{n}")
            store = FaultyStore(path, kind, n, mode)
            with pytest.raises(StorageError):
                tensordb.empty(store)
            trials += 1
            if tensordb.exists(path):  # only possible when the marker's own dir fsync failed
                assert store.fired == "fsync-dir"
                assert tensordb.verify(path).ok
                continue
            ds = tensordb.empty(path)  # the retry succeeds: leftovers of a failed creation do not block it
            ds.create_tensor("x")
            ds.close()
            assert tensordb.verify(path).ok
    FIGURES["faults: injected"] += trials
