"""Forged files, one case each: valid checksums, hostile content.

Every case must end in a ``TensorDBError`` (``DataCorruptionError`` for damage)
from reads, ``log``, ``verify`` and the CLI, quickly and without a large
allocation; never a raw ``ZeroDivisionError``, ``RecursionError``,
``MemoryError``, ``IndexError``, ``ValueError`` or ``TypeError``.
"""

from __future__ import annotations

import os
import shutil

import msgpack
import numpy as np
import pytest

import tensordb
from tensordb import cli
from tensordb.errors import DataCorruptionError, TensorDBError
from tensordb.format import chunk as chunkfmt
from tensordb.format import envelope
from tensordb.format import manifest as mf

from .forging import decode, file_of, forge_chunk, make_dataset, read_everything, write, write_raw_header
from .helpers import guarded


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("forged") / "ds")
    make_dataset(path)
    return path, read_everything(path)


@pytest.fixture
def ds_path(pristine, tmp_path):
    path = str(tmp_path / "ds")
    shutil.copytree(pristine[0], path)
    return path


def first_chunk(path: str, tensor: str) -> str:
    return tensordb.load(path, read_only=True)._state.tensors[tensor].chunk_keys[0]


def working_state(path: str) -> str:
    return tensordb.load(path, read_only=True)._checkout.state_key


def assert_refused(path: str, key: str, capsys: pytest.CaptureFixture | None = None) -> None:
    """Reading everything raises a TensorDBError naming ``key``; verify reports it; the CLI exits 1 cleanly."""
    got, err = guarded(lambda: read_everything(path))
    assert isinstance(err, TensorDBError), f"{type(err).__name__}: {err}" if err else "no error: forgery read back"
    assert key in str(err), str(err)
    report, err = guarded(lambda: tensordb.verify(path))
    assert err is None, f"verify raised {type(err).__name__}: {err}"
    assert not report.ok and any(key in p for p in report.problems), report.problems
    if capsys is not None:
        capsys.readouterr()
        assert cli.main(["verify", path]) == 1
        out = capsys.readouterr()
        assert "Traceback" not in out.out + out.err and key in out.out + out.err


# -- chunks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["S0", "O", "V0", "<U0", "<U4", "f4,f4", "(2,)f4", "<M8[s]", "nope", 5, None])
def test_a_chunk_dtype_that_is_no_numeric_dtype(ds_path, capsys, dtype):
    key = first_chunk(ds_path, "embedding")
    forge_chunk(ds_path, key, lambda meta, _: meta.update(dtype=dtype))
    assert_refused(ds_path, key, capsys)


def test_a_ragged_chunk_dtype_S0(ds_path):
    key = first_chunk(ds_path, "sizes")
    forge_chunk(ds_path, key, lambda meta, _: meta.update(dtype="S0"))
    assert_refused(ds_path, key)


def deep_msgpack(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"  # [[[...[None]...]]]


def forge_every_row(ds_path: str, key: str, row: bytes, encoding: str) -> None:
    """Replace every row of blob chunk ``key`` with the stored bytes ``row`` (valid checksums, rebound states)."""
    nrows = decode(ds_path, key)[0]["nrows"]

    def edit(meta, buffers):
        parts = chunkfmt.encode_blobs([row] * nrows, encoding, None)
        new_meta, new_buffers = envelope.unpack(b"".join(parts), "new", envelope.MAGIC_CHUNK)
        meta.update(new_meta)
        buffers.clear()
        buffers.update({k: bytes(v) for k, v in new_buffers.items()})

    forge_chunk(ds_path, key, edit)


@pytest.mark.parametrize("encoding, row", [("msgpack", deep_msgpack(100_000)),
                                           ("json", b"[" * 100_000 + b"]" * 100_000)])
def test_deeply_nested_rows(ds_path, encoding, row):
    key = first_chunk(ds_path, "metadata")
    forge_every_row(ds_path, key, row, encoding)
    got, err = guarded(lambda: read_everything(ds_path))
    assert isinstance(err, DataCorruptionError) and key in str(err) and "tensor 'metadata'" in str(err), repr(err)


@pytest.mark.parametrize("tensor, encoding, row", [("metadata", "msgpack", deep_msgpack(100_000)),
                                                   ("text", "utf8", b"\xff\xfe not utf-8")],
                         ids=["deep-msgpack", "invalid-utf8"])
def test_forged_rows_through_the_pytorch_loader(ds_path, tensor, encoding, row):
    key = first_chunk(ds_path, tensor)
    forge_every_row(ds_path, key, row, encoding)
    loader = tensordb.load(ds_path, read_only=True).pytorch(tensors=[tensor], batch_size=8)
    got, err = guarded(lambda: list(loader))
    assert isinstance(err, DataCorruptionError) and key in str(err), repr(err)


def test_a_deeply_nested_header(ds_path):
    key = first_chunk(ds_path, "text")
    # {"kind": [[[...]]], "buffers": []}: msgpack refuses to pack it, so the bytes are written by hand
    write_raw_header(ds_path, key, b"\x82\xa4kind" + deep_msgpack(100_000) + b"\xa7buffers\x90")
    assert_refused(ds_path, key)


def test_a_deeply_nested_state(ds_path):
    key = working_state(ds_path)
    write_raw_header(ds_path, key, b"\x83\xa7tensors\x90\xa4info" + deep_msgpack(100_000) + b"\xa7buffers\x90")
    assert_refused(ds_path, key)


def test_a_short_nulls_buffer(ds_path):
    key = first_chunk(ds_path, "metadata")
    forge_chunk(ds_path, key, lambda _, buffers: buffers.update(nulls=buffers["nulls"][:2]))
    assert_refused(ds_path, key)


def test_a_negative_ragged_shape(ds_path):
    key = first_chunk(ds_path, "sizes")

    def edit(_meta, buffers):
        shapes = np.frombuffer(buffers["shapes"], np.int64).copy()
        shapes[0], shapes[1] = -shapes[0], shapes[1] + 2 * shapes[0]  # the element count still adds up
        buffers["shapes"] = shapes.tobytes()

    forge_chunk(ds_path, key, edit)
    assert_refused(ds_path, key)


@pytest.mark.parametrize("shape", [[10**6, 10**6], [-8], [2**62, 4], "8"])
def test_a_chunk_row_shape_larger_than_its_data(ds_path, shape):
    key = first_chunk(ds_path, "embedding")
    forge_chunk(ds_path, key, lambda meta, _: meta.update(shape=shape))
    assert_refused(ds_path, key)


@pytest.mark.parametrize("nrows", [10**12, -1, "3", 2.0, True])
def test_a_chunk_row_count_that_is_wrong(ds_path, nrows):
    key = first_chunk(ds_path, "text")
    forge_chunk(ds_path, key, lambda meta, _: meta.update(nrows=nrows))
    assert_refused(ds_path, key)


def test_a_compressed_buffer_declaring_a_huge_size(ds_path):
    key = first_chunk(ds_path, "metadata")
    meta, buffers, codec = decode(ds_path, key)
    assert codec == "lz4"
    parts = envelope.pack_parts(envelope.MAGIC_CHUNK, meta, buffers, codec)
    record = msgpack.unpackb(parts[1], raw=False)
    record["buffers"][0][5] = 10**12  # raw_nbytes: lz4 would allocate it before failing
    header = msgpack.packb(record, use_bin_type=True)
    prefix = envelope.PREFIX.pack(envelope.MAGIC_CHUNK, 1, 0, len(header), envelope.checksum(header))
    pad = b"\0" * (-(len(prefix) + len(header)) % envelope.ALIGN)
    with open(file_of(ds_path, key), "wb") as f:
        f.write(prefix + header + pad + b"".join(bytes(p) for p in parts[3:]))
    assert_refused(ds_path, key)


# -- states ----------------------------------------------------------------------------------------
def forge_state(path: str, edit) -> str:
    key = working_state(path)
    meta, buffers, codec = decode(path, key)
    edit(meta)
    write(path, key, meta, buffers, codec)
    return key


def tensor_entry(record: dict, name: str) -> dict:
    return next(t for t in record["tensors"] if t["meta"]["name"] == name)


@pytest.mark.parametrize("rows", [10**12, 2**63 - 1, 0, -1, "5", 5.0, None])
def test_a_state_chunk_row_count(ds_path, capsys, rows):
    key = forge_state(ds_path, lambda r: tensor_entry(r, "embedding")["chunk_rows"].__setitem__(0, rows))
    assert_refused(ds_path, key, capsys)


def test_a_state_declaring_a_huge_tensor_consistently(ds_path):
    """Rows and byte sizes both huge and in agreement: the column read cannot allocate, and says so."""

    def huge(record):
        entry = tensor_entry(record, "embedding")
        entry["chunk_rows"][0] = 10**12
        entry["chunk_nbytes"][0] = 10**12 * 8 * 4 + 4096  # 8 float32 per row, plus the header
    forge_state(ds_path, huge)
    ds = tensordb.load(ds_path, read_only=True)
    got, err = guarded(lambda: ds.embedding.numpy())
    assert isinstance(err, TensorDBError) and "embedding" in str(err), repr(err)
    got, err = guarded(lambda: ds.embedding[0].numpy())
    assert isinstance(err, DataCorruptionError), repr(err)


@pytest.mark.parametrize("shape", [[10**6, 10**6], [-1], ["8"], 8, [2**63 - 1]])
def test_a_state_row_shape(ds_path, shape):
    key = forge_state(ds_path, lambda r: tensor_entry(r, "embedding")["meta"].update(shape=shape))
    assert_refused(ds_path, key)


@pytest.mark.parametrize("field, value", [
    ("chunk_keys", 5), ("chunk_rows", 5), ("chunk_nbytes", 5), ("chunk_checksums", 5), ("meta", 5),
    ("chunk_keys", [5]), ("chunk_checksums", ["x"]), ("chunk_checksums", [-1]),
])
def test_a_state_field_of_the_wrong_type(ds_path, capsys, field, value):
    key = forge_state(ds_path, lambda r: tensor_entry(r, "text").update({field: value}))
    assert_refused(ds_path, key, capsys)


@pytest.mark.parametrize("field, value", [
    ("name", 5), ("htype", 5), ("dtype", 5), ("dtype", "S0"), ("compression", "zstd"), ("chunk_bytes", "x"),
    ("chunk_bytes", -1), ("class_names", 5), ("class_names", [5]), ("dim", "8"),
])
def test_a_state_meta_field_of_the_wrong_type(ds_path, field, value):
    key = forge_state(ds_path, lambda r: tensor_entry(r, "embedding")["meta"].update({field: value}))
    assert_refused(ds_path, key)


@pytest.mark.parametrize("value", [5, [5], {"x": 1}, None])
def test_a_state_tensors_list_of_the_wrong_type(ds_path, value):
    key = forge_state(ds_path, lambda r: r.update(tensors=value))
    assert_refused(ds_path, key)


# -- commits, refs, marker ---------------------------------------------------------------------------
def commit_keys(path: str) -> list[str]:
    return [f"commits/{name}" for name in os.listdir(os.path.join(path, "commits"))]


@pytest.mark.parametrize("field, value", [
    ("time", 1e30), ("time", "yesterday"), ("time", float("nan")), ("time", float("inf")), ("time", -1.0),
    ("time", None), ("message", 5), ("branch", None), ("parent", 5), ("state", 5), ("id", 5),
])
def test_a_commit_field(ds_path, capsys, field, value):
    key = commit_keys(ds_path)[0]
    meta, buffers, codec = decode(ds_path, key)
    meta[field] = value
    write(ds_path, key, meta, buffers, codec)
    assert_refused(ds_path, key, capsys)


@pytest.mark.parametrize("edit", [
    lambda r: r["branches"]["main"].update(head=5),
    lambda r: r["branches"]["main"].update(state=5),
    lambda r: r["branches"].update(main=5),
    lambda r: r.update(branches=5),
    lambda r: r.update(branches=[1]),
], ids=["head-int", "state-int", "branch-int", "branches-int", "branches-list"])
def test_a_refs_field(ds_path, capsys, edit):
    meta, buffers, codec = decode(ds_path, mf.REFS_KEY)
    edit(meta)
    write(ds_path, mf.REFS_KEY, meta, buffers, codec)
    assert_refused(ds_path, mf.REFS_KEY, capsys)


def test_a_huge_sparse_refs_file(ds_path):
    with open(file_of(ds_path, mf.REFS_KEY), "r+b") as f:
        f.truncate(20 << 30)  # sparse: no disk used, but a whole read would allocate 20 GB
    assert_refused(ds_path, mf.REFS_KEY)


@pytest.mark.parametrize("edit", [lambda r: r.update(created="x"), lambda r: r.update(format=5),
                                  lambda r: r.update(created=float("nan"))], ids=["created", "format", "nan"])
def test_a_dataset_marker_field(ds_path, edit):
    meta, buffers, codec = decode(ds_path, mf.DATASET_KEY)
    edit(meta)
    write(ds_path, mf.DATASET_KEY, meta, buffers, codec)
    report, err = guarded(lambda: tensordb.verify(ds_path))
    assert err is None and any(mf.DATASET_KEY in p for p in report.problems), (err, report)
    with pytest.raises(TensorDBError):
        tensordb.load(ds_path, read_only=True)


def test_the_pristine_dataset_reads_back(pristine):
    path, expected = pristine
    assert read_everything(path) == expected
    assert tensordb.verify(path).ok
    assert os.path.getsize(file_of(path, mf.REFS_KEY)) < envelope.MAX_RECORD_BYTES


# -- attachments -------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [[None], 5])
def test_an_attachment_arrays_table_of_the_wrong_type(ds_path, value):
    key = "attachments/notes/readme"
    meta, buffers, codec = decode(ds_path, key)
    meta["arrays"] = value
    write(ds_path, key, meta, buffers, codec)
    ds = tensordb.load(ds_path, read_only=True)
    with pytest.raises(DataCorruptionError, match="malformed"):
        ds.get_attachment("notes/readme")
