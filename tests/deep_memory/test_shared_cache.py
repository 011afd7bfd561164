"""Deep Memory's process-wide caches sit on query_lang's one BoundedCache, with their old budgets."""

from __future__ import annotations

import threading

import numpy as np

from query_lang.cache import BoundedCache
from tensordb.deep_memory import tql
from tensordb.deep_memory.folding import FOLDED_BLOCKS, FOLDED_CACHE_BYTES, FoldedBlocks


def test_folded_blocks_and_memory_rows_use_the_shared_cache_with_their_budgets() -> None:
    assert isinstance(FOLDED_BLOCKS.cache, BoundedCache)
    assert FOLDED_BLOCKS.cache.max_bytes == FOLDED_CACHE_BYTES == 128 << 20
    assert isinstance(tql.MEMORY_ROWS, BoundedCache)
    assert tql.MEMORY_ROWS.max_entries == tql.MEMORY_ROWS_ENTRIES == 1024


def test_folded_blocks_stay_within_budget_and_exact_under_threads() -> None:
    cache = FoldedBlocks(max_bytes=10 * 400)

    def work(offset: int) -> None:
        in_use: set = set()
        for i in range(200):
            key = (offset + i) % 37
            block = cache.get_or_fold(key, 400, lambda: np.zeros(100, np.float32), in_use)
            if block is not None:
                assert block.nbytes == 400
                in_use.add(key)
            if i % 10 == 0:
                in_use.clear()

    threads = [threading.Thread(target=work, args=(n * 5,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.nbytes == 400 * len(cache) <= cache.max_bytes
