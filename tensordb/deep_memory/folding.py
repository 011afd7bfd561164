"""A bounded cache of embedding blocks with the Deep Memory model folded in.

A folded copy (:meth:`~.model.DeepMemoryModel.fold_block`) scores with one product
against the normalised query, exactly like cosine search; a block without a copy
pays a query transform and a sparse memory term instead. The copies are derived
data: they are keyed by the trained job and the identities of the block's
``embedding`` and ``id`` data, so a changed row, a new commit or a new model
simply misses.

The cache resists scans larger than itself: to make room it evicts only blocks the
current query has not used, so a corpus bigger than the budget keeps a stable set of
folded blocks (the rest go the sparse way) instead of refolding every block on every
query.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Container, Hashable

import numpy as np

#: Heap the folded copies may use, shared by all datasets of the process. Small
#: corpora fit whole, which is where the per-query transform would weigh most; in a
#: large corpus that transform is a sliver of the scan.
FOLDED_CACHE_BYTES = 128 << 20


class FoldedBlocks:
    """LRU of folded blocks, bounded in bytes, that never evicts what the running query uses."""

    def __init__(self, max_bytes: int = FOLDED_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._blocks: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get_or_fold(
        self, key: Hashable, nbytes: int, fold: Callable[[], np.ndarray], in_use: Container[Hashable]
    ) -> np.ndarray | None:
        """The cached block for ``key``, or ``fold()`` cached when it fits, else ``None``.

        ``nbytes`` is the size ``fold()`` will return; ``in_use`` holds the keys the
        current query has already used, which are not evicted to make room.
        """
        with self._lock:
            block = self._blocks.get(key)
            if block is not None:
                self._blocks.move_to_end(key)
                return block
            if not self._make_room(nbytes, in_use):
                return None
        block = fold()
        with self._lock:
            if key not in self._blocks and self._make_room(block.nbytes, in_use):
                self._blocks[key] = block
                self._bytes += block.nbytes
        return block

    def _make_room(self, nbytes: int, in_use: Container[Hashable]) -> bool:
        if nbytes > self.max_bytes:
            return False
        while self._bytes + nbytes > self.max_bytes:
            oldest = next(iter(self._blocks))
            if oldest in in_use:
                return False
            self._bytes -= self._blocks.pop(oldest).nbytes
        return True

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._blocks)

    def clear(self) -> None:
        with self._lock:
            self._blocks.clear()
            self._bytes = 0


#: Shared by every scan of the process.
FOLDED_BLOCKS = FoldedBlocks()
