"""Ray Data: ``ds.ray()`` blocks against ``to_arrow``, and ``tensordb.from_ray`` (parallel writes, one commit)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensordb
from tensordb.core import ray_data
from tensordb.core.ray_data import BLOCK_CHUNKS
from tensordb.errors import SampleError

from .helpers import snapshot

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _filled(path: str, rows: int = 300, dim: int = 8, chunk_bytes: int = 1024, creds=None) -> tensordb.Dataset:
    """Embeddings in small chunks (``chunk_bytes``), with text, JSON, scalar and label tensors beside them."""
    ds = tensordb.empty(path, creds=creds)
    ds.create_tensor("embedding", htype="embedding", max_chunk_size=chunk_bytes)
    ds.create_tensor("text", htype="text")
    ds.create_tensor("meta", htype="json")
    ds.create_tensor("n", dtype="int64")
    ds.create_tensor("label", htype="class_label", class_names=["even", "odd"])
    rng = np.random.default_rng(rows)
    ds.extend({"embedding": rng.standard_normal((rows, dim)).astype(np.float32),
               "text": [f"row {i}" for i in range(rows)],
               "meta": [{"i": i, "tags": ["a"] * (i % 3)} for i in range(rows)],
               "n": np.arange(rows, dtype=np.int64),
               "label": np.arange(rows) % 2})
    return ds


def _blocks(rds) -> list[pa.Table]:
    import ray

    return ray.get(rds.to_arrow_refs())


def _joined(rds) -> pa.Table:
    return pa.concat_tables(_blocks(rds))


def _schemas(ds) -> dict[str, tuple]:
    """Each tensor's htype, dtype, row shape, dimension and class names (Arrow does not carry the chunk size)."""
    return {name: (m.htype, m.dtype and np.dtype(m.dtype).str, m.shape, m.dim, m.class_names)
            for name, m in ((n, t.meta) for n, t in ds._state.tensors.items())}


def _files(path: str, creds=None) -> list[str]:
    from tensordb.storage import open_store

    return open_store(path, creds).list()


# -- ds.ray() ----------------------------------------------------------------------------------------
def test_ray_blocks_are_to_arrow_cut_at_runs_of_whole_chunks(tmp_path):
    ds = _filled(str(tmp_path / "db"))
    chunk_rows = ds._state.tensors["embedding"].chunk_rows  # the widest tensor: 32 bytes a row, 32 rows a chunk
    rds = ds.ray()
    blocks = _blocks(rds)
    runs = [sum(chunk_rows[i:i + BLOCK_CHUNKS]) for i in range(0, len(chunk_rows), BLOCK_CHUNKS)]
    assert len(chunk_rows) == 10 and [b.num_rows for b in blocks] == runs == [256, 44]
    expected = ds.to_arrow()
    assert all(b.schema.equals(expected.schema, check_metadata=True) for b in blocks)
    assert pa.concat_tables(blocks).equals(expected)
    assert expected.schema.field("embedding").type == pa.list_(pa.float32(), 8)
    assert rds.schema().base_schema.equals(expected.schema)  # declared before any block is read


def test_ray_of_picked_tensors_of_a_view_and_of_an_empty_table(tmp_path):
    ds = _filled(str(tmp_path / "db"), rows=120)
    view = ds.query("SELECT * ORDER BY cosine_similarity(embedding, ARRAY[1,0,0,0,0,0,0,0]) DESC LIMIT 50")
    assert "score" in view.column_names()
    assert _joined(view.ray()).equals(view.to_arrow())  # the view's rows, in its order, with its score column
    picked = ds[[7, 3, 100, 3]]
    assert _joined(picked.ray(tensors=["text", "embedding"])).equals(picked.to_arrow(["text", "embedding"]))
    empty = ds[0:0].ray("embedding")
    assert _joined(empty).equals(ds[0:0].to_arrow("embedding"))
    with pytest.raises(tensordb.TensorNotFoundError, match="embeding"):
        ds.ray(["embeding"])


def test_ray_reads_the_snapshot_it_was_made_from(tmp_path):
    ds = _filled(str(tmp_path / "db"), rows=64)
    rds = ds.ray()
    before = ds.to_arrow()
    ds.extend({"embedding": np.ones((5, 8), np.float32), "text": ["x"] * 5, "meta": [{}] * 5, "n": [0] * 5,
               "label": [1] * 5})
    assert _joined(rds).equals(before)


def test_ray_blocks_come_from_one_snapshot_while_a_writer_commits(tmp_path, monkeypatch):
    ds = _filled(str(tmp_path / "db"), rows=64)
    before = ds.to_arrow()
    real = ray_data.snapshot_address

    def commit_first(table, purpose):  # another writer's rows land between cutting the blocks and addressing them
        ds.extend({"embedding": np.ones((40, 8), np.float32), "text": ["x"] * 40, "meta": [{}] * 40, "n": [0] * 40,
                   "label": [1] * 40})
        return real(table, purpose)

    monkeypatch.setattr(ray_data, "snapshot_address", commit_first)
    assert _joined(ds.ray()).equals(before)


# -- from_ray ----------------------------------------------------------------------------------------
def test_from_ray_round_trip_of_ds_ray_is_the_source_in_one_commit(tmp_path):
    source = _filled(str(tmp_path / "src"))
    target = tensordb.from_ray(source.ray(), str(tmp_path / "copy"))
    again = tensordb.load(str(tmp_path / "copy"), read_only=True)
    assert snapshot(again) == snapshot(source)
    assert _schemas(again) == _schemas(source)
    assert [c["message"] for c in again.log(show=False)] == ["from_ray: 300 rows"]
    assert not again.has_head_changes and target.commit_id == again.commit_id
    target.close()  # from_ray returns the dataset open for writing, as from_arrow does

    tensordb.from_ray(source[10:20].ray(), str(tmp_path / "copy"), message="ten more")  # appends, one commit
    again = tensordb.load(str(tmp_path / "copy"), read_only=True)
    assert len(again) == 310 and again.text[300:].numpy(aslist=True) == [f"row {i}" for i in range(10, 20)]
    assert [c["message"] for c in again.log(show=False)] == ["ten more", "from_ray: 300 rows"]


def test_from_ray_of_ray_items_and_arrow_tables_infers_tensors_as_from_arrow(tmp_path):
    import ray

    items = [{"vector": np.full(4, i, np.float32), "image": np.full((2, 3), i, np.uint8), "text": f"t{i}", "n": i}
             for i in range(30)]
    ds = tensordb.from_ray(ray.data.from_items(items), str(tmp_path / "items"))
    assert {n: t.htype for n, t in ds.tensors.items()} == {
        "vector": "embedding", "image": "generic", "text": "text", "n": "generic"}
    assert ds.vector.meta.dim == 4 and ds.image.shape == (30, 2, 3) and ds.image.dtype == np.uint8
    np.testing.assert_array_equal(ds.vector.numpy(), np.stack([r["vector"] for r in items]))
    np.testing.assert_array_equal(ds.image.numpy(), np.stack([r["image"] for r in items]))
    assert ds.text.numpy(aslist=True) == [r["text"] for r in items]

    table = pa.table({"emb": pa.FixedSizeListArray.from_arrays(pa.array(np.arange(40, dtype=np.float32)), 4),
                      "text": [f"r{i}" for i in range(10)]})
    from_arrow = tensordb.from_arrow(table, str(tmp_path / "local"), progress=False)
    from_ray = tensordb.from_ray(ray.data.from_arrow([table.slice(0, 4), table.slice(4)]), str(tmp_path / "ray"))
    assert snapshot(from_ray) == snapshot(from_arrow)
    assert from_ray.emb.meta == from_arrow.emb.meta


def _wrong_dtype_blocks(ds: tensordb.Dataset):
    """Two blocks of ``ds``'s rows as one Ray dataset: the second's ``n`` holds text where the first's holds numbers."""
    import ray

    good = ds.to_arrow().slice(0, 10)
    bad = good.set_column(good.schema.get_field_index("n"), "n", pa.array(["not a number"] * 10))
    return ray.data.from_arrow([good, bad])


def test_a_failing_block_leaves_an_existing_target_as_it_was_and_no_new_one(tmp_path):
    existing = _filled(str(tmp_path / "db"), rows=40)
    existing.commit("forty")
    existing.close()
    files = _files(str(tmp_path / "db"))
    failing_map = existing.ray().map_batches(  # a user's map that raises on the block holding row 0
        lambda t: t if t["n"][0].as_py() != 0 else int("block 0 fails"), batch_format="pyarrow")
    # Ray raises the map's error as its own UserCodeException; tensordb's names the block and the column.
    for rds, error, says in ((failing_map, Exception, "block 0 fails"),
                             (_wrong_dtype_blocks(existing), SampleError, "block 1 .*column 'n'")):
        with pytest.raises(error, match=says):
            tensordb.from_ray(rds, str(tmp_path / "db"))
        again = tensordb.load(str(tmp_path / "db"))
        assert len(again) == 40 and [c["message"] for c in again.log(show=False)] == ["forty"]
        assert not again.has_head_changes
        assert _files(str(tmp_path / "db")) == files  # nothing written, or what was written is deleted
        again.close()
        with pytest.raises(error, match=says):
            tensordb.from_ray(rds, str(tmp_path / "new"))
        assert not tensordb.exists(str(tmp_path / "new")) and not _files(str(tmp_path / "new"))


def test_blocks_whose_schemas_disagree_are_refused_after_writing_and_their_chunks_deleted(tmp_path):
    import ray

    four = pa.table({"emb": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(8, np.float32)), 4)})
    two = pa.table({"emb": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(8, np.float32)), 2)})
    with pytest.raises(SampleError, match="dimension"):
        tensordb.from_ray(ray.data.from_arrow([four, two]), str(tmp_path / "new"))
    assert not tensordb.exists(str(tmp_path / "new")) and not _files(str(tmp_path / "new"))

    existing = tensordb.from_ray(ray.data.from_arrow([four]), str(tmp_path / "db"))
    existing.close()
    files = _files(str(tmp_path / "db"))
    with pytest.raises(SampleError, match="dimension"):
        tensordb.from_ray(ray.data.from_arrow([four, two]), str(tmp_path / "db"))
    assert _files(str(tmp_path / "db")) == files
    with pytest.raises(SampleError, match="htype"):
        tensordb.from_ray(ray.data.from_arrow([pa.table({"emb": ["text"]})]), str(tmp_path / "db"))
    assert len(tensordb.load(str(tmp_path / "db"), read_only=True)) == 2


# -- object storage ----------------------------------------------------------------------------------
def test_ds_ray_and_from_ray_on_s3(s3_server, s3_url):
    creds = s3_server.creds  # workers do not see the variables the fixture set after ray.init
    source = _filled(s3_url, rows=100, creds=creds)
    rds = source.ray()
    assert rds.materialize().num_blocks() == math.ceil(len(source._state.tensors["embedding"].chunk_keys) / 8)
    assert _joined(rds).equals(source.to_arrow())
    tensordb.from_ray(rds, s3_url + "-copy", creds=creds)
    again = tensordb.load(s3_url + "-copy", read_only=True, creds=creds)
    assert snapshot(again) == snapshot(source) and len(again.log(show=False)) == 1


# -- property ----------------------------------------------------------------------------------------
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(1, 60), dim=st.integers(1, 6), chunk_rows=st.integers(1, 12), data=st.data())
def test_round_trip_through_ray_keeps_every_row(tmp_path_factory, rows, dim, chunk_rows, data):
    root = tmp_path_factory.mktemp("prop")
    ds = tensordb.empty(str(root / "src"))
    ds.create_tensor("embedding", htype="embedding", max_chunk_size=max(1024, chunk_rows * dim * 4))
    ds.create_tensor("text", htype="text")
    values = data.draw(st.lists(st.floats(-1e6, 1e6, width=32), min_size=rows * dim, max_size=rows * dim))
    texts = data.draw(st.lists(st.text(max_size=5), min_size=rows, max_size=rows))
    ds.extend({"embedding": np.asarray(values, np.float32).reshape(rows, dim), "text": texts})
    rds = ds.ray()
    assert _joined(rds).equals(ds.to_arrow())
    copy = tensordb.from_ray(rds, str(root / "copy"))
    assert snapshot(copy) == snapshot(ds) and len(copy) == rows


def test_from_ray_refuses_unknown_tensors_and_mismatched_columns_leaving_the_target_as_it_was(tmp_path):
    import ray

    table = pa.table({"n": pa.array([1, 2, 3], pa.int64()), "t": ["a", "b", "c"]})
    with pytest.raises(SampleError, match=r"tensors \['nope'\] are not columns of the Ray dataset"):
        tensordb.from_ray(ray.data.from_arrow(table), str(tmp_path / "new"), tensors=["nope"])
    assert not tensordb.exists(str(tmp_path / "new")) and not _files(str(tmp_path / "new"))
    existing = tensordb.from_ray(ray.data.from_arrow(table), str(tmp_path / "db"))
    existing.close()
    files = _files(str(tmp_path / "db"))
    with pytest.raises(SampleError, match=r"has tensors \['n', 't'\]; the Ray dataset's columns are \['n'\]"):
        tensordb.from_ray(ray.data.from_arrow(table.select(["n"])), str(tmp_path / "db"))
    assert _files(str(tmp_path / "db")) == files
    assert len(tensordb.load(str(tmp_path / "db"), read_only=True)) == 3
