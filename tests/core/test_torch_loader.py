"""ds.pytorch(): streaming DataLoader over datasets and views."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tensordb
from tensordb.core.torch_loader import plan_blocks, worker_share

from .helpers import mem_path

N = 3000


def _fill(path: str, n: int = N):
    ds = tensordb.empty(path)
    # Small chunks of different sizes per tensor, so blocks cross chunk boundaries that do not line up.
    ds.create_tensor("x", htype="generic", dtype="int64", max_chunk_size=2048)
    ds.create_tensor("emb", htype="embedding", dtype="float32", max_chunk_size=8192)
    ds.create_tensor("text", htype="text", max_chunk_size=4096)
    ds.create_tensor("meta", htype="json", max_chunk_size=4096)
    ds.create_tensor("ragged", htype="generic", dtype="float32", max_chunk_size=4096)
    ds.create_tensor("label", htype="class_label", class_names=["a", "b", "c"])
    for start in range(0, n, 1000):
        rows = range(start, min(n, start + 1000))
        ds.extend({
            "x": np.array(rows, dtype=np.int64),
            "emb": np.array([[i, i + 0.5, -i, 1.0] for i in rows], dtype=np.float32),
            "text": [f"row {i} é" for i in rows],
            "meta": [{"i": i, "even": i % 2 == 0} if i % 5 else None for i in rows],
            "ragged": [np.full(i % 3, i, dtype=np.float32) for i in rows],
            "label": [i % 3 for i in rows],
        })
    return ds


@pytest.fixture(scope="module")
def local_ds(tmp_path_factory):
    return _fill(str(tmp_path_factory.mktemp("torch") / "ds"))


def _ids(loader) -> list[int]:
    out = []
    for batch in loader:
        ids = batch["x"].tolist()
        # every column belongs to the same rows
        assert batch["text"] == [f"row {i} é" for i in ids]
        assert batch["emb"][:, 0].tolist() == [float(i) for i in ids]
        assert batch["meta"] == [{"i": i, "even": i % 2 == 0} if i % 5 else None for i in ids]
        assert batch["label"].reshape(-1).tolist() == [i % 3 for i in ids]
        out += ids
    return out


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_row_once_per_epoch(local_ds, workers, shuffle):
    loader = local_ds.pytorch(batch_size=128, shuffle=shuffle, num_workers=workers, shuffle_buffer=500, seed=1)
    assert isinstance(loader, torch.utils.data.DataLoader)
    assert len(loader) == -(-N // 128)
    for _epoch in range(2 if workers == 0 else 1):
        ids = _ids(loader)
        assert sorted(ids) == list(range(N))
        if not shuffle and workers == 0:
            assert ids == list(range(N))


def test_batches_are_full_except_last(local_ds):
    sizes = [len(b["x"]) for b in local_ds.pytorch(batch_size=100, num_workers=2, shuffle=True, seed=3)]
    assert sizes == [100] * 30
    sizes = [len(b["x"]) for b in local_ds.pytorch(batch_size=128, num_workers=2)]
    assert sorted(sizes) == [56] + [128] * 23


def test_shuffle_changes_order_and_seed_repeats(local_ds):
    def order(**kw):
        return [i for b in local_ds.pytorch(tensors=["x"], batch_size=64, shuffle=True, **kw) for i in b["x"].tolist()]

    a, b = order(seed=7), order(seed=7)
    assert a == b and a != list(range(N)) and sorted(a) == list(range(N))
    assert order(seed=8) != a
    # rows move across chunks, not only within them
    first = np.array(a[:500])
    assert first.max() - first.min() > 1000
    loader = local_ds.pytorch(tensors="x", batch_size=64, shuffle=True, seed=7)
    epoch1 = [i for b in loader for i in b["x"].tolist()]
    epoch2 = [i for b in loader for i in b["x"].tolist()]
    assert epoch1 != epoch2 and sorted(epoch1) == sorted(epoch2)


def test_sample_types_and_default_collate(local_ds):
    batch = next(iter(local_ds.pytorch(batch_size=4)))
    assert set(batch) == {"x", "emb", "text", "meta", "ragged", "label"}
    assert batch["x"].dtype == torch.int64 and batch["x"].tolist() == [0, 1, 2, 3]
    assert batch["emb"].shape == (4, 4) and batch["emb"].dtype == torch.float32
    assert batch["text"] == ["row 0 é", "row 1 é", "row 2 é", "row 3 é"]
    assert batch["meta"] == [None, {"i": 1, "even": False}, {"i": 2, "even": True}, {"i": 3, "even": False}]
    assert isinstance(batch["ragged"], list) and [r.tolist() for r in batch["ragged"]] == [[], [1.0], [2.0, 2.0], []]
    assert batch["label"].dtype == torch.int64 and batch["label"].shape == (4, 1)
    batch["emb"][0, 0] = 99  # batches own their memory (chunks are read-only)
    assert next(iter(local_ds.pytorch(tensors=["emb"], batch_size=4)))["emb"][0, 0] == 0


def test_batch_size_none_yields_samples(local_ds):
    samples = list(local_ds[:5].pytorch(tensors=["x", "text"], batch_size=None))
    assert [s["x"].item() for s in samples] == [0, 1, 2, 3, 4]
    assert samples[2]["text"] == "row 2 é" and samples[0]["x"].shape == ()


def test_drop_last(local_ds):
    loader = local_ds.pytorch(tensors=["x"], batch_size=128, drop_last=True)
    sizes = [len(b["x"]) for b in loader]
    assert len(loader) == N // 128 == len(sizes) and set(sizes) == {128}
    sizes = [len(b["x"]) for b in local_ds.pytorch(tensors=["x"], batch_size=128, drop_last=True, shuffle=True)]
    assert sizes == [128] * (N // 128)


def test_transform_and_collate_fn(local_ds):
    def transform(sample):
        return {"y": sample["x"] * 2, "n": len(sample["text"])}

    batch = next(iter(local_ds.pytorch(batch_size=8, transform=transform)))
    assert batch["y"].tolist() == [2 * i for i in range(8)] and batch["n"] == [len(f"row {i} é") for i in range(8)]
    seen = []

    def collate(samples):
        seen.append(len(samples))
        return [s["text"] for s in samples]

    batches = list(local_ds.pytorch(tensors=["text"], batch_size=1000, collate_fn=collate))
    assert seen == [1000, 1000, 1000] and batches[1][0] == "row 1000 é"
    # a transform returning tuples goes through torch's default collate
    batch = next(iter(local_ds.pytorch(batch_size=3, transform=lambda s: (s["emb"], s["x"]))))
    assert batch[0].shape == (3, 4) and batch[1].tolist() == [0, 1, 2]


@pytest.mark.parametrize("workers", [0, 2])
def test_views(local_ds, workers):
    view = local_ds[500:2100:3]
    expected = list(range(500, 2100, 3))
    ids = _ids(view.pytorch(batch_size=50, num_workers=workers))
    assert (ids if workers == 0 else sorted(ids)) == expected
    ids = _ids(view.pytorch(batch_size=50, num_workers=workers, shuffle=True, shuffle_buffer=100))
    assert sorted(ids) == expected and ids != expected
    # an unsorted view keeps its order when not shuffled
    rows = np.random.default_rng(0).permutation(N)[:700]
    assert _ids(local_ds[rows.tolist()].pytorch(batch_size=64)) == rows.tolist()


def test_memory_dataset_and_worker_error():
    ds = _fill(mem_path(), n=500)
    assert sorted(_ids(ds.pytorch(batch_size=64, shuffle=True))) == list(range(500))
    with pytest.raises(ValueError, match="num_workers=0"):
        ds.pytorch(num_workers=2)


READ_ON_S3 = """
import os, sys, uuid
sys.path.append("tests")
import numpy as np
import tensordb
from s3_server import MotoS3

workers, n = int(sys.argv[1]), 1500
server = MotoS3().start()  # in this process: the fork copies its busy connections and the client's runtime
os.environ.update(server.env, TENSORDB_CACHE_DIR=sys.argv[2])
ds = tensordb.empty(f"s3://{server.bucket}/{uuid.uuid4().hex}")
ds.create_tensor("x", dtype="int64", max_chunk_size=2048)
ds.extend({"x": np.arange(n)})
timeout = {"timeout": 10} if workers else {}  # a hung worker fails the read instead of waiting forever
loader = ds.pytorch(tensors=["x"], batch_size=64, shuffle=True, num_workers=workers, shuffle_buffer=500, **timeout)
ids = sorted(i for batch in loader for i in batch["x"].tolist())
assert ids == list(range(n)), f"{len(ids)} rows, {len(set(ids))} distinct, expected {n}"
print("ok")
server.stop()
"""


@pytest.mark.parametrize("workers", [0, 2])
def test_an_s3_dataset_streams_every_row_once(tmp_path, workers):
    """Workers of a process that has used S3 read every row: a forked worker must not use the parent's S3 client.

    It runs in a fresh interpreter with its own moto server and process group: a worker that hangs, or a
    client left broken by a fork, must not stall this process and the tests after it.
    """
    child = subprocess.Popen([sys.executable, "-c", READ_ON_S3, str(workers), str(tmp_path / "cache")],
                             cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = child.communicate(timeout=90)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert child.returncode == 0 and "ok" in out.splitlines(), out[-2000:]


def test_snapshot_isolation_and_pickling(path):
    ds = _fill(path, n=300)
    loader = ds.pytorch(tensors=["x"], batch_size=1000)
    ds.extend({"x": [300], "emb": [[0, 0, 0, 1.0]], "text": ["t"], "meta": [None], "ragged": [[1.0]], "label": [0]})
    assert next(iter(loader))["x"].tolist() == list(range(300))  # the loader reads the snapshot it was made from
    clone = pickle.loads(pickle.dumps(loader.dataset))
    assert clone._reader is None and next(iter(clone))["x"].tolist() == list(range(300))


def test_errors(local_ds):
    with pytest.raises(tensordb.TensorNotFoundError):
        local_ds.pytorch(tensors=["nope"])
    with pytest.raises(ValueError, match="batch_size"):
        local_ds.pytorch(batch_size=0)


def test_plan_blocks_and_shares():
    from tensordb.format.manifest import TensorMeta, TensorState

    meta = TensorMeta("x", "generic", "int64", (), None, 1024)
    a = TensorState(meta, tuple("chunks/a" for _ in range(4)), (5000, 5000, 5000, 100), (1, 1, 1, 1))
    b = TensorState(meta, tuple("chunks/b" for _ in range(2)), (7000, 8100), (1, 1))
    blocks = plan_blocks([a, b], None, 15100)
    assert blocks[0][0] == 0 and blocks[-1][1] == 15100
    assert all(x[1] == y[0] for x, y in zip(blocks, blocks[1:]))
    assert {5000, 7000, 10000} <= {hi for _, hi in blocks}
    for workers in (1, 2, 3, 5):
        shares = [worker_share(blocks, 15100, 256, w, workers) for w in range(workers)]
        covered = sorted(r for share in shares for lo, hi in share for r in range(lo, hi))
        assert covered == list(range(15100))
        sizes = [sum(hi - lo for lo, hi in share) for share in shares]
        assert all(s % 256 == 0 for s in sizes[:-1])
