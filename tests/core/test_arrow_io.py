"""to_arrow / to_pandas / from_arrow round trips, and ingest_jsonl."""

from __future__ import annotations

import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tensordb

from .helpers import mem_path, snapshot

N = 40


def _all_htypes(path: str):
    ds = tensordb.empty(path)
    ds.create_tensor("emb", htype="embedding", dtype="float32")
    ds.create_tensor("half", htype="embedding", dtype="float16")
    ds.create_tensor("scalar", htype="generic", dtype="int16")
    ds.create_tensor("flag", htype="generic", dtype="bool")
    ds.create_tensor("image", htype="generic", dtype="uint8", chunk_compression="lz4")
    ds.create_tensor("ragged", htype="generic", dtype="float64")
    ds.create_tensor("ragged2d", htype="generic", dtype="int32")
    ds.create_tensor("text", htype="text")
    ds.create_tensor("doc_id", htype="id")
    ds.create_tensor("meta", htype="json")
    ds.create_tensor("tags", htype="list")
    ds.create_tensor("label", htype="class_label", class_names=["cat", "dog"])
    ds.create_tensor("labels", htype="class_label", class_names=["x", "y", "z"])
    rng = np.random.default_rng(0)
    ds.extend({
        "emb": rng.standard_normal((N, 8), dtype=np.float32),
        "half": rng.standard_normal((N, 4)).astype(np.float16),
        "scalar": np.arange(N, dtype=np.int16) - 20,
        "flag": np.arange(N) % 3 == 0,
        "image": rng.integers(0, 255, (N, 3, 4, 2), dtype=np.uint8),
        "ragged": [rng.standard_normal(i % 4) for i in range(N)],
        "ragged2d": [np.arange((i % 3 + 1) * 2, dtype=np.int32).reshape(i % 3 + 1, 2) for i in range(N)],
        "text": [None if i == 3 else f"text {i} ✓" for i in range(N)],
        "doc_id": [f"id-{i}" for i in range(N)],
        "meta": [None if i == 5 else {"i": i, "nested": {"a": [1, 2.5, None]}, "s": "é"} for i in range(N)],
        "tags": [["a", i, {"k": True}] if i % 2 else [] for i in range(N)],
        "label": [i % 2 for i in range(N)],
        "labels": [[j % 3 for j in range(i % 3)] for i in range(N)],
    })
    return ds


@pytest.fixture
def full(tmp_path):
    return _all_htypes(str(tmp_path / "src"))


def _schema(ds) -> dict:
    return {n: (t.htype, t.meta.dtype, t.meta.shape, t.meta.class_names, t.meta.compression)
            for n, t in ds.tensors.items()}


def test_arrow_types(full):
    table = full.to_arrow()
    assert table.num_rows == N
    t = table.schema
    assert t.field("emb").type == pa.list_(pa.float32(), 8)
    assert t.field("half").type == pa.list_(pa.float16(), 4)
    assert t.field("scalar").type == pa.int16()
    assert t.field("flag").type == pa.bool_()
    assert t.field("image").type == pa.list_(pa.uint8(), 24)
    assert json.loads(t.field("image").metadata[b"tensordb.shape"]) == [3, 4, 2]
    assert t.field("ragged").type == pa.list_(pa.float64())
    assert t.field("ragged2d").type == pa.list_(pa.list_(pa.int32()))
    assert t.field("text").type == pa.string() and t.field("doc_id").type == pa.string()
    assert t.field("meta").type == pa.string() and t.field("meta").metadata[b"tensordb.htype"] == b"json"
    assert t.field("label").type == pa.list_(pa.uint32())
    assert json.loads(t.field("label").metadata[b"tensordb.class_names"]) == ["cat", "dog"]
    assert table.column("text")[3].as_py() is None and table.column("meta")[5].as_py() is None
    assert json.loads(table.column("meta")[1].as_py()) == {"i": 1, "nested": {"a": [1, 2.5, None]}, "s": "é"}
    np.testing.assert_array_equal(
        table.column("image")[7].values.to_numpy().reshape(3, 4, 2), full.image[7].numpy()
    )


def test_round_trip_all_htypes(full, path):
    back = tensordb.from_arrow(full.to_arrow(), path, progress=False, batch_size=7)
    assert _schema(back) == _schema(full)
    assert snapshot(back) == snapshot(full)


def test_round_trip_parquet_and_views(full, tmp_path):
    view = full[10:30:2]
    parquet = tmp_path / "rows.parquet"
    pq.write_table(view.to_arrow(), parquet, row_group_size=4)
    back = tensordb.from_arrow(str(parquet), str(tmp_path / "dest"), progress=False)
    assert len(back) == 10 and snapshot(back) == snapshot(view)
    assert _schema(back) == _schema(full)
    # a tensor subset, from a pathlib.Path
    back2 = tensordb.from_arrow(parquet, mem_path(), progress=False, tensors=["text", "label"])
    assert list(back2.tensors) == ["text", "label"] and back2.text.numpy(aslist=True) == view.text.numpy(aslist=True)


def test_to_arrow_subset_and_query_columns(full):
    table = full.to_arrow(tensors=["text", "scalar"])
    assert table.column_names == ["text", "scalar"]
    assert table.column("scalar").to_pylist() == list(range(-20, 20))
    empty_view = full[[]]
    assert full[[]].to_arrow().num_rows == 0 and len(empty_view) == 0


def test_from_arrow_infers_htypes(tmp_path):
    table = pa.table({
        "vec": pa.FixedSizeListArray.from_arrays(pa.array(np.arange(12, dtype=np.float64)), 3),
        "ints": pa.FixedSizeListArray.from_arrays(pa.array(np.arange(16, dtype=np.int32)), 4),
        "seq": pa.array([[1, 2], [], [3], [4, 5, 6]], pa.list_(pa.int64())),
        "name": pa.array(["a", "b", None, "d"], pa.large_string()),
        "rec": pa.array([{"a": 1, "b": "x"}, {"a": 2, "b": None}, None, {"a": 4, "b": "z"}]),
        "kind": pa.array(["cat", "dog", "cat", "bird"]).dictionary_encode(),
        "words": pa.array([["x"], ["y", "z"], [], None]),
        "score": pa.array([0.5, 1.5, 2.5, None]),
        "count": pa.array([1, 2, 3, 4], pa.int8()),
        "ok": pa.array([True, False, True, True]),
    })
    ds = tensordb.from_arrow(table, str(tmp_path / "ds"), progress=False)
    htypes = {n: t.htype for n, t in ds.tensors.items()}
    assert htypes == {"vec": "embedding", "ints": "generic", "seq": "generic", "name": "text", "rec": "json",
                      "kind": "class_label", "words": "list", "score": "generic", "count": "generic", "ok": "generic"}
    assert ds.vec.meta.dtype == "float32" and ds.vec.numpy()[1].tolist() == [3.0, 4.0, 5.0]
    assert ds.ints.numpy().shape == (4, 4) and ds.ints.numpy().dtype == np.int32
    assert [r.tolist() for r in ds.seq.numpy(aslist=True)] == [[1, 2], [], [3], [4, 5, 6]]
    assert ds.name.numpy(aslist=True) == ["a", "b", None, "d"]
    assert ds.rec.numpy(aslist=True) == [{"a": 1, "b": "x"}, {"a": 2, "b": None}, None, {"a": 4, "b": "z"}]
    assert ds.kind.data()["text"] == [["cat"], ["dog"], ["cat"], ["bird"]]
    assert ds.words.numpy(aslist=True) == [["x"], ["y", "z"], [], None]
    assert ds.ok.numpy().tolist() == [True, False, True, True]
    assert np.isnan(ds.score.numpy()[3]) and ds.score.numpy()[:3].tolist() == [0.5, 1.5, 2.5]
    assert ds.count.numpy().dtype == np.int8
    with pytest.raises(tensordb.SampleError, match="has nulls"):
        tensordb.from_arrow(pa.table({"n": pa.array([1, None])}), mem_path(), progress=False)
    with pytest.raises(TypeError, match="has no tensordb htype"):
        tensordb.from_arrow(pa.table({"b": pa.array([b"x"])}), mem_path(), progress=False)


def test_from_arrow_overwrite_and_dataframe(full, tmp_path):
    dest = str(tmp_path / "dest")
    tensordb.from_arrow(full.to_arrow(tensors=["text"]), dest, progress=False).close()
    with pytest.raises(tensordb.DatasetExistsError):
        tensordb.from_arrow(full.to_arrow(tensors=["text"]), dest, progress=False)
    df = full.to_pandas(tensors=["scalar", "text"])
    back = tensordb.from_arrow(df, dest, overwrite=True, progress=False)
    assert back.scalar.numpy().tolist() == list(range(-20, 20)) and len(back) == N


def test_to_pandas(full):
    import pandas as pd

    df = full.to_pandas()
    assert list(df.columns) == list(full.tensors) and len(df) == N
    assert df["scalar"].dtype == np.int16
    assert df["meta"][1] == {"i": 1, "nested": {"a": [1, 2.5, None]}, "s": "é"}
    assert df["tags"][1] == ["a", 1, {"k": True}] and df["text"][4] == "text 4 ✓"
    assert pd.isna(df["text"][3])  # pandas may hold text in its string dtype, with NaN for missing
    np.testing.assert_array_equal(df["emb"][4], full.emb.numpy()[4])
    assert full[5:8].to_pandas(tensors="doc_id")["doc_id"].tolist() == ["id-5", "id-6", "id-7"]


def test_no_heavy_imports_on_import():
    import subprocess

    code = "import sys, tensordb; print(sorted(m for m in ('torch', 'pandas', 'pyarrow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- ingest_jsonl ------------------------------------------------------------------------------------
def _write_jsonl(path, rows, extra_blank=True):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
            if extra_blank:
                f.write("\n")


def test_ingest_jsonl_with_embedding_function(tmp_path):
    src = tmp_path / "docs.jsonl"
    rows = [{"text": f"doc {i} about {'cats' if i % 2 else 'dogs'}", "id": f"d{i}", "source": "web", "n": i}
            for i in range(25)]
    rows[3].pop("id")
    _write_jsonl(src, rows)
    dest = str(tmp_path / "vs")
    ds = tensordb.ingest_jsonl(src, dest, embedding_function=tensordb.HashingEmbedding(32), batch_size=10,
                               progress=False)
    assert list(ds.tensors) == ["text", "metadata", "embedding", "id"] and len(ds) == 25
    assert ds.text.numpy(aslist=True) == [r["text"] for r in rows]
    assert ds.metadata[4].numpy() == {"source": "web", "n": 4}
    ids = ds.id.numpy(aslist=True)
    assert ids[0] == "d0" and len(ids[3]) == 36 and len(set(ids)) == 25
    expected = tensordb.HashingEmbedding(32).embed([r["text"] for r in rows])
    np.testing.assert_allclose(ds.embedding.numpy(), expected, rtol=1e-6)
    ds.close()
    store = tensordb.VectorStore(dest, embedding_function=tensordb.HashingEmbedding(32), read_only=True)
    assert len(store) == 25
    # appending to the same store, metadata restricted to chosen fields
    ds = tensordb.ingest_jsonl(src, dest, embedding_function=tensordb.HashingEmbedding(32), metadata_fields=["n"],
                               id_field=None, progress=False)
    assert len(ds) == 50 and ds.metadata[30].numpy() == {"n": 5}


def test_ingest_jsonl_without_embeddings_and_errors(tmp_path):
    src = tmp_path / "docs.jsonl"
    _write_jsonl(src, [{"body": "hello", "key": 1, "vec": [1.0, 0.0]}, {"body": "world", "key": 2, "vec": [0.0, 1.0]}],
                 extra_blank=False)
    ds = tensordb.ingest_jsonl(src, mem_path(), text_field="body", id_field="key", progress=False)
    assert list(ds.tensors) == ["text", "metadata", "id"]
    assert ds.id.numpy(aslist=True) == ["1", "2"] and ds.metadata[0].numpy() == {"vec": [1.0, 0.0]}
    ds = tensordb.ingest_jsonl(src, mem_path(), text_field="body", embedding_field="vec", progress=False)
    assert ds.embedding.numpy().tolist() == [[1.0, 0.0], [0.0, 1.0]] and ds.metadata[1].numpy() == {"key": 2}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{not json}\n')
    with pytest.raises(tensordb.SampleError, match="line 2"):
        tensordb.ingest_jsonl(bad, mem_path(), progress=False)
    other = tensordb.empty(mem_path())
    other.create_tensor("x")
    other.close()
    with pytest.raises(tensordb.TensorDBError, match="missing"):
        tensordb.ingest_jsonl(src, other.path, text_field="body", progress=False)
