"""The writable dataset handle: atomic writes, batches, commits and branches."""

from __future__ import annotations

import functools
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np

from ..errors import (
    ConflictError,
    IndexNotFoundError,
    InvalidNameError,
    LockedError,
    PreconditionFailedError,
    ReadOnlyError,
    SampleError,
    TensorDBError,
    TensorExistsError,
    VersionError,
)
from ..format import codecs
from ..format import manifest as mf
from ..storage import Store, WriterLock
from . import attachments, index_catalog, maintenance, writes
from .arguments import refuse_unknown_keywords
from .chunk_io import ChunkReader, ChunkWriter
from .htypes import DEFAULT_DTYPE, encode_rows, validate_meta
from .indexing import normalize_index
from .rebase import APPEND, Footprint, Write, replay
from .table import DatasetView, Table, unknown_tensor
from .versions import Checkout, VersionStore

DEFAULT_CHUNK_BYTES = 16 << 20
#: How often a commit that keeps losing the race for ``refs`` is rebased and tried again.
MAX_PUBLISH_ATTEMPTS = 12
_BRANCH_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")

Method = TypeVar("Method", bound=Callable[..., Any])
#: Deep Lake v3 arguments of create_tensor that are accepted (compression as chunk_compression) or ignored.
IGNORED_CREATE_TENSOR_ARGUMENTS = frozenset({
    "compression", "sample_compression", "hidden", "create_sample_info_tensor", "create_shape_tensor",
    "create_id_tensor", "verify", "verbose", "downsampling", "tiling_threshold",
})


@dataclass
class _Batch:
    """An open ``with ds:`` block: the thread that owns it, the snapshot it has built so far, and its writes.

    ``base`` is the head the writes were computed on; with them it is what a rebase replays.
    """

    thread: int
    state: mf.DatasetState
    base: mf.DatasetState
    writes: list[Write] = field(default_factory=list)
    depth: int = 0


def _build_params(ref: mf.IndexRef) -> dict[str, Any]:
    """The parameters ``ref`` was built with, as ``create_index`` takes them (a rebuild keeps them all)."""
    return {k: v for k, v in ref.params.items() if k != "dim"}


def _index_footprint(name: str, tensor: str) -> Footprint:
    """Setting index ``name`` over ``tensor`` needs the index as it was, and the tensor still there."""
    return Footprint.on_rows({tensor: np.empty(0, dtype=np.int64)}, indexes=frozenset({name}))


def _joined_meta(current: mf.TensorState, added: mf.TensorState, where: str) -> mf.TensorMeta:
    """The schema of tensor ``current`` once the rows ``added`` (encoded elsewhere) are appended to it."""
    current_rows, added_rows = current.nrows, added.nrows
    current, added = current.meta, added.meta

    def refuse(what: str, have: Any, got: Any) -> SampleError:
        return SampleError(f"{where}: the rows were written as {what} {got!r}; the tensor has {have!r}")

    for what in ("htype", "compression"):
        if getattr(current, what) != getattr(added, what):
            raise refuse(what, getattr(current, what), getattr(added, what))
    if current.dtype is not None and added.dtype is not None and np.dtype(current.dtype) != np.dtype(added.dtype):
        raise refuse("dtype", current.dtype, added.dtype)
    if current.dim is not None and added.dim is not None and current.dim != added.dim:
        raise refuse("vectors of dimension", current.dim, added.dim)
    names, more = sorted((current.class_names, added.class_names), key=len)
    if more[: len(names)] != names:
        raise refuse("class names", list(current.class_names), list(added.class_names))
    shape = added.shape if not current_rows else current.shape if not added_rows else None
    if current_rows and added_rows and current.shape is not None and added.shape is not None:
        if len(current.shape) != len(added.shape):
            raise refuse("rows of shape", current.shape, added.shape)
        shape = tuple(a if a == b else None for a, b in zip(current.shape, added.shape))
    return replace(current, dtype=current.dtype or added.dtype, shape=shape, dim=current.dim or added.dim,
                   class_names=more)


def _back_off(attempt: int) -> None:
    """Wait before retrying a lost swap of ``refs``: exponential with jitter, so racing writers spread out."""
    time.sleep(random.uniform(0.0, min(1.0, 0.005 * 2**attempt)))


def _serialized(method: Method) -> Method:
    """Run a write under the handle's write lock, after refusing a handle inherited through ``fork``."""

    @functools.wraps(method)
    def locked(self: Dataset, *args: Any, **kwargs: Any) -> Any:
        self._refuse_forked_writer()
        with self._write_lock:
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]


class Dataset(Table):
    """A dataset on a path: tensors of equal row count, versioned, with one writer at a time.

    Every public write is atomic and durable when it returns: either all of its
    rows land in all tensors, or the dataset is left exactly as it was. Inside
    ``with ds:`` the calls become one atomic step that lands at the block's end
    (and is discarded if the block raises).
    """

    def __init__(self, store: Store, checkout: Checkout, lock: WriterLock | None, reader: ChunkReader | None = None):
        self._store = store
        self._versions = VersionStore(store)
        self._reader = reader or ChunkReader(store)
        self._lock = lock
        self._opened_by_pid = os.getpid()
        self._checkout = checkout
        self._head = self._versions.state(checkout.state_key)
        self._batch: _Batch | None = None
        self._conflict: str | None = None  # why this handle's last write lost a race; it holds that write
        self._attempted: mf.BranchRef | None = None  # the ref the last publish tried to install
        # Writes through one handle serialize on this lock; reads take no lock (snapshots are immutable).
        self._write_lock = threading.RLock()
        self._chunks = ChunkWriter(store)

    @property
    def _root(self) -> Dataset:
        """The dataset a table belongs to: this one (a property, not ``self._root = self``, so that a
        handle is freed as soon as it is unreferenced, with its memory maps and their file descriptors)."""
        return self

    @property
    def _state(self) -> mf.DatasetState:
        """The snapshot this thread sees: its own open batch, else the last published one."""
        batch = self._own_batch()
        return batch.state if batch is not None else self._head

    def _own_batch(self) -> _Batch | None:
        """The open batch, if the calling thread owns it (read once: another thread may end its batch)."""
        batch = self._batch
        return batch if batch is not None and batch.thread == threading.get_ident() else None

    # -- identity -------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self._store.url

    @property
    def read_only(self) -> bool:
        return self._lock is None or self._checkout.detached

    @property
    def branch(self) -> str | None:
        """The checked-out branch, or ``None`` when an old commit is checked out."""
        return self._checkout.branch

    @property
    def commit_id(self) -> str | None:
        """The last commit of the branch (or the commit checked out); ``None`` before the first commit."""
        return self._checkout.commit

    @property
    def branches(self) -> list[str]:
        return sorted(self._versions.refs())

    @property
    def has_head_changes(self) -> bool:
        """Whether the branch has writes not yet committed."""
        if self._checkout.commit is None:
            return bool(self._state.tensors)
        return self._versions.commit_record(self._checkout.commit, "the refs file").state != self._checkout.state_key

    def __repr__(self) -> str:
        where = self.branch if self.branch else f"commit {self.commit_id}"
        mode = ", read_only" if self.read_only else ""
        return f"Dataset(path={self.path!r}, {where}, tensors={list(self._state.tensors)}{mode})"

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the writer lock (after any other thread's open batch lands). Reading stays possible."""
        if self._lock is None:
            return
        if os.getpid() != self._opened_by_pid:
            # A forked child shares its parent's lock: unlocking here would unlock the parent too.
            self._lock = None
            return
        with self._write_lock:
            if self._batch is not None:
                # The batch would then publish without the lock, over another writer's commits.
                raise VersionError("close inside a 'with ds:' block is not allowed; close after the block")
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> Dataset:
        self._refuse_forked_writer()
        self._write_lock.acquire()  # held until the block ends: other threads' writes wait for it
        try:
            self._as_writable("start a batch")
            if self._batch is None:
                self._batch = _Batch(threading.get_ident(), self._head, self._head)
                self._chunks.written.clear()
            self._batch.depth += 1
        except BaseException:
            self._write_lock.release()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            batch = self._batch
            batch.depth -= 1
            if batch.depth == 0:
                self._batch = None
                self._end_batch(batch, commit=exc_type is None)
        finally:
            self._write_lock.release()

    def _end_batch(self, batch: _Batch, commit: bool) -> None:
        """Publish a finished batch whole, or discard it and the chunks it wrote."""
        if not commit:
            self._chunks.discard()
            return
        try:
            self._head = self._publish(batch.state, batch.writes, batch.base, batch=batch)
        except ConflictError:
            raise
        except BaseException as e:
            landed = self._published_anyway()
            if landed is False:
                self._chunks.discard()
            elif landed and self._done_despite(e):
                return
            raise  # landed but not surely durable, or unknown (the chunks stay: an orphan is harmless)

    @_serialized
    def flush(self) -> None:
        """Inside ``with ds:``, make the writes so far durable now; outside, writes already are."""
        batch = self._batch
        if batch is None:
            return
        try:
            installed = self._publish(batch.state, batch.writes, batch.base, batch=batch)
        except ConflictError:
            raise
        except BaseException as e:
            if not self._published_anyway():  # not landed (or unknown): the batch keeps its writes for its end
                raise
            batch.state = batch.base = self._head  # landed: the batch goes on from the branch's head
            batch.writes = []
            if self._done_despite(e):
                return
            raise
        batch.state = batch.base = self._head = installed
        batch.writes = []

    # -- write machinery ------------------------------------------------------------------------
    def _refuse_forked_writer(self) -> None:
        if self._lock is not None and os.getpid() != self._opened_by_pid:
            raise LockedError(
                f"cannot write to {self.path}: this handle was opened for writing by process "
                f"{self._opened_by_pid}, and this process ({os.getpid()}) inherited it through fork; two "
                f"processes would then write under one lock. Open the dataset again in this process "
                f"(after the parent closes it), or open it with read_only=True to read"
            )

    def snapshot(self) -> DatasetView:
        """All rows as they are now, as one read-only view: later writes, from any thread, do not change it."""
        state = self._state  # read once: the rows and the tensors must come from the same snapshot
        return DatasetView(self, np.arange(state.nrows, dtype=np.int64), state=state, every_row=True)

    @property
    def in_batch(self) -> bool:
        """Whether the calling thread has a ``with ds:`` block open on this handle."""
        return self._own_batch() is not None

    def check_writable(self, operation: str) -> None:
        """Raise ``ReadOnlyError`` (or ``LockedError`` after a fork) unless ``operation`` may write here."""
        self._as_writable(operation)

    def _as_writable(self, operation: str) -> Dataset:
        if self._checkout.detached:
            raise ReadOnlyError(
                f"cannot {operation}: commit {self._checkout.commit} is checked out; "
                f"checkout a branch (or create one) to write"
            )
        if self._lock is None:
            raise ReadOnlyError(f"cannot {operation}: {self.path} is open read-only")
        self._refuse_forked_writer()
        if self._conflict is not None:
            raise ConflictError(
                f"cannot {operation}: this handle holds a write that conflicted with another writer's "
                f"({self._conflict}); ds.checkout('<new branch>', create=True) keeps it as a branch, "
                f"ds.reset() drops it"
            )
        return self

    @_serialized
    def _apply(
        self, operation: str, change: Callable[[mf.DatasetState], mf.DatasetState], footprint: Footprint = APPEND
    ) -> None:
        """Run one public write: compute the new snapshot, then make it visible atomically.

        ``footprint`` says what of the snapshot the change depends on, so that it can be
        replayed on a head another writer moved meanwhile (see :mod:`.rebase`).
        """
        self._as_writable(operation)
        batch = self._batch
        write = Write(operation, change, footprint)
        before = batch.state if batch is not None else self._head
        mark = len(self._chunks.written)
        new = before
        try:
            try:
                new = change(before)
            finally:
                self._chunks.wait()
            # Readers sharing this handle see the new snapshot only once its chunks (and,
            # outside a batch, its refs) are on disk: never a chunk still being written.
            if batch is not None:
                batch.state = new
                batch.writes.append(write)
                return
            self._head = self._publish(new, [write], before, mark)
        except ConflictError:
            raise  # the handle holds the write, unpublished, with its chunks
        except BaseException as e:
            landed = False if batch is not None else self._published_anyway()
            if landed is False:
                self._chunks.discard(mark)
            elif landed and self._done_despite(e):
                return
            raise  # landed but not surely durable, or unknown (the chunks stay: an orphan is harmless)

    def _done_despite(self, error: BaseException) -> bool:
        """Whether a write that readers already see is done although ``error`` ended its publish: on stores
        where visible means durable, the error was only the lost answer (an interrupt still propagates)."""
        return isinstance(error, Exception) and self._store.durable_once_visible

    def _published_anyway(self) -> bool | None:
        """After a failed publish: did the refs it tried to install land (e.g. before a failed fsync, or
        with the store's answer lost)? Then the handle follows the branch, which holds the write (and
        maybe others' writes on top). ``None`` when that cannot be told now: the refs cannot be read."""
        attempted, self._attempted = self._attempted, None
        if attempted is None:
            return False  # it failed before trying to swap
        try:
            refs = self._versions.refs()
            if not self._landed(attempted, refs.get(self.branch)):
                return False
            self._follow(refs)
        except TensorDBError:
            return None
        self._chunks.written.clear()
        return True

    @staticmethod
    def _landed(attempted: mf.BranchRef | None, ref: mf.BranchRef | None) -> bool:
        """Whether the snapshot ``attempted`` installed is, or was recently, the head of the branch ``ref``."""
        return attempted is not None and ref is not None and attempted.state in (ref.state, *ref.recent)

    def _publish(
        self,
        state: mf.DatasetState,
        writes: list[Write],
        base: mf.DatasetState,
        mark: int = 0,
        batch: _Batch | None = None,
    ) -> mf.DatasetState:
        """Install ``state`` as the branch head with a compare-and-swap of ``refs``; returns what was installed.

        When another writer moved the branch since ``base``, ``writes`` are replayed on its head
        first (``ConflictError`` if they cannot be), and the swap is tried again, a bounded number of times.
        The ``batch`` being published follows each rebase, so that it stays whole should the publish fail.
        """
        self._attempted = None
        for attempt in range(MAX_PUBLISH_ATTEMPTS + 1):
            refs, version = self._versions.refs_versioned()
            ref = refs.get(self.branch)
            if ref is None:
                raise VersionError(f"{self.path}: branch {self.branch!r} no longer exists")
            if self._landed(self._attempted, ref):
                # The last swap landed though its answer was lost, and others wrote on top since.
                self._attempted = None
                self._chunks.written.clear()
                self._follow(refs)
                return self._head
            if attempt == MAX_PUBLISH_ATTEMPTS:
                break
            if ref != mf.BranchRef(self._checkout.commit, self._checkout.state_key):
                state, base = self._rebase(state, writes, base, ref, mark, keep_superseded=batch is not None)
                if batch is not None:
                    batch.state, batch.base = state, base
            key = self._versions.put_state(state)
            refs[self.branch] = self._attempted = ref.installing(self._checkout.commit, key)
            if not self._swap_refs(refs, version, attempt):
                continue  # another writer swapped first: read its head and rebase
            self._attempted = None
            self._checkout = replace(self._checkout, state_key=key)
            self._chunks.written.clear()
            return state
        self._attempted = None
        self._chunks.discard(mark)
        raise ConflictError(
            f"{self.path}: gave up publishing to branch {self.branch!r} after {MAX_PUBLISH_ATTEMPTS} attempts, "
            f"each lost to another writer; nothing of this write was published, try it again"
        )

    def _swap_refs(self, refs: dict[str, mf.BranchRef], version: str, attempt: int) -> bool:
        """Swap ``refs`` in over ``version``; ``False``, after a back-off, when another writer swapped first."""
        try:
            self._versions.swap_refs(refs, version)
        except PreconditionFailedError:
            _back_off(attempt)
            return False
        return True

    def _rebase(
        self,
        state: mf.DatasetState,
        writes: list[Write],
        base: mf.DatasetState,
        ref: mf.BranchRef,
        mark: int,
        keep_superseded: bool = False,
    ) -> tuple[mf.DatasetState, mf.DatasetState]:
        """``writes`` replayed on the head ``ref`` names, and that head; or ``ConflictError``, keeping ``state``.

        The chunks of ``state`` that the replay superseded are deleted, unless ``keep_superseded``: views
        taken inside an open batch may still read them (vacuum removes them later).
        """
        head = self._versions.state(ref.state)
        replayed_from = len(self._chunks.written)
        try:
            try:
                rebased, reason = replay(writes, base, head)
            finally:
                self._chunks.wait()
        except (TensorDBError, KeyError, ValueError, TypeError) as e:  # e.g. the head's tensors take no such values
            rebased, reason = head, f"{writes[-1].operation}: {type(e).__name__}: {e}"
        if reason is not None:
            self._chunks.discard(replayed_from)
            self._hold_rejected(state, ref, reason)
        if not keep_superseded:
            self._chunks.discard(mark, replayed_from)  # the first attempt's chunks: nothing refers to them now
        # Head and checkout move together: should this publish still fail, the next write starts from here.
        self._checkout, self._head = Checkout(self.branch, ref.head, ref.state), head
        return rebased, head

    def _hold_rejected(self, state: mf.DatasetState, ref: mf.BranchRef, reason: str) -> None:
        """Keep a write that lost the race in this handle, saved as a snapshot, and raise ``ConflictError``."""
        key = self._versions.put_state(state)
        self._checkout = replace(self._checkout, state_key=key)
        self._head = state
        self._chunks.written.clear()
        self._conflict = reason
        raise ConflictError(
            f"{self.path}: another writer changed branch {self.branch!r} (now at snapshot {ref.state!r}) in a way "
            f"this write conflicts with ({reason}). Its change stands; yours is still in this handle, unpublished: "
            f"ds.checkout('<new branch>', create=True) keeps it as a branch, ds.reset() drops it and moves to "
            f"the branch's latest head"
        )

    # -- schema ---------------------------------------------------------------------------------
    @_serialized
    def create_tensor(
        self,
        name: str,
        htype: str = "generic",
        dtype: str | np.dtype | None = None,
        chunk_compression: str | None = None,
        max_chunk_size: int = DEFAULT_CHUNK_BYTES,
        class_names: Sequence[str] | None = None,
        exist_ok: bool = False,
        **deeplake_v3_arguments: Any,
    ) -> Any:
        """Add an empty tensor. ``htype`` is one of generic, text, json, list, embedding, class_label, id.

        Deep Lake v3's ``compression`` is read as ``chunk_compression``; its ``sample_compression=None``,
        ``hidden``, ``create_sample_info_tensor``, ``create_shape_tensor``, ``create_id_tensor``, ``verify``,
        ``verbose``, ``downsampling`` and ``tiling_threshold`` are accepted and ignored. Any other keyword
        argument is a ``TypeError``.
        """
        refuse_unknown_keywords(Dataset.create_tensor, deeplake_v3_arguments, IGNORED_CREATE_TENSOR_ARGUMENTS)
        if deeplake_v3_arguments.get("sample_compression") is not None:
            raise SampleError(
                f"create_tensor: sample_compression={deeplake_v3_arguments['sample_compression']!r} is not "
                f"supported; tensordb compresses whole chunks (chunk_compression='lz4')"
            )
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise InvalidNameError(
                f"invalid tensor name {name!r}: expected a Python identifier not starting with '_'"
            )
        if name in self._state.tensors:
            if exist_ok:
                return self._tensor(name)
            raise TensorExistsError(f"tensor {name!r} already exists; tensors are {list(self._state.tensors)}")
        compression = chunk_compression or deeplake_v3_arguments.get("compression")
        codecs.validate(compression)
        dtype_str = np.dtype(dtype).name if dtype is not None else DEFAULT_DTYPE.get(htype)
        meta = mf.TensorMeta(
            name=name,
            htype=htype,
            dtype=dtype_str,
            shape=None,
            compression=compression,
            chunk_bytes=int(max_chunk_size),
            class_names=tuple(class_names or ()),
        )
        validate_meta(meta)

        def change(state: mf.DatasetState) -> mf.DatasetState:
            return state.with_tensors({**state.tensors, name: mf.TensorState(meta)})

        self._apply(f"create tensor {name!r}", change, Footprint(tensors=frozenset({name})))
        return self._tensor(name)

    @_serialized
    def delete_tensor(self, name: str) -> None:
        """Remove a tensor from the working state (committed versions keep it)."""
        self._tensor_state(name)
        self._apply(
            f"delete tensor {name!r}",
            lambda s: s.with_tensors({k: v for k, v in s.tensors.items() if k != name}),
            Footprint(tensors=frozenset({name})),
        )

    # -- row writes -----------------------------------------------------------------------------
    @_serialized
    def append(self, row: Mapping[str, Any]) -> None:
        """Add one row: a value for every tensor."""
        if not isinstance(row, Mapping):
            raise SampleError(f"append expects a dict of tensor name to value, got {type(row).__name__}")
        self._extend_tensors({k: [v] for k, v in row.items()}, require_all=True)

    @_serialized
    def extend(self, rows: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """Add rows: a dict of tensor name to values (all tensors), or a list of row dicts."""
        if isinstance(rows, Sequence) and not isinstance(rows, (str, bytes)):
            for i, row in enumerate(rows):
                if not isinstance(row, Mapping):
                    raise SampleError(f"extend: row {i} must be a dict of tensor values, got {type(row).__name__}")
            names = dict.fromkeys([*self._state.tensors, *(k for r in rows for k in r)])
            rows = {n: [r.get(n) for r in rows] for n in names}
        if not isinstance(rows, Mapping):
            raise SampleError(f"extend expects a dict of tensor name to values, got {type(rows).__name__}")
        self._extend_tensors(rows, require_all=True)

    @_serialized
    def _extend_tensors(self, columns: Mapping[str, Any], require_all: bool) -> None:
        known = list(self._state.tensors)
        for name in columns:
            if name not in self._state.tensors:
                raise unknown_tensor(name, known)
        if require_all:
            missing = [n for n in known if n not in columns]
            if missing:
                raise SampleError(f"extend: no values for tensors {missing}; every tensor needs a value per row")
        lengths = {}
        for name, values in columns.items():
            scalar_array = isinstance(values, np.ndarray) and values.ndim == 0  # has __len__, but len() fails
            if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__len__") or scalar_array:
                raise SampleError(
                    f"tensor {name!r}: expected a sequence of rows, got {type(values).__name__} "
                    f"(use append for a single row)"
                )
            lengths[name] = len(values)
        if len(set(lengths.values())) > 1:
            raise SampleError(f"extend: tensors got different numbers of rows: {lengths}")
        if require_all and len(set(self._state.tensors[n].nrows for n in columns)) > 1:
            counts = {n: self._state.tensors[n].nrows for n in columns}
            raise SampleError(f"extend: tensors have different lengths {counts}; extend them one by one")

        def change(state: mf.DatasetState) -> mf.DatasetState:
            # Checked again here, on the snapshot the rows land on: a rebase replays this on another head.
            if require_all and len({state.tensors[n].nrows for n in columns}) > 1:
                counts = {n: state.tensors[n].nrows for n in columns}
                raise SampleError(f"extend: tensors have different lengths {counts}; extend them one by one")
            encoded = {}
            for name, values in columns.items():
                t = state.tensors[name]
                encoded[name] = encode_rows(t.meta, values, t.nrows)
            tensors = dict(state.tensors)
            for name, (rows, meta) in encoded.items():
                tensors[name] = writes.append(self._chunks, self._reader, state.tensors[name], meta, rows)
            return state.with_tensors(tensors)

        needs = {name: np.empty(0, dtype=np.int64) for name in columns}  # each tensor must still be there
        self._apply("extend", change, Footprint.on_rows(needs, same_tensor_set=require_all))

    @_serialized
    def append_chunks(self, blocks: Sequence[Mapping[str, mf.TensorState]], operation: str = "append chunks") -> None:
        """Append rows whose chunk files other processes (e.g. Ray workers) already wrote into this store.

        Each block maps every tensor to a ``TensorState`` listing that block's new chunks and the schema
        its rows were encoded with (``encode_rows`` from this tensor's schema). The blocks land in order,
        as one atomic write; as with ``extend``, every tensor gets the same rows, and each schema must
        agree with the tensor's (``SampleError`` otherwise, and nothing changes).
        """
        self._as_writable(operation)

        def change(state: mf.DatasetState) -> mf.DatasetState:
            tensors = dict(state.tensors)
            if len({t.nrows for t in tensors.values()}) > 1:
                counts = {n: t.nrows for n, t in tensors.items()}
                raise SampleError(f"{operation}: tensors have different lengths {counts}")
            known = state.chunk_keys()
            for number, block in enumerate(blocks):
                where = f"{operation}: block {number}"
                if set(block) != set(tensors):
                    raise SampleError(f"{where} holds tensors {sorted(block)}; the dataset has {sorted(tensors)}")
                if len({piece.nrows for piece in block.values()}) > 1:
                    raise SampleError(f"{where}: tensors got different numbers of rows "
                                      f"{ {n: p.nrows for n, p in block.items()} }")
                for name, piece in block.items():
                    for key in piece.chunk_keys:
                        if not key.startswith(mf.CHUNK_PREFIX) or ".." in key or key in known:
                            raise SampleError(f"{where}, tensor {name!r}: chunk key {key!r} is not a new chunk")
                        known.add(key)
                    t = tensors[name]
                    tensors[name] = mf.TensorState(
                        _joined_meta(t, piece, f"{where}, tensor {name!r}"),
                        t.chunk_keys + piece.chunk_keys, t.chunk_rows + piece.chunk_rows,
                        t.chunk_nbytes + piece.chunk_nbytes, t.chunk_checksums + piece.chunk_checksums)
            return state.with_tensors(tensors)

        needs = {name: np.empty(0, dtype=np.int64) for name in self._state.tensors}  # each must still be there
        self._apply(operation, change, Footprint.on_rows(needs, same_tensor_set=True))

    @_serialized
    def _update_tensor(self, name: str, rows: np.ndarray, values: Any) -> None:
        change = self._update_change(name, rows, values)
        if len(rows):
            self._apply(f"update tensor {name!r}", change, Footprint.on_rows({name: rows}))

    def _update_change(
        self, name: str, rows: np.ndarray, values: Any
    ) -> Callable[[mf.DatasetState], mf.DatasetState]:
        """Check an update of one tensor and return the change that applies it."""
        if len(np.unique(rows)) != len(rows):
            raise SampleError(f"tensor {name!r}: update index selects a row more than once")
        if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__len__") or len(values) != len(rows):
            got = len(values) if hasattr(values, "__len__") and not isinstance(values, (str, bytes)) else 1
            raise SampleError(f"tensor {name!r}: update of {len(rows)} rows needs {len(rows)} values, got {got}")

        def change(state: mf.DatasetState) -> mf.DatasetState:
            t = state.tensors[name]
            first = int(rows[0]) if len(rows) else 0
            try:
                encoded, meta = encode_rows(t.meta, values, first)
            except SampleError:
                if np.array_equal(rows, np.arange(first, first + len(rows))):
                    raise
                # scattered rows: find the bad value one by one, so the error names its real row
                for position, row in enumerate(rows.tolist()):
                    encode_rows(t.meta, values[position : position + 1], row)
                raise
            tensors = dict(state.tensors)
            tensors[name] = writes.update(self._chunks, self._reader, t, meta, rows, encoded)
            return state.with_tensors(tensors)

        return change

    @_serialized
    def update(self, index: Any, values: Mapping[str, Any]) -> None:
        """Replace the rows at ``index`` in several tensors at once (one atomic step)."""
        rows, single = normalize_index(index, len(self), "dataset")
        for name in values:
            self._tensor_state(name)
        # One change for all tensors, so no snapshot (not even this handle's) holds half of it.
        changes = [self._update_change(name, rows, [value] if single else value) for name, value in values.items()]

        def change(state: mf.DatasetState) -> mf.DatasetState:
            for one in changes:
                state = one(state)
            return state

        if len(rows) and changes:
            self._apply("update", change, Footprint.on_rows({name: rows for name in values}))

    @_serialized
    def pop(self, index: int | Sequence[int] | None = None) -> None:
        """Delete rows from every tensor (the last row when ``index`` is None)."""
        self._as_writable("pop")
        length = len(self)
        if index is None:
            if length == 0:
                raise SampleError("pop: the dataset is empty")
            index = length - 1
        rows, _ = normalize_index(index, length, "dataset")
        rows = np.unique(rows)

        def change(state: mf.DatasetState) -> mf.DatasetState:
            tensors = {}
            for name, t in state.tensors.items():
                mine = rows[rows < t.nrows]
                tensors[name] = writes.delete(self._chunks, self._reader, t, mine) if len(mine) else t
            return state.with_tensors(tensors)

        if len(rows):
            touched = {name: rows[rows < t.nrows] for name, t in self._state.tensors.items()}
            self._apply("pop", change, Footprint.on_rows(touched, shifts_rows=True))

    delete = pop

    # -- versions -------------------------------------------------------------------------------
    @_serialized
    def commit(self, message: str = "") -> str:
        """Record the working state as an immutable commit; returns its id."""
        self._as_writable("commit")
        if self._batch is not None:
            raise VersionError("commit inside a 'with ds:' block is not allowed; commit after the block")
        record: mf.CommitRecord | None = None
        for attempt in range(MAX_PUBLISH_ATTEMPTS):
            refs, version = self._versions.refs_versioned()
            if record is not None and self._commit_landed(record.id, refs.get(self.branch)):
                self._follow(refs)  # the last try landed though its answer said otherwise
                return record.id
            self._follow(refs)
            record = self._versions.new_commit(
                self._checkout.commit, self.branch, str(message), self._checkout.state_key
            )
            refs[self.branch] = refs[self.branch].installing(record.id, self._checkout.state_key)
            try:
                if not self._swap_refs(refs, version, attempt):
                    continue
            except BaseException:
                if self._commit_landed(record.id):  # e.g. only the final fsync failed: the commit is visible
                    self._checkout = replace(self._checkout, commit=record.id)
                raise
            self._checkout = replace(self._checkout, commit=record.id)
            return record.id
        raise ConflictError(
            f"{self.path}: gave up committing branch {self.branch!r} after {MAX_PUBLISH_ATTEMPTS} attempts, "
            f"each lost to another writer; try again"
        )

    def _follow(self, refs: dict[str, mf.BranchRef]) -> None:
        """Move the handle to its branch's head in ``refs`` when other writers moved it.

        Every write of this handle is in that head already (theirs were rebased onto
        it, or it onto theirs), so a commit there records them all.
        """
        ref = refs.get(self.branch)
        if ref is None:
            raise VersionError(f"{self.path}: branch {self.branch!r} no longer exists")
        if ref != mf.BranchRef(self._checkout.commit, self._checkout.state_key):
            self._head = self._versions.state(ref.state)
            self._checkout = Checkout(self.branch, ref.head, ref.state)

    def _commit_landed(self, commit_id: str, ref: mf.BranchRef | None = None) -> bool:
        """Whether commit ``commit_id`` is the head of this branch, or among its last commits (others may
        have committed on top since); ``ref`` is the branch as read, else it is read now."""
        try:
            ref = ref if ref is not None else self._versions.refs().get(self.branch)
            head = ref.head if ref is not None else None
            for _ in range(mf.RECENT_STATES):
                if head is None or head == commit_id:
                    return head == commit_id
                head = self._versions.commit_record(head, "the branch's history").parent
        except TensorDBError:
            return False
        return False

    def _ref_landed(self, branch: str, ref: mf.BranchRef) -> bool:
        """After a failed ``publish_refs``: does the refs file on disk already hold ``ref`` for ``branch``?"""
        try:
            return self._versions.refs().get(branch) == ref
        except TensorDBError:
            return False

    @_serialized
    def checkout(self, address: str, create: bool = False) -> str | None:
        """Switch to a branch or commit; ``create=True`` starts a new branch from the current state."""
        if self._batch is not None:
            raise VersionError("checkout inside a 'with ds:' block is not allowed")
        if create:
            self._create_branch(address)
        else:
            if self._conflict is not None:
                raise ConflictError(
                    f"cannot checkout {address!r}: this handle holds a write that conflicted with another "
                    f"writer's ({self._conflict}); checkout('<new branch>', create=True) keeps it, reset() drops it"
                )
            checkout = self._versions.resolve(address)
            head = self._versions.state(checkout.state_key)
            self._checkout, self._head = checkout, head
        return self.commit_id

    def _create_branch(self, name: str) -> None:
        """Start branch ``name`` at this handle's state (a write that lost a race included) and move to it."""
        held, self._conflict = self._conflict, None  # a new branch is where a conflicting write may go
        try:
            self._as_writable(f"create branch {name!r}")
        except BaseException:
            self._conflict = held
            raise
        if not isinstance(name, str) or not _BRANCH_NAME.fullmatch(name):
            self._conflict = held
            raise VersionError(f"invalid branch name {name!r}: use letters, digits, '_', '.', '-'")
        ref = mf.BranchRef(self._checkout.commit, self._checkout.state_key)
        if held is not None:
            self._check_held_snapshot(held)
        for attempt in range(MAX_PUBLISH_ATTEMPTS):
            refs, version = self._versions.refs_versioned()
            if name in refs and attempt > 0 and refs[name] == ref:
                # The last try landed though its answer said otherwise (snapshot keys are unique).
                self._checkout = Checkout(name, ref.head, ref.state)
                return
            if name in refs:
                self._conflict = held
                raise VersionError(f"branch {name!r} already exists; checkout it without create=True")
            refs[name] = ref
            try:
                if not self._swap_refs(refs, version, attempt):
                    continue
            except BaseException:
                if self._ref_landed(name, ref):  # the branch exists on disk: the handle follows it
                    self._checkout = Checkout(name, ref.head, ref.state)
                else:
                    self._conflict = held
                raise
            self._checkout = Checkout(name, ref.head, ref.state)
            return
        self._conflict = held
        raise ConflictError(f"{self.path}: gave up creating branch {name!r}: other writers kept changing refs")

    def _check_held_snapshot(self, held: str) -> None:
        """A held write is named by no branch, so a vacuum past its grace period may have removed it."""
        try:
            self._versions.state(self._checkout.state_key)
        except TensorDBError as e:
            self._conflict = held
            raise ConflictError(
                f"{self.path}: the write this handle held is gone ({e}); a vacuum removed it after its grace "
                f"period. ds.reset() moves to the branch's head"
            ) from None

    @_serialized
    def reset(self) -> None:
        """Drop what this handle holds unpublished (a write that lost a race) and move to its branch's head."""
        if self._batch is not None:
            raise VersionError("reset inside a 'with ds:' block is not allowed; reset after the block")
        if self._checkout.detached:
            return
        self._conflict = None
        self._follow(self._versions.refs())

    def log(self, show: bool = True) -> list[dict[str, Any]]:
        """The commits of the current branch or commit, newest first; printed unless ``show=False``."""
        entries = [
            {"commit": c.id, "branch": c.branch, "message": c.message, "time": c.time, "parent": c.parent}
            for c in self._versions.history(self._checkout.commit)
        ]
        if show:
            print(f"---- log of {self.branch or self.commit_id} ----")
            for e in entries:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["time"]))
                print(f"commit {e['commit']}  branch {e['branch']}  {stamp}\n    {e['message']}")
        return entries

    def diff(self, a: str | None = None, b: str | None = None) -> dict[str, dict[str, int]]:
        """Row counts per tensor in ``a`` and ``b`` (defaults: the head commit and the working state)."""

        def counts(address: str | None, default_key: str | None) -> dict[str, int]:
            key = self._versions.resolve(address).state_key if address is not None else default_key
            if key is None:
                return {}
            return {n: t.nrows for n, t in self._versions.state(key).tensors.items()}

        head = self._versions.commit_record(self.commit_id, "the refs file").state if self.commit_id else None
        before, after = counts(a, head), counts(b, self._checkout.state_key)
        return {
            name: {"a": before.get(name, 0), "b": after.get(name, 0), "added": after.get(name, 0) - before.get(name, 0)}
            for name in dict.fromkeys([*before, *after])
        }

    # -- attachments: named side records (e.g. trained models) kept beside the versions ------
    @_serialized
    def put_attachment(
        self,
        name: str,
        meta: Mapping[str, Any],
        arrays: Mapping[str, np.ndarray] | None = None,
        requires: Sequence[str] = (),
    ) -> None:
        """Atomically store a named record of JSON-like ``meta`` and numpy ``arrays`` (no pickle).

        ``requires`` names attachments this record cannot be used without; ``verify`` reports any that is missing.
        """
        self._as_writable(f"write attachment {name!r}")
        attachments.put(self._store, name, meta, arrays or {}, requires)

    def get_attachment(self, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Read a record stored with :meth:`put_attachment`; raises ``KeyNotFoundError`` if absent."""
        return attachments.get(self._store, name)

    def list_attachments(self, prefix: str = "") -> list[str]:
        return attachments.names(self._store, prefix)

    @_serialized
    def delete_attachment(self, name: str) -> None:
        self._as_writable(f"delete attachment {name!r}")
        attachments.delete(self._store, name)

    # -- indexes: derived data listed by the state, see index_catalog --------------------------
    @property
    def indexes(self) -> dict[str, dict[str, Any]]:
        """Every index of this version: ``{name: {"tensor", "kind", "rows", "fresh_rows", ...}}``."""
        state = self._state
        return {name: {"tensor": ref.tensor, **index_catalog.describe(ref, state.tensors[ref.tensor])}
                for name, ref in sorted(state.indexes.items())}

    @_serialized
    def create_index(self, tensor: str, name: str, kind: str, **params: Any) -> None:
        """Build index ``name`` of ``kind`` over every row of ``tensor`` (atomic; see ``Tensor.create_index``)."""
        self._refuse_in_batch(f"create index {name!r}")
        state = self._state
        t = self._tensor_state(tensor)
        index_catalog.check_name(name, state.indexes)
        definition = index_catalog.define(t, kind, params)
        ref = index_catalog.build(self._store, self._reader, t, name, kind, definition)
        self._apply(f"create index {name!r}", lambda s: s.with_indexes({**s.indexes, name: ref}),
                    _index_footprint(name, tensor))

    @_serialized
    def rebuild_index(self, name: str) -> None:
        """Build index ``name`` again over the rows as they are now (fresh rows folded in, deleted ones gone)."""
        self._refuse_in_batch(f"rebuild index {name!r}")
        old = self._index_ref(name)
        t = self._tensor_state(old.tensor)
        definition = index_catalog.define(t, old.kind, _build_params(old))
        ref = index_catalog.build(self._store, self._reader, t, name, old.kind, definition)
        self._apply(f"rebuild index {name!r}", lambda s: s.with_indexes({**s.indexes, name: ref}),
                    _index_footprint(name, old.tensor))

    @_serialized
    def drop_index(self, name: str) -> None:
        """Remove index ``name`` from this version (committed versions keep theirs)."""
        self._refuse_in_batch(f"drop index {name!r}")
        self._index_ref(name)
        self._apply(f"drop index {name!r}",
                    lambda s: s.with_indexes({k: v for k, v in s.indexes.items() if k != name}),
                    Footprint(indexes=frozenset({name})))

    def _index_ref(self, name: str) -> mf.IndexRef:
        ref = self._state.indexes.get(name)
        if ref is None:
            raise IndexNotFoundError(f"no index named {name!r}; indexes are {sorted(self._state.indexes)}")
        return ref

    def _refuse_in_batch(self, operation: str) -> None:
        self._as_writable(operation)
        if self._batch is not None:
            # A build reads a whole tensor and takes long: it must not sit inside another write's batch.
            raise VersionError(f"{operation} inside a 'with ds:' block is not allowed; do it after the block")

    # -- maintenance ----------------------------------------------------------------------------
    def verify(self):
        """Check every file's checksum and structure; returns a report listing every problem."""
        return maintenance.verify(self._store)

    @_serialized
    def vacuum(self, grace_seconds: float = 3600.0) -> int:
        """Remove files no version uses (older than ``grace_seconds``); returns how many."""
        self._as_writable("vacuum")
        if self._batch is not None:
            # The batch's chunks are referenced by no published version yet: vacuum would delete them.
            raise VersionError("vacuum inside a 'with ds:' block is not allowed; vacuum after the block")
        return maintenance.vacuum(self._store, grace_seconds)
