"""Which rows of a tensor an index covers, mapped onto the tensor as it is now.

An index covers the rows of the chunks it was built from; index entry ``i`` is the
``i``-th of those rows. Chunks are immutable, so a chunk the tensor still lists still
holds the same rows, though perhaps at other positions (an earlier chunk may have
been rewritten). Rows of a chunk the tensor no longer lists were deleted or updated
since the build; rows of chunks the index does not know are fresh.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Coverage:
    """The mapping between index entries and the current row positions of one tensor."""

    def __init__(
        self,
        covered_keys: Sequence[str],
        covered_rows: Sequence[int],
        current_keys: Sequence[str],
        current_rows: Sequence[int],
    ) -> None:
        self.entry_starts = _starts(covered_rows)
        current_starts = _starts(current_rows)
        start_of = {key: int(start) for key, start in zip(current_keys, current_starts[:-1])}
        #: Current position of each covered chunk's first row, or -1 for a chunk that is gone.
        self.chunk_positions = np.array([start_of.get(k, -1) for k in covered_keys], dtype=np.int64)
        known = set(covered_keys)
        fresh = [
            np.arange(start, start + rows, dtype=np.int64)
            for key, start, rows in zip(current_keys, current_starts[:-1].tolist(), current_rows)
            if key not in known
        ]
        #: Current positions of the rows the index does not hold, ascending.
        self.fresh = np.concatenate(fresh) if fresh else np.empty(0, dtype=np.int64)
        self.entries = int(self.entry_starts[-1])
        self.deleted = int(sum(r for r, p in zip(covered_rows, self.chunk_positions) if p < 0))
        self._current_starts = current_starts
        #: Index entry i is row i (nothing rewritten; rows may have been appended after them).
        self.identity = list(covered_keys) == list(current_keys)[: len(covered_keys)]
        entry_start_of = {key: int(s) for key, s in zip(covered_keys, self.entry_starts[:-1])}
        #: The index entry of each current chunk's first row, or -1 for a fresh chunk.
        self._chunk_entries = np.array([entry_start_of.get(key, -1) for key in current_keys], dtype=np.int64)

    def positions_of(self, entries: np.ndarray) -> np.ndarray:
        """Current positions of index entries (any shape); -1 for entries that are gone or negative."""
        entries = np.asarray(entries, dtype=np.int64)
        valid = (entries >= 0) & (entries < self.entries)
        safe = np.where(valid, entries, 0)
        chunk = np.searchsorted(self.entry_starts, safe, side="right") - 1
        base = self.chunk_positions[chunk]
        out = base + (safe - self.entry_starts[chunk])
        return np.where(valid & (base >= 0), out, -1)

    def entry_mask(self, rows: np.ndarray) -> np.ndarray:
        """The index entries of the rows a bool mask over current positions selects (as a mask over entries)."""
        if self.identity:
            return rows[: self.entries] if len(rows) >= self.entries else np.pad(rows, (0, self.entries - len(rows)))
        entries = self.entries_of(np.flatnonzero(rows))
        mask = np.zeros(self.entries, dtype=bool)
        mask[entries[entries >= 0]] = True
        return mask

    def entries_of(self, positions: np.ndarray) -> np.ndarray:
        """Index entries of current positions (1-D); -1 for fresh rows."""
        positions = np.asarray(positions, dtype=np.int64)
        chunk = np.searchsorted(self._current_starts, positions, side="right") - 1
        base = self._chunk_entries[chunk]
        return np.where(base >= 0, base + (positions - self._current_starts[chunk]), -1)

    def alive(self) -> np.ndarray | None:
        """A mask over index entries of those still present, or None when all are."""
        if not self.deleted:
            return None
        mask = np.ones(self.entries, dtype=bool)
        for chunk, position in enumerate(self.chunk_positions.tolist()):
            if position < 0:
                mask[self.entry_starts[chunk] : self.entry_starts[chunk + 1]] = False
        return mask

    def spread(self, per_entry: np.ndarray, fill: int) -> np.ndarray:
        """``per_entry`` values laid out over current positions; ``fill`` for fresh rows."""
        total = int(self._current_starts[-1])
        out = np.full(total, fill, dtype=per_entry.dtype)
        for chunk, position in enumerate(self.chunk_positions.tolist()):
            if position >= 0:
                lo, hi = self.entry_starts[chunk], self.entry_starts[chunk + 1]
                out[position : position + hi - lo] = per_entry[lo:hi]
        return out


def _starts(rows: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.asarray(rows, dtype=np.int64))]).astype(np.int64)
