"""Memory-mapped chunks hold file descriptors: handles free theirs when dropped, and a cache holds a bounded number."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

import tensordb
from tensordb.core.chunk_io import ChunkReader
from tensordb.storage import LocalStore

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors through /proc")

CHUNKS = 120


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def small_chunks(tmp_path) -> str:
    path = str(tmp_path / "ds")
    ds = tensordb.empty(path)
    ds.create_tensor("e", htype="embedding", max_chunk_size=1024)  # ~30 rows a chunk
    for _ in range(CHUNKS // 4):
        ds.extend({"e": np.ones((120, 8), np.float32)})
    ds.close()
    return path


def _read_every_row(ds) -> None:
    for row in range(0, len(ds), 7):
        ds.e[row].numpy()


def test_dropped_handles_release_their_descriptors_without_waiting_for_gc(small_chunks):
    gc.disable()  # a handle must be freed by reference counting alone
    try:
        before = _open_descriptors()
        for _ in range(10):
            _read_every_row(tensordb.load(small_chunks, read_only=True))
        grown = _open_descriptors() - before
    finally:
        gc.enable()
    assert grown <= 5, f"{grown} descriptors still open after dropping every handle"


def test_a_reader_caches_a_bounded_number_of_mapped_chunks(small_chunks):
    tensor_state = tensordb.load(small_chunks, read_only=True)._tensor_state("e")
    assert len(tensor_state.chunk_keys) >= 100
    reader = ChunkReader(LocalStore(small_chunks), cache_chunks=16)
    before = _open_descriptors()
    for key in tensor_state.chunk_keys:
        reader.chunk(tensor_state, key)
    assert _open_descriptors() - before <= 16 + 2
