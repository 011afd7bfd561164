"""Training jobs: records persisted in the dataset, and the threads that run them.

A job record is an attachment ``deep_memory/jobs/<id>``; its model is the
attachment ``deep_memory/models/<id>``, written (atomically) before the record
says ``completed``, so search never sees a half-written model.

A job is alive while its lease (``Store.hold_lease``, named like its record) is
held: it is taken before the first ``pending`` record is saved and held by the
thread that runs the job until that thread ends. The kernel ends the lease when
the process dies, so a ``pending``/``running`` record whose lease nobody holds
reads as ``failed``, whatever process now has the PID it was written by.
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core import Dataset
from ..errors import KeyNotFoundError, TensorDBError
from ..storage import WriterLock, open_store
from .model import DeepMemoryModel

JOB_PREFIX = "deep_memory/jobs/"
MODEL_PREFIX = "deep_memory/models/"
#: The process that wrote a job record: for information only (liveness is the job's lease).
PROCESS_TOKEN = f"{os.getpid()}:{uuid.uuid4().hex[:8]}"

PENDING, RUNNING, COMPLETED, FAILED, CANCELLED = "pending", "running", "completed", "failed", "cancelled"


class JobNotFoundError(TensorDBError, KeyError):
    """An unknown Deep Memory job id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class JobRecord:
    """What a job did and how far it got; persisted as the job's attachment."""

    id: str
    status: str
    created: float
    commit_id: str | None
    n_queries: int
    owner: str = PROCESS_TOKEN
    started: float | None = None
    finished: float | None = None
    epoch: int = 0
    max_epochs: int = 0
    progress: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    results: dict[str, float] = field(default_factory=dict)
    improved: bool = False
    error: str | None = None
    seconds: float = 0.0
    #: Which queries chose the model, e.g. "given validation set (8 queries)" ("" in records from before).
    validated_on: str = ""
    #: What the time budget cut, in words ("" when it did not run out, and in records from before).
    time_budget: str = ""
    fusion: str = ""  # how hybrid search fuses the model with BM25 (empty: no text index when trained)
    #: Where it trained: "local" or e.g. "ray (2 workers)" ("" in records from before).
    engine: str = ""

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> JobRecord:
        known = {k: v for k, v in meta.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def new_job_id() -> str:
    return uuid.uuid4().hex[:24]


class JobStore:
    """Reads and writes job records and models of one dataset; thread-safe."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._lock = threading.Lock()
        self._cancel: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._models: dict[str, DeepMemoryModel] = {}
        self._latest: tuple[str, DeepMemoryModel] | None = None
        self._latest_known = False  # search asks for the latest model every query: keep it
        # The dataset's own store, reached through its public path (a mem:// store is process-wide).
        self._lease_store = open_store(dataset.path)
        self._leases: dict[str, WriterLock] = {}

    def save(self, record: JobRecord) -> None:
        """Persist ``record``; a pending or running one is leased first, so it never reads as dead."""
        # The lock guards this store's bookkeeping only; the write itself takes the dataset's write lock, and
        # holding ours across it would deadlock with a thread that holds the dataset's and then saves a record.
        with self._lock:
            fresh = record.status in (PENDING, RUNNING) and self._reserve(record.id)
        try:
            # A completed job cannot be used without its model: verify checks that it is there.
            requires = [MODEL_PREFIX + record.id] if record.status == COMPLETED else []
            self.dataset.put_attachment(JOB_PREFIX + record.id, asdict(record), requires=requires)
        except BaseException:
            if fresh:
                with self._lock:
                    self._release(record.id)
            raise
        if record.status == COMPLETED:
            with self._lock:
                self._latest_known = False

    # -- leases: a job is alive while its lease is held ------------------------------------------
    def _reserve(self, job_id: str) -> bool:
        """Take the job's lease unless this store holds it already; whether it was taken now."""
        if job_id in self._leases:
            return False
        self._leases[job_id] = self._lease_store.hold_lease(JOB_PREFIX + job_id)
        return True

    def _release(self, job_id: str) -> None:
        lease = self._leases.pop(job_id, None)
        if lease is not None:
            lease.release()

    def _alive(self, job_id: str) -> bool:
        return job_id in self._leases or self._lease_store.lease_held(JOB_PREFIX + job_id)

    def load(self, job_id: str) -> JobRecord:
        """The job's record; a pending or running one whose lease nobody holds reads as failed."""
        record = self._read(job_id)
        if record.status in (PENDING, RUNNING) and not self._alive(job_id):
            # The holder saves its last record before it lets the lease go: read again, after seeing it gone.
            record = self._read(job_id)
            if record.status in (PENDING, RUNNING):
                record.status = FAILED
                record.error = record.error or "interrupted: the training process ended before the job finished"
        return record

    def _read(self, job_id: str) -> JobRecord:
        try:
            meta, _ = self.dataset.get_attachment(JOB_PREFIX + job_id)
        except (KeyNotFoundError, ValueError):
            known = ", ".join(self.ids()[-5:]) or "none"
            raise JobNotFoundError(f"no Deep Memory job {job_id!r}; recent jobs: {known}") from None
        return JobRecord.from_meta(meta)

    def ids(self) -> list[str]:
        return [name[len(JOB_PREFIX) :] for name in self.dataset.list_attachments(JOB_PREFIX)]

    def records(self) -> list[JobRecord]:
        return sorted((self.load(i) for i in self.ids()), key=lambda r: r.created)

    def save_model(self, job_id: str, model: DeepMemoryModel) -> None:
        arrays, params = model.to_state()
        self.dataset.put_attachment(MODEL_PREFIX + job_id, params, arrays)

    def model(self, job_id: str) -> DeepMemoryModel:
        if job_id not in self._models:
            try:
                params, arrays = self.dataset.get_attachment(MODEL_PREFIX + job_id)
            except KeyNotFoundError:
                from ..errors import DataCorruptionError

                raise DataCorruptionError(
                    f"{self.dataset.path}: Deep Memory job {job_id!r} is completed but its model file "
                    f"'attachments/{MODEL_PREFIX}{job_id}' is missing"
                ) from None
            try:
                self._models[job_id] = DeepMemoryModel.from_state(arrays, params)
            except (KeyError, ValueError, AssertionError) as e:
                from ..errors import DataCorruptionError

                raise DataCorruptionError(f"Deep Memory model of job {job_id!r} is malformed: {e}") from e
        return self._models[job_id]

    def latest_model(self) -> tuple[str, DeepMemoryModel] | None:
        """The model of the most recently finished completed job, if any."""
        if not self._latest_known:
            done = [r for r in self.records() if r.status == COMPLETED]
            job = max(done, key=lambda r: r.finished or 0.0) if done else None
            self._latest = None if job is None else (job.id, self.model(job.id))
            self._latest_known = True
        return self._latest

    def use_model(self, job_id: str | None) -> None:
        """Take ``job_id``'s model (None: no model) as the latest, as another process chose it."""
        latest = None if job_id is None else (job_id, self.model(job_id))
        with self._lock:
            self._latest, self._latest_known = latest, True

    def delete(self, job_id: str) -> None:
        # The record goes first: a crash in between leaves an unused model, never a completed job without one.
        self.dataset.delete_attachment(JOB_PREFIX + job_id)
        self.dataset.delete_attachment(MODEL_PREFIX + job_id)
        self._lease_store.drop_lease(JOB_PREFIX + job_id)  # a deleted job is never alive again
        with self._lock:
            self._latest_known = False
            self._threads.pop(job_id, None)
            self._cancel.pop(job_id, None)
        self._models.pop(job_id, None)

    # -- threads -------------------------------------------------------------------------------
    def start(self, job_id: str, target: Any) -> None:
        """Run ``target(stop_event)`` on a thread that holds the job's lease until it ends, however it ends."""
        with self._lock:
            self._reserve(job_id)  # normally taken already by save(pending)

        def run(stop: threading.Event) -> None:
            try:
                target(stop)
            finally:
                with self._lock:
                    self._release(job_id)

        stop = threading.Event()
        thread = threading.Thread(target=run, args=(stop,), name=f"deep-memory-{job_id}", daemon=True)
        self._cancel[job_id] = stop
        self._threads[job_id] = thread
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._release(job_id)
            raise

    def cancel(self, job_id: str) -> bool:
        stop = self._cancel.get(job_id)
        if stop is None or not self._threads[job_id].is_alive():
            return False
        stop.set()
        return True

    def wait(self, job_id: str, timeout: float | None = None) -> bool:
        thread = self._threads.get(job_id)
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

