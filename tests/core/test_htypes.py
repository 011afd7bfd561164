"""Every htype and dtype round-trips through a dataset; bad rows are refused without a trace."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tensordb
from tensordb.errors import SampleError

from .helpers import canon, mem_path, snapshot

INT_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
FLOAT_DTYPES = ["float16", "float32", "float64"]
ALL_DTYPES = ["bool"] + INT_DTYPES + FLOAT_DTYPES

# (compression, max_chunk_size): plain, lz4, and tiny chunks so many chunks are exercised
STORAGE = [(None, 16 << 20), ("lz4", 16 << 20), (None, 2048), ("lz4", 2048)]
hsettings = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _new(htype="generic", storage=(None, 2048), **kw):
    ds = tensordb.empty(mem_path("htypes"))
    compression, size = storage
    ds.create_tensor("x", htype=htype, chunk_compression=compression, max_chunk_size=size, **kw)
    return ds


# -- generic ------------------------------------------------------------------------------------


@hsettings
@given(
    dtype=st.sampled_from(ALL_DTYPES),
    storage=st.sampled_from(STORAGE),
    data=st.data(),
    as_array=st.booleans(),
)
def test_generic_fixed_shape_roundtrip(dtype, storage, data, as_array):
    row_shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=6), label="row_shape")
    n = data.draw(st.integers(1, 60), label="n")
    values = data.draw(hnp.arrays(np.dtype(dtype), (n, *row_shape)), label="values")
    ds = _new(storage=storage, dtype=dtype)
    if as_array:
        ds.x.extend(values)
    else:
        ds.x.extend(list(values))
    got = ds.x.numpy()
    assert got.dtype == np.dtype(dtype) and got.shape == values.shape
    assert got.tobytes() == values.tobytes()
    assert ds.x.shape == (n, *row_shape)
    # random access and slices see the same
    idx = data.draw(st.lists(st.integers(0, n - 1), max_size=10), label="idx")
    assert ds.x[idx].numpy().tobytes() == values[idx].tobytes()
    assert ds[1:].x.numpy().tobytes() == values[1:].tobytes()
    # reopening changes nothing
    assert snapshot(tensordb.load(ds.path, read_only=True)) == snapshot(ds)


@hsettings
@given(dtype=st.sampled_from(ALL_DTYPES), storage=st.sampled_from(STORAGE), data=st.data())
def test_generic_varying_shapes_and_none_roundtrip(dtype, storage, data):
    ndim = data.draw(st.integers(1, 3), label="ndim")
    rows = data.draw(
        st.lists(
            st.none() | hnp.arrays(np.dtype(dtype), st.tuples(*[st.integers(0, 5)] * ndim)), max_size=25
        ),
        label="rows",
    )
    # the first row fixes the rank (a None first row would make it 1-D)
    rows = [data.draw(hnp.arrays(np.dtype(dtype), st.tuples(*[st.integers(0, 5)] * ndim)), label="first")] + rows
    ds = _new(storage=storage, dtype=dtype)
    half = len(rows) // 2
    ds.x.extend(rows[:half])
    for r in rows[half:]:
        ds.x.append(r)
    expected = [canon(np.zeros((0,) * ndim, dtype) if r is None else r, dtype) for r in rows]
    assert [canon(r) for r in ds.x.numpy(aslist=True)] == expected
    assert len(ds) == len(rows)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_generic_scalars_and_inferred_dtype(dtype):
    ds = _new()
    values = np.arange(10).astype(dtype)
    ds.x.extend(values.tolist())
    assert ds.x.numpy().tobytes() == values.astype(ds.x.dtype).tobytes()
    ds2 = _new(dtype=dtype)
    ds2.x.extend(values.tolist())
    assert ds2.x.dtype == np.dtype(dtype)
    assert ds2.x.numpy().tobytes() == values.tobytes()


def test_generic_none_rows_become_empty_arrays():
    ds = _new(dtype="float32")
    ds.x.extend([None, [1.0, 2.0], None])
    got = ds.x.numpy(aslist=True)
    empty = canon(np.zeros(0, "f4"))
    assert [canon(r) for r in got] == [empty, canon(np.array([1, 2], "f4")), empty]
    with pytest.raises(SampleError, match="aslist"):
        ds.x.numpy()


def test_generic_empty_list_fits_any_dtype():
    ds = _new(dtype="int16")
    ds.x.extend([[1, 2], [], None])
    assert [canon(r) for r in ds.x.numpy(aslist=True)] == [
        canon(np.array([1, 2], "int16")), canon(np.zeros(0, "int16")), canon(np.zeros(0, "int16"))
    ]


def test_generic_none_in_scalar_tensor_is_refused_not_made_up():
    ds = _new(dtype="int32")
    ds.x.extend([7, 8])
    with pytest.raises(SampleError, match=r"tensor 'x', row 3 .*scalars"):
        ds.x.extend([9, None])
    ds2 = _new()
    with pytest.raises(SampleError, match=r"tensor 'x', row 0 .*scalars"):
        ds2.x.extend([None, 5])
    assert ds.x.numpy().tolist() == [7, 8]
    assert len(ds2.x) == 0


def test_generic_dtype_errors_name_tensor_and_row():
    ds = _new(dtype="int8")
    ds.x.extend([1, 2, 3])
    with pytest.raises(SampleError, match=r"tensor 'x', row 5 .*range of dtype int8"):
        ds.x.extend(np.array([1, 2, 300, 4]))
    with pytest.raises(SampleError, match=r"tensor 'x', row 4 .*range"):
        ds.x.extend([5, -200])
    with pytest.raises(SampleError, match=r"tensor 'x', row 3 .*expected dtype int8, got float64"):
        ds.x.extend([1.5])
    with pytest.raises(SampleError, match=r"tensor 'x', row 4 .*expected a number"):
        ds.x.extend([1, "a"])
    with pytest.raises(SampleError, match=r"tensor 'x', row 3 .*1-dimensional"):
        ds.x.extend([[1, 2]])  # rows so far are scalars
    assert ds.x.numpy().tolist() == [1, 2, 3]


# -- text, json, list, id -------------------------------------------------------------------------


@hsettings
@given(texts=st.lists(st.none() | st.text(), min_size=1, max_size=40), storage=st.sampled_from(STORAGE))
def test_text_roundtrip(texts, storage):
    ds = _new("text", storage)
    ds.x.extend(texts)
    assert ds.x.numpy(aslist=True) == texts
    assert ds.x.data(aslist=True)["value"] == texts
    assert list(ds.x.numpy()) == texts
    assert ds.x[0].numpy() == texts[0]


def test_text_special_values():
    values = ["", None, "ünïcødé ✓ 中文 🎉", "\x00nul", "\ud800 lone surrogate", "a" * 5000]
    ds = _new("text", (None, 1024))
    for v in values:
        ds.x.append(v)
    assert ds.x.numpy(aslist=True) == values
    assert tensordb.load(ds.path, read_only=True).x.numpy(aslist=True) == values


json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | st.floats(
    allow_nan=False, allow_infinity=False
)
json_values = st.recursive(
    json_scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=20,
)


@hsettings
@given(
    values=st.lists(st.none() | st.dictionaries(st.text(max_size=6), json_values, max_size=4) | st.lists(json_values),
                    min_size=1, max_size=20),
    storage=st.sampled_from(STORAGE),
)
def test_json_roundtrip(values, storage):
    ds = _new("json", storage)
    ds.x.extend(values)
    assert ds.x.numpy(aslist=True) == values
    assert ds.x.data()["value"] == values


def test_json_errors():
    ds = _new("json")
    ds.x.append({"a": 1})
    for bad, msg in [
        ({"a": float("nan")}, "JSON"),
        ({"a": {1, 2}}, "JSON"),
        ({"a": b"bytes"}, "JSON"),
        ("a string", "expected dict or list"),
        (5, "expected dict or list"),
        ({"big": 2**80}, "JSON"),
    ]:
        with pytest.raises(SampleError, match=rf"tensor 'x', row 1 .*{msg}"):
            ds.x.append(bad)
        with pytest.raises(SampleError, match=rf"tensor 'x', row 3 .*{msg}"):
            ds.x.extend([{"ok": 1}, {"ok": 2}, bad])
    assert ds.x.numpy(aslist=True) == [{"a": 1}]


@hsettings
@given(values=st.lists(st.lists(st.text(max_size=5) | st.integers(-1000, 1000)), min_size=1, max_size=20),
       storage=st.sampled_from(STORAGE))
def test_list_roundtrip(values, storage):
    ds = _new("list", storage)
    ds.x.extend([tuple(v) for v in values[:1]] + values[1:])  # tuples come back as lists
    assert ds.x.numpy(aslist=True) == values


def test_list_rejects_non_lists():
    ds = _new("list")
    with pytest.raises(SampleError, match=r"tensor 'x', row 0 .*expected list or tuple"):
        ds.x.append({"a": 1})


@hsettings
@given(ids=st.lists(st.text(min_size=1), min_size=1, max_size=30))
def test_id_roundtrip(ids):
    ds = _new("id")
    ds.x.extend(ids)
    assert ds.x.numpy(aslist=True) == ids


def test_id_rejects_none():
    ds = _new("id")
    ds.x.append("a")
    with pytest.raises(SampleError, match=r"tensor 'x', row 2 .*None"):
        ds.x.extend(["b", None])
    assert ds.x.numpy(aslist=True) == ["a"]


def test_object_htypes_take_no_dtype():
    ds = tensordb.empty(mem_path())
    with pytest.raises(ValueError, match="takes no dtype"):
        ds.create_tensor("t", htype="text", dtype="int32")
    with pytest.raises(ValueError, match="unknown htype"):
        ds.create_tensor("t", htype="image")
    with pytest.raises(ValueError, match="max_chunk_size"):
        ds.create_tensor("t", max_chunk_size=10)
    with pytest.raises(ValueError, match="compression"):
        ds.create_tensor("t", chunk_compression="zip")
    assert list(ds.tensors) == []


# -- embeddings ---------------------------------------------------------------------------------


@hsettings
@given(
    dtype=st.sampled_from(["float32", "float16"]),
    storage=st.sampled_from(STORAGE),
    data=st.data(),
)
def test_embedding_roundtrip(dtype, storage, data):
    dim = data.draw(st.integers(1, 40), label="dim")
    n = data.draw(st.integers(1, 50), label="n")
    elements = st.floats(-1000, 1000, width=16 if dtype == "float16" else 32)
    values = data.draw(hnp.arrays(np.dtype(dtype), (n, dim), elements=elements), label="values")
    ds = _new("embedding", storage, dtype=dtype)
    if data.draw(st.booleans(), label="as_list"):
        ds.x.extend([list(map(float, v)) for v in values])
    else:
        ds.x.extend(values)
    got = ds.x.numpy()
    assert got.dtype == np.dtype(dtype) and got.shape == (n, dim)
    assert got.tobytes() == values.tobytes()
    assert ds.x.shape == (n, dim)


def test_embedding_float64_input_is_stored_as_float32():
    ds = _new("embedding")
    values = np.random.default_rng(0).random((7, 5))
    ds.x.extend(values)
    assert ds.x.numpy().tobytes() == values.astype(np.float32).tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize(
    "bad, msg",
    [
        ([np.ones(5)], "dimension 4, got 5"),
        ([np.ones(4), np.ones(3)], "dimension 4, got 3"),
        ([[1.0, float("nan"), 0, 0]], "NaN or Inf"),
        ([np.ones(4), [0, 0, float("inf"), 0]], "NaN or Inf"),
        ([None], "cannot be None"),
        ([np.ones(4), None], "cannot be None"),
        ([np.ones((2, 2))], "1-dimensional"),
        (np.ones((2, 4, 1)), "1-dimensional"),
        (["abcd"], "expected a number"),
        ([["a", "b", "c", "d"]], "numeric"),
        (np.array([[1e6, 0, 0, 0]]), None),  # overflows float16, fine for float32
    ],
)
def test_embedding_errors(dtype, bad, msg):
    ds = _new("embedding", dtype=dtype)
    ds.x.extend(np.zeros((3, 4), dtype))
    before = snapshot(ds)
    if msg is None:
        if dtype == "float32":
            ds.x.extend(bad)
            return
        msg = "outside the range of dtype float16"
    with pytest.raises(SampleError) as info:
        ds.x.extend(bad)
    text = str(info.value)
    assert "tensor 'x'" in text and msg in text
    bad_row = 3 + next((i for i, v in enumerate(bad) if v is None or np.asarray(v).shape != (4,)
                        or not np.isfinite(np.asarray(v, dtype=float)).all()), 0) if msg != "numeric" else 3
    assert f"row {bad_row}" in text
    assert snapshot(ds) == before


def test_embedding_dtype_must_be_float():
    ds = tensordb.empty(mem_path())
    with pytest.raises(ValueError, match="embedding dtype"):
        ds.create_tensor("e", htype="embedding", dtype="int32")


# -- class labels ---------------------------------------------------------------------------------


def test_class_label_names_ints_and_lists():
    ds = _new("class_label", class_names=["cat", "dog"])
    ds.x.extend(["dog", "cat", 1, "bird"])
    assert ds.x.numpy().reshape(-1).tolist() == [1, 0, 1, 2]
    assert ds.x.class_names == ["cat", "dog", "bird"]
    assert ds.x.data()["text"] == [["dog"], ["cat"], ["dog"], ["bird"]]
    ds2 = _new("class_label", class_names=["a", "b", "c"])
    ds2.x.extend([["a", "c"], [1], [], None, ["b", 0, "zz"]])
    rows = [r.tolist() for r in ds2.x.numpy(aslist=True)]
    assert rows == [[0, 2], [1], [], [], [1, 0, 3]]
    assert ds2.x.data(aslist=True)["text"] == [["a", "c"], ["b"], [], [], ["b", "a", "zz"]]
    assert tensordb.load(ds2.path, read_only=True).x.class_names == ["a", "b", "c", "zz"]
    ds3 = _new("class_label")
    ds3.x.extend(np.array([3, 1, 2]))
    assert ds3.x.numpy().reshape(-1).tolist() == [3, 1, 2]
    assert ds3.x.data()["text"] == [["3"], ["1"], ["2"]]


@pytest.mark.parametrize(
    "bad",
    [[-1], np.array([0, -1]), [1.5], [True], [2**32], np.array([1, 2**33]), [{"a": 1}], [["a", 2.5]]],
)
def test_class_label_errors(bad):
    ds = _new("class_label", class_names=["a"])
    ds.x.extend(["a", "a"])
    before = snapshot(ds)
    with pytest.raises(SampleError, match=r"tensor 'x', row \d+"):
        ds.x.extend(bad)
    assert snapshot(ds) == before
    assert ds.x.class_names == ["a"]


# -- bad rows leave the dataset exactly unchanged ---------------------------------------------------


def _multi(path, storage=(None, 2048)):
    ds = tensordb.empty(path, overwrite=True)
    c, size = storage
    ds.create_tensor("g", dtype="int32", chunk_compression=c, max_chunk_size=size)
    ds.create_tensor("t", htype="text", chunk_compression=c, max_chunk_size=size)
    ds.create_tensor("j", htype="json", chunk_compression=c, max_chunk_size=size)
    ds.create_tensor("e", htype="embedding", chunk_compression=c, max_chunk_size=size)
    ds.create_tensor("c", htype="class_label", class_names=["x", "y"])
    ds.extend({
        "g": np.arange(100, dtype="int32").reshape(50, 2),
        "t": [f"text {i}" for i in range(50)],
        "j": [{"i": i} for i in range(50)],
        "e": np.random.default_rng(1).random((50, 8)).astype("float32"),
        "c": ["x", "y"] * 25,
    })
    return ds


def _good_rows(n=5):
    return {
        "g": [[i, i] for i in range(n)],
        "t": [f"new {i}" for i in range(n)],
        "j": [{"n": i} for i in range(n)],
        "e": [np.ones(8, "float32") * i for i in range(n)],
        "c": ["y"] * n,
    }


@pytest.mark.parametrize(
    "tensor, bad, msg",
    [
        ("g", [[1, 2], [3, 4]], "1-dimensional"),
        ("g", "oops", "expected a"),
        ("t", 7, "expected str"),
        ("j", {"k": {1, 2}}, "JSON"),
        ("e", np.ones(9), "dimension 8"),
        ("e", None, "cannot be None"),
        ("e", [np.nan] * 8, "NaN"),
        ("c", -3, "label"),
    ],
)
@pytest.mark.parametrize("storage", [(None, 2048), ("lz4", 16 << 20)])
def test_bad_row_in_middle_of_multi_tensor_extend(path, tensor, bad, msg, storage):
    ds = _multi(path, storage)
    before = snapshot(ds)
    state_before = ds._state
    files_before = ds._store.list()
    rows = _good_rows()
    rows[tensor][2] = bad
    with pytest.raises(SampleError) as info:
        ds.extend(rows)
    text = str(info.value)
    assert f"tensor '{tensor}'" in text and "row 52" in text and msg in text, text
    assert snapshot(ds) == before
    assert ds._state == state_before
    assert ds._store.list() == files_before  # no orphan chunk, no new snapshot
    assert ds.verify().ok
    ds.close()
    assert snapshot(tensordb.load(path, read_only=True)) == before
    # and the dataset still takes good rows afterwards
    ds = tensordb.load(path)
    ds.extend(_good_rows())
    assert len(ds) == 55


def test_bad_row_via_list_of_row_dicts_and_append(path):
    ds = _multi(path)
    before = snapshot(ds)
    rows = [{k: v[i] for k, v in _good_rows().items()} for i in range(5)]
    rows[3]["t"] = b"bytes"
    with pytest.raises(SampleError, match=r"tensor 't', row 53"):
        ds.extend(rows)
    row = {k: v[0] for k, v in _good_rows().items()}
    row["e"] = np.ones(3)
    with pytest.raises(SampleError, match=r"tensor 'e', row 50 .*dimension 8, got 3"):
        ds.append(row)
    with pytest.raises(SampleError, match="no values for tensors"):
        ds.append({"g": [1, 2]})
    with pytest.raises(SampleError, match="different numbers of rows"):
        ds.extend({**_good_rows(2), "t": ["a"]})
    assert snapshot(ds) == before


def test_bad_update_leaves_dataset_unchanged(path):
    ds = _multi(path)
    before = snapshot(ds)
    files_before = ds._store.list()
    with pytest.raises(SampleError, match=r"tensor 'e', row 12 .*dimension 8, got 7"):
        ds.update(slice(10, 13), {"t": ["a", "b", "c"], "e": [np.ones(8), np.ones(8), np.ones(7)]})
    # the row named is the row written, also for scattered indexes
    with pytest.raises(SampleError, match=r"tensor 'e', row 30 .*dimension 8, got 7"):
        ds.update([10, 20, 30], {"t": ["a", "b", "c"], "e": [np.ones(8), np.ones(8), np.ones(7)]})
    with pytest.raises(SampleError, match=r"tensor 't', row 5 "):
        ds.t[[40, 5]] = ["ok", 3]
    with pytest.raises(SampleError, match=r"tensor 't', row 4"):
        ds.t[4] = 5
    with pytest.raises(SampleError, match="needs 3 values, got 2"):
        ds.t[0:3] = ["a", "b"]
    assert snapshot(ds) == before
    assert ds._store.list() == files_before


@pytest.mark.parametrize("storage", STORAGE)
def test_many_chunks_roundtrip_all_htypes(storage, path):
    ds = _multi(path, storage)
    for _ in range(30):
        ds.extend(_good_rows(3))
    assert len(ds) == 50 + 90
    if storage[1] == 2048:
        assert len(ds._state.tensors["t"].chunk_keys) > 1
        assert len(ds._state.tensors["e"].chunk_keys) > 1
    snap = snapshot(ds)
    ds.close()
    again = tensordb.load(path, read_only=True)
    assert snapshot(again) == snap
    assert again.verify().ok
    assert again.t.numpy(aslist=True)[:2] == ["text 0", "text 1"]
    assert again.e.numpy().shape == (140, 8)
