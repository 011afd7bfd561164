"""VectorStore.upsert: a replace of existing ids is one atomic write, in place; a failed one changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from tensordb import VectorStore
from tensordb.errors import ReadOnlyError, SampleError

DIM = 8


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    v[0] = abs(v[0]) + 0.5
    return v


@pytest.fixture
def store(vs_path) -> VectorStore:
    vs = VectorStore(vs_path, overwrite=True)
    vs.add(text=[f"t{i}" for i in range(5)], metadata=[{"i": i} for i in range(5)],
           embedding=np.stack([vec(i) for i in range(5)]), id=[f"d{i}" for i in range(5)])
    return vs


def snapshot(vs: VectorStore) -> list[tuple]:
    ds = vs.dataset
    return list(zip(ds.id.numpy(aslist=True), ds.text.numpy(aslist=True), ds.metadata.numpy(aslist=True),
                    [e.tobytes() for e in ds.embedding.numpy()], strict=True))


def test_upsert_replaces_existing_ids_in_place_and_appends_new_ones(store: VectorStore) -> None:
    ids = store.upsert(text=["new1", "new9", "new3"], metadata=[{"v": 1}, {"v": 9}, {"v": 3}],
                       embedding=np.stack([vec(101), vec(109), vec(103)]), id=["d1", "d9", "d3"])
    assert ids == ["d1", "d9", "d3"]
    assert store.dataset.id.numpy(aslist=True) == ["d0", "d1", "d2", "d3", "d4", "d9"]
    assert store.dataset.text.numpy(aslist=True) == ["t0", "new1", "t2", "new3", "t4", "new9"]
    assert store.dataset.metadata.numpy(aslist=True)[1] == {"v": 1}
    np.testing.assert_array_equal(store.dataset.embedding.numpy()[3], vec(103))
    np.testing.assert_array_equal(store.dataset.embedding.numpy()[0], vec(0))
    assert store.search(embedding=vec(109), k=1)["id"] == ["d9"]
    assert store.dataset.verify().ok


def test_upsert_embeds_text_when_no_embedding_given(store: VectorStore) -> None:
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.ones((len(texts), DIM), dtype=np.float32)

    store.upsert(text=["again"], id=["d2"], embedding_function=embed)
    assert calls == [["again"]]
    assert store.dataset.text.numpy(aslist=True)[2] == "again"
    np.testing.assert_array_equal(store.dataset.embedding.numpy()[2], np.ones(DIM))


def test_upsert_needs_ids(store: VectorStore) -> None:
    before = snapshot(store)
    with pytest.raises(SampleError, match="upsert: give id"):
        store.upsert(text=["x"], embedding=[vec(1)])
    assert snapshot(store) == before


BAD = {
    "non-JSON metadata": dict(metadata=[{"v": 1}, {"bad": object()}]),
    "duplicate ids in the call": dict(id=["d1", "d1"]),
    "NaN embedding": dict(embedding=[vec(1), np.full(DIM, np.nan, dtype=np.float32)]),
    "wrong dimension": dict(embedding=[vec(1)[:4], vec(2)[:4]]),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_failed_upsert_leaves_the_old_documents(store: VectorStore, kind: str) -> None:
    before = snapshot(store)
    args = dict(text=["r1", "r2"], metadata=[{"v": 1}, {"v": 2}], embedding=[vec(201), vec(202)], id=["d1", "d2"])
    args.update(BAD[kind])
    with pytest.raises(SampleError):
        store.upsert(**args)
    assert snapshot(store) == before
    assert store.dataset.verify().ok
    # the store still works for the next write
    store.upsert(text=["ok"], embedding=[vec(300)], id=["d1"])
    assert store.dataset.text.numpy(aslist=True)[1] == "ok"


def test_failed_upsert_of_new_and_existing_ids_adds_nothing(store: VectorStore) -> None:
    before = snapshot(store)
    with pytest.raises(SampleError):
        store.upsert(text=["a", "b"], metadata=[{}, {"x": {1, 2}}], embedding=[vec(1), vec(2)], id=["d0", "fresh"])
    assert snapshot(store) == before


@pytest.mark.parametrize("vs_path", ["local", "s3"], indirect=True)
def test_upsert_on_a_read_only_store_is_refused(vs_path) -> None:
    writer = VectorStore(vs_path)
    writer.add(text=["a"], embedding=[vec(1)], id=["a"])
    writer.close()
    reader = VectorStore(vs_path, read_only=True)
    with pytest.raises(ReadOnlyError):
        reader.upsert(text=["b"], embedding=[vec(2)], id=["a"])
    assert reader.dataset.text.numpy(aslist=True) == ["a"]
