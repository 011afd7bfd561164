"""Streaming top-k against a full sort of the same keys."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from query_lang.ordering import TopK, sort_order

_keys = st.lists(
    st.one_of(st.sampled_from([0.0, 1.0, -1.0, 0.5, np.nan, np.inf, -np.inf]),
              st.floats(-10, 10, allow_nan=False)),
    min_size=0, max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(batches=st.lists(_keys, min_size=1, max_size=8), k=st.integers(1, 12), desc=st.booleans(),
       buffer_rows=st.sampled_from([1, 3, 4096]))
def test_topk_equals_the_head_of_a_full_sort(batches, k, desc, buffer_rows):
    topk = TopK(k, [desc])
    topk.BUFFER_ROWS = buffer_rows  # small buffers exercise merging and the bar on every batch
    start = 0
    for keys in batches:
        rows = np.arange(start, start + len(keys), dtype=np.int64)
        topk.push(rows, [np.asarray(keys, dtype=np.float64)])
        start += len(keys)
    all_keys = np.asarray([x for b in batches for x in b], dtype=np.float64)
    all_rows = np.arange(len(all_keys), dtype=np.int64)
    want = sort_order([all_keys], [desc], all_rows)[:k]
    rows, keys = topk.result()
    assert rows.tolist() == want.tolist()
    if len(want):
        np.testing.assert_array_equal(keys[0], all_keys[want])


def test_a_batch_below_the_kth_best_is_dropped_on_arrival():
    topk = TopK(2, [True])
    topk.push(np.arange(5000), [np.linspace(0.0, 0.9, 5000)])  # over BUFFER_ROWS: merged, bar set
    assert topk._pending_rows == 0
    topk.push(np.arange(5000, 5004), [np.array([0.3, 0.05, np.nan, -np.inf])])
    assert topk._pending_rows == 0  # nothing could enter, so nothing was buffered
    topk.push(np.arange(5004, 5006), [np.array([0.9, 0.2])])  # a tie with the best enters
    assert topk._pending_rows == 1
    rows, keys = topk.result()
    assert rows.tolist() == [4999, 5004] and keys[0].tolist() == [0.9, 0.9]
