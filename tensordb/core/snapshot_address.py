"""A snapshot as another process opens it: the store, the snapshot's chunk keys, and the rows.

A Ray worker reads the dataset itself. The driver sends it a :class:`SnapshotAddress`, which
holds metadata only: the store's location (a pickled store opens a fresh handle on the same
directory or bucket), the encoded snapshot (every tensor's chunk keys, row counts and checksums,
with the format version) and, for a view, its row numbers and computed columns. The worker then
reads exactly that snapshot, whatever a writer has committed since.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash

from ..errors import TensorDBError, VersionError
from ..format import manifest as mf
from ..storage import Store
from .lifecycle import load
from .table import DatasetView, Table

if TYPE_CHECKING:
    from .dataset import Dataset

#: Snapshots a worker process keeps open, so that the tasks of one query (and the next queries on
#: the same snapshot) reuse one handle, its decoded state and its memory maps; and datasets likewise.
OPEN_SNAPSHOTS = 8
OPEN_DATASETS = 8


@dataclass(frozen=True)
class SnapshotAddress:
    """Everything another process needs to read one snapshot of a dataset (or of a view of it)."""

    store: Store
    state: bytes  # mf.encode_state of the snapshot: chunk keys and versions, never chunk data
    rows: np.ndarray | None = None  # a view's dataset rows in its order; None: every row
    virtual: dict[str, Any] = field(default_factory=dict)  # a view's computed columns
    #: Names an address with computed columns: those are not hashed, so only its own tasks share it.
    token: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """Identifies the snapshot and the rows: equal keys read equal data."""
        if self.token:
            return self.store.url, self.token
        digest = xxhash.xxh3_128(self.state)
        if self.rows is not None:
            digest.update(np.ascontiguousarray(self.rows, dtype=np.int64).tobytes())
        return self.store.url, digest.hexdigest()

    def open(self) -> Table:
        """The snapshot as a read-only table (cached in this process)."""
        return _OPENED.table(self)


def snapshot_address(table: Table, purpose: str) -> SnapshotAddress:
    """Where ``table``'s snapshot lies, for workers of ``purpose`` (named in errors) to read it.

    Pass a view (``ds.snapshot()`` for a whole dataset): a dataset's snapshot moves on as writers
    commit, and every piece of one job must name the same one.
    """
    root = table._root
    store = root._store
    if not store.reopenable:
        raise TensorDBError(f"{purpose}: workers in other processes cannot read {store.url!r}, which lives in "
                            f"this process's memory; use a dataset on a path or an s3:// location")
    if root.in_batch:
        raise VersionError(f"{purpose}: workers read what is published, and this thread's 'with ds:' block is "
                           f"not yet; run it after the block")
    rows, virtual = table._scanned_rows(), dict(table._virtual)
    return SnapshotAddress(store, mf.encode_state(table._state), None if rows is None else np.asarray(rows),
                           virtual, uuid.uuid4().hex if virtual else "")


class _OpenSnapshots:
    """The snapshots this process has open, least recently used first, and one dataset per store."""

    def __init__(self) -> None:
        self._tables: OrderedDict[tuple[str, str], Table] = OrderedDict()
        self._datasets: OrderedDict[str, Dataset] = OrderedDict()
        self._lock = threading.Lock()

    def table(self, address: SnapshotAddress) -> Table:
        key = address.key
        with self._lock:
            table = self._tables.get(key)
            if table is not None:
                self._tables.move_to_end(key)
                return table
            table = self._opened(address)
            self._tables[key] = table
            while len(self._tables) > OPEN_SNAPSHOTS:
                self._tables.popitem(last=False)
            return table

    def _opened(self, address: SnapshotAddress) -> Table:
        root = self._datasets.get(address.store.url)
        if root is None:
            root = self._datasets[address.store.url] = load(address.store, read_only=True)
            while len(self._datasets) > OPEN_DATASETS:
                self._datasets.popitem(last=False)
        self._datasets.move_to_end(address.store.url)
        state = mf.decode_state(address.state, f"{address.store.url}: the snapshot a worker was sent")
        rows = np.arange(state.nrows, dtype=np.int64) if address.rows is None else address.rows
        every_row = address.rows is None and not address.virtual
        return DatasetView(root, rows, virtual=dict(address.virtual), state=state, every_row=every_row)


_OPENED = _OpenSnapshots()
