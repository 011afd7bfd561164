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

from collections.abc import Callable, Container, Hashable

import numpy as np

from query_lang.cache import BoundedCache

#: Heap the folded copies may use, shared by all datasets of the process. Small
#: corpora fit whole, which is where the per-query transform would weigh most; in a
#: large corpus that transform is a sliver of the scan.
FOLDED_CACHE_BYTES = 128 << 20


class FoldedBlocks:
    """LRU of folded blocks, bounded in bytes, that never evicts what the running query uses.

    A thin face over query_lang's shared :class:`~query_lang.cache.BoundedCache`, whose
    eviction guard keeps the blocks the running query has used.
    """

    def __init__(self, max_bytes: int = FOLDED_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.cache: BoundedCache[Hashable, np.ndarray] = BoundedCache(max_bytes)

    def get_or_fold(
        self, key: Hashable, nbytes: int, fold: Callable[[], np.ndarray], in_use: Container[Hashable]
    ) -> np.ndarray | None:
        """The cached block for ``key``, or ``fold()`` cached when it fits, else ``None``.

        ``nbytes`` is the size ``fold()`` will return; ``in_use`` holds the keys the
        current query has already used, which are not evicted to make room.
        """
        block = self.cache.get(key)
        if block is not None:
            return block
        keep = in_use.__contains__
        if not self.cache.admits(nbytes, keep):
            return None  # not worth folding a block that cannot be kept
        return self.cache.get_or_compute(key, fold, _nbytes, keep)

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return self.cache.used_bytes

    def __len__(self) -> int:
        return len(self.cache)

    def clear(self) -> None:
        self.cache.clear()


def _nbytes(block: np.ndarray) -> int:
    return block.nbytes


#: Shared by every scan of the process.
FOLDED_BLOCKS = FoldedBlocks()
