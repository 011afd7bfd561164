"""Forging dataset files with valid checksums: decode a real file, change its content, pack it again.

Shared by the forged-file tests. ``rebind`` also rewrites every state that
references a forged chunk with the new chunk's checksum and size, so a forgery
gets past the manifest binding and reaches the decoders behind it; ``rebind_index``
does the same for an index file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np

import tensordb
from tensordb.format import envelope
from tensordb.format import manifest as mf

MAGICS = {
    "chunks/": envelope.MAGIC_CHUNK,
    "states/": envelope.MAGIC_STATE,
    "commits/": envelope.MAGIC_COMMIT,
    "attachments/": envelope.MAGIC_BLOB,
    mf.INDEX_PREFIX: envelope.MAGIC_INDEX,
    mf.REFS_KEY: envelope.MAGIC_REFS,
    mf.DATASET_KEY: envelope.MAGIC_DATASET,
}


def file_of(path: str, key: str) -> str:
    return os.path.join(path, *key.split("/"))


def magic_of(key: str) -> bytes:
    return next(m for prefix, m in MAGICS.items() if key.startswith(prefix))


def decode(path: str, key: str) -> tuple[dict[str, Any], dict[str, bytes], str | None]:
    """A file's header record, its decoded buffers and its codec."""
    data = open(file_of(path, key), "rb").read()
    magic = magic_of(key)
    header = envelope.read_header(lambda s, n: data[s : s + n], key, magic)
    meta, buffers = envelope.unpack(data, key, magic)
    codec = next((ref.codec for ref in header.buffers.values()), None)
    return meta, {k: bytes(v) for k, v in buffers.items()}, codec


def write(path: str, key: str, meta: dict[str, Any], buffers: dict[str, bytes], codec: str | None) -> bytes:
    """Pack ``meta`` and ``buffers`` (valid checksums) over the file ``key``; returns the new file."""
    data = envelope.pack(magic_of(key), meta, buffers, codec)
    with open(file_of(path, key), "wb") as f:
        f.write(data)
    return data


def write_raw_header(path: str, key: str, header: bytes) -> None:
    """A file whose msgpack header is ``header`` as given (for values msgpack will not pack, like deep nesting)."""
    prefix = envelope.PREFIX.pack(magic_of(key), envelope.format_version(magic_of(key)), 0, len(header),
                                  envelope.checksum(header))
    head = prefix + header
    with open(file_of(path, key), "wb") as f:
        f.write(head + b"\0" * (-len(head) % envelope.ALIGN))


def states_of(path: str) -> list[str]:
    return [f"states/{name}" for name in os.listdir(os.path.join(path, "states"))]


def rebind(path: str, chunk_key: str, data: bytes) -> None:
    """Point every state's reference to ``chunk_key`` at its new content ``data`` (checksum and size)."""
    for key in states_of(path):
        state = mf.decode_state(open(file_of(path, key), "rb").read(), key)
        tensors = {}
        for name, t in state.tensors.items():
            crcs, sizes = list(t.chunk_checksums), list(t.chunk_nbytes)
            for i, k in enumerate(t.chunk_keys):
                if k == chunk_key:
                    crcs[i], sizes[i] = envelope.header_checksum(data), len(data)
            tensors[name] = mf.TensorState(t.meta, t.chunk_keys, t.chunk_rows, tuple(sizes), tuple(crcs))
        with open(file_of(path, key), "wb") as f:
            f.write(mf.encode_state(mf.DatasetState(tensors, state.info, state.indexes)))


def rebind_index(path: str, index_key: str, data: bytes) -> None:
    """Point every state's reference to index file ``index_key`` at its new content ``data`` (checksum and size)."""
    for key in states_of(path):
        with open(file_of(path, key), "rb") as f:
            state = mf.decode_state(f.read(), key)
        indexes = {name: dataclasses.replace(ref, nbytes=len(data), checksum=envelope.header_checksum(data))
                   if ref.key == index_key else ref for name, ref in state.indexes.items()}
        with open(file_of(path, key), "wb") as f:
            f.write(mf.encode_state(state.with_indexes(indexes)))


def forge_chunk(path: str, key: str, edit: Callable[[dict, dict], None], bind: bool = True) -> None:
    """Apply ``edit(meta, buffers)`` to chunk ``key`` and pack it again; ``bind`` rebinds the states to it."""
    meta, buffers, codec = decode(path, key)
    edit(meta, buffers)
    data = write(path, key, meta, buffers, codec)
    if bind:
        rebind(path, key, data)


def make_dataset(path: str) -> None:
    """Four kinds of chunk (fixed, blob, compressed blob with nulls, ragged), a commit and an attachment."""
    ds = tensordb.empty(path)
    ds.create_tensor("embedding", htype="embedding", dtype="float32", max_chunk_size=1024)
    ds.create_tensor("text", htype="text", max_chunk_size=1024)
    ds.create_tensor("metadata", htype="json", max_chunk_size=1024, chunk_compression="lz4")
    ds.create_tensor("sizes", htype="generic", dtype="int32", max_chunk_size=1024)
    rng = np.random.default_rng(3)
    n = 40
    ds.extend({
        "embedding": rng.standard_normal((n, 8)).astype(np.float32),
        "text": [f"text {i}" for i in range(n)],
        "metadata": [None if i % 5 == 0 else {"i": i, "tags": ["a", "b"][: i % 3]} for i in range(n)],
        "sizes": [np.arange(i % 4 + 1, dtype=np.int32) for i in range(n)],
    })
    ds.commit("first")
    ds.extend({"embedding": np.ones((3, 8), np.float32), "text": ["a", "b", "c"], "metadata": [{"k": 1}, None, [2]],
               "sizes": [np.arange(5, dtype=np.int32)] * 3})
    ds.commit("second")
    ds.put_attachment("notes/readme", {"by": "test"}, {"ones": np.ones(3, np.float32)})
    ds.close()


def read_everything(path: str) -> dict:
    """Open the dataset and read what a user can reach: every tensor (both read paths, per row), log, commits."""
    ds = tensordb.load(path, read_only=True)
    out: dict[str, Any] = {}
    for name, t in ds.tensors.items():
        out[name] = [_plain(v) for v in t.numpy(aslist=True)]
        out[f"{name} rows"] = [_plain(t[i].numpy()) for i in range(len(t))]
        if t.meta.htype not in ("text", "json", "list", "id") and t.meta.shape and None not in t.meta.shape:
            out[f"{name} fast"] = _plain(t.numpy())
    out["log"] = [(e["commit"], e["message"], e["time"]) for e in ds.log(show=False)]
    for cid, *_ in out["log"]:
        old = tensordb.load(f"{path}@{cid}", read_only=True)
        out[f"commit {cid}"] = {name: [_plain(v) for v in t.numpy(aslist=True)] for name, t in old.tensors.items()}
    out["attachments"] = {n: (m, {k: _plain(a) for k, a in arr.items()})
                          for n in ds.list_attachments() for m, arr in [ds.get_attachment(n)]}
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    return value


