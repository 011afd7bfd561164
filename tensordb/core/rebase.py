"""Rebasing a write onto a branch head that another writer moved: the optimistic half of lock-free commits.

On stores without a writer lock (object storage), a writer computes its new snapshot
from the head it last saw, then publishes it with a compare-and-swap of ``refs``. When
another writer published first, the change is replayed on the new head, provided that
nothing it depends on moved. What a change depends on is its :class:`Footprint`:

- the rows it rewrites or deletes must still be the same rows, held at the same place
  of the same chunk (so a concurrent write to other rows of the same chunk conflicts:
  conflicts are detected chunk by chunk, as Delta Lake does file by file);
- the tensors it creates must still be absent, and the tensors it deletes unchanged;
- the indexes it sets or drops must be as it saw them;
- an append of whole rows needs the same set of tensors, so every tensor stays equally long.

Appends depend on none of this and always rebase: they land after the other writer's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..format import manifest as mf

Change = Callable[[mf.DatasetState], mf.DatasetState]


@dataclass(frozen=True)
class Footprint:
    """What a change read of the snapshot it was computed from, and so what must not have moved."""

    rows: Mapping[str, np.ndarray] = field(default_factory=dict)  # tensor -> rows rewritten or deleted
    tensors: frozenset[str] = frozenset()  # tensors created (must stay absent) or deleted (must stay unchanged)
    indexes: frozenset[str] = frozenset()  # indexes set or dropped
    same_tensor_set: bool = False  # whole-row appends: a tensor added meanwhile would be left short
    shifts_rows: bool = False  # deletes rows: the rows of later writes in its batch are numbered after it

    @classmethod
    def on_rows(cls, rows: Mapping[str, np.ndarray], **others: object) -> Footprint:
        return cls(rows={name: np.asarray(r, dtype=np.int64) for name, r in rows.items()}, **others)


#: The footprint of a change that only adds rows to existing tensors: it always rebases.
APPEND = Footprint()


@dataclass(frozen=True)
class Write:
    """One public write, kept so it can be replayed on another head: what it is called, does and depends on."""

    operation: str
    change: Change
    footprint: Footprint


def conflict(write: Write, base: mf.DatasetState, head: mf.DatasetState) -> str | None:
    """Why ``write``, computed on ``base``, cannot be replayed on ``head``; ``None`` when it can."""
    footprint = write.footprint
    if footprint.same_tensor_set and set(base.tensors) != set(head.tensors):
        return f"the tensors changed from {sorted(base.tensors)} to {sorted(head.tensors)}"
    for name in sorted(footprint.tensors):
        if base.tensors.get(name) != head.tensors.get(name):
            return f"tensor {name!r} was created, deleted or written"
    for name in sorted(footprint.indexes):
        if base.indexes.get(name) != head.indexes.get(name):
            return f"index {name!r} was created, rebuilt or dropped"
    for name, rows in sorted(footprint.rows.items()):
        if name not in head.tensors or name not in base.tensors:
            return f"tensor {name!r} was created or deleted"
        if not _same_rows(base.tensors[name], head.tensors[name], rows):
            return f"rows of tensor {name!r} that it writes (or rows before them) were written or deleted"
    return None


def _same_rows(base: mf.TensorState, head: mf.TensorState, rows: np.ndarray) -> bool:
    """Whether every row of ``rows`` is where it was: old rows in the same chunk at the same offset,
    rows this handle added (past ``base``'s end) still numbered the same, because no rows came before them."""
    old, added = rows[rows < base.nrows], rows[rows >= base.nrows]
    if len(added) and head.nrows != base.nrows:
        return False
    if not len(old):
        return True
    if int(old.max()) >= head.nrows:
        return False
    return bool(np.array_equal(_placement(base, old), _placement(head, old)))


def _placement(state: mf.TensorState, rows: np.ndarray) -> np.ndarray:
    """Each row's chunk (as the index of its key among the keys of both states) and offset in it."""
    ends = np.cumsum(state.chunk_rows, dtype=np.int64)
    chunk = np.searchsorted(ends, rows, side="right")
    starts = ends[chunk] - np.asarray(state.chunk_rows, dtype=np.int64)[chunk]
    keys = np.asarray(state.chunk_keys, dtype=object)[chunk]
    return np.stack([keys, rows - starts]) if len(rows) else np.empty((2, 0), dtype=object)


def replay(writes: list[Write], base: mf.DatasetState, head: mf.DatasetState) -> tuple[mf.DatasetState, str | None]:
    """``writes`` applied to ``head`` in order; or ``head`` and the reason of the first conflict."""
    state, shifted = head, False
    for write in writes:
        reason = conflict(write, base, head)
        if reason is None and shifted and write.footprint.rows:
            reason = "its rows are numbered after rows this batch deleted, and rows moved meanwhile"
        if reason is not None:
            return head, f"{write.operation}: {reason}"
        state = write.change(state)
        shifted = shifted or write.footprint.shifts_rows
    return state, None
