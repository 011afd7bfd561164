"""Forged files, drawn by hypothesis: valid checksums, hostile content, for every kind of file.

A real file is decoded, one field of its header record is replaced (wrong types,
negative or huge numbers, nesting, wrong lengths, dtypes like ``"S0"`` or
structured ones), a list shortened or lengthened, a key dropped, or a buffer cut
or replaced; it is packed again with valid checksums under the same key. Then
everything is read (every tensor through both read paths and per row, the log,
every commit, attachments) and ``tensordb.verify`` runs.

* A forged chunk must give exactly the original data or ``DataCorruptionError``
  naming the tensor and the chunk: the state's reference binds its content.
* With the states rebound to the forged chunk, and for forged records (states,
  commits, refs, the marker, attachments), a forgery may be a valid file saying
  something else, so any result is allowed except an error that is not a
  ``TensorDBError``.

Always: ``verify`` never raises, nothing hangs (watchdog) and nothing allocates
more than a bound (tracemalloc peak), whatever sizes the forgery declares.
"""

from __future__ import annotations

import shutil
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensordb
from tensordb.errors import DataCorruptionError, TensorDBError
from tensordb.format import manifest as mf

from .forging import decode, make_dataset, read_everything, rebind, write
from .helpers import FIGURES, assert_verify_finds, guarded, scale

EXAMPLES = scale(30, 300)
KINDS = ["chunk:embedding", "chunk:text", "chunk:metadata", "chunk:sizes", "state", "commit", "refs", "marker",
         "attachment"]
BAD_DTYPES = ["S0", "O", "V0", "<U0", "<U4", "f4,f4", "(2,)f4", "<M8[s]", "c16", "|V8", "", "<f4", "<i8", "?"]


def nested(depth: int) -> Any:
    value: Any = None
    for _ in range(depth):
        value = [value]
    return value


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=8),
    st.binary(max_size=8), st.sampled_from(BAD_DTYPES), st.sampled_from([10**12, 2**63 - 1, -1, 0, 1, 1e30, -1e30]),
)
values = st.one_of(
    st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=3), max_leaves=8),
    st.integers(1, 400).map(nested),
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("forged-property") / "ds")
    make_dataset(path)
    return path, read_everything(path)


def file_for(path: str, kind: str, pick: int) -> str:
    ds = tensordb.load(path, read_only=True)
    if kind.startswith("chunk:"):
        keys = ds._state.tensors[kind.split(":")[1]].chunk_keys
    elif kind == "state":
        keys = (ds._checkout.state_key,)
    elif kind == "commit":
        keys = tuple(mf.COMMIT_PREFIX + e["commit"] for e in ds.log(show=False))
    elif kind == "refs":
        keys = (mf.REFS_KEY,)
    elif kind == "marker":
        keys = (mf.DATASET_KEY,)
    else:
        keys = tuple(f"attachments/{n}" for n in ds.list_attachments())
    return keys[pick % len(keys)]


def paths_in(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a decoded record: dict keys and list positions, nested."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths_in(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths_in(v, (*prefix, i))
    return out


def mutate_record(draw, record: dict) -> str:
    places = paths_in(record)
    place = draw(st.sampled_from(places))
    parent = record
    for step in place[:-1]:
        parent = parent[step]
    last, old = place[-1], parent[place[-1]]
    ops = ["replace", "drop"] + (["shorten", "lengthen", "empty"] if isinstance(old, list) else [])
    op = draw(st.sampled_from(ops))
    if op == "replace":
        parent[last] = draw(values)
    elif op == "drop":
        del parent[last]
    elif op == "shorten":
        del old[draw(st.integers(0, max(0, len(old) - 1))) :]
    elif op == "lengthen":
        old.append(draw(values) if draw(st.booleans()) or not old else old[-1])
    else:
        parent[last] = []
    return f"{op} {place}"


def mutate_buffers(draw, buffers: dict[str, bytes]) -> str:
    name = draw(st.sampled_from(sorted(buffers)))
    op = draw(st.sampled_from(["cut", "replace", "drop"]))
    if op == "cut":
        buffers[name] = buffers[name][: draw(st.integers(0, max(0, len(buffers[name]) - 1)))]
    elif op == "replace":
        buffers[name] = draw(st.binary(max_size=64))
    else:
        del buffers[name]
    return f"{op} buffer {name!r}"


@st.composite
def forgeries(draw, kind: str):
    return draw(st.integers(0, 7)), draw(st.data()), (kind.startswith("chunk:") and draw(st.booleans()))


@pytest.mark.parametrize("kind", KINDS)
def test_forged_file(pristine, tmp_path, kind):
    source, expected = pristine

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(forgeries(kind))
    def check(forgery):
        pick, data, bind = forgery
        path = str(tmp_path / uuid.uuid4().hex)
        shutil.copytree(source, path)
        try:
            key = file_for(path, kind, pick)
            meta, buffers, codec = decode(path, key)
            if buffers and data.draw(st.booleans()):
                how = mutate_buffers(data.draw, buffers)
            else:
                how = mutate_record(data.draw, meta)
            try:
                forged = write(path, key, meta, buffers, codec)
            except (TypeError, ValueError, OverflowError):  # msgpack cannot pack the drawn value: nothing to test
                return
            if bind:
                rebind(path, key, forged)
            where = f"{key}: {how}{' (states rebound)' if bind else ''}"
            got, err = guarded(lambda: read_everything(path))
            assert err is None or isinstance(err, TensorDBError), f"{where}: {type(err).__name__}: {err}"
            if kind.startswith("chunk:") and not bind:
                if err is None:
                    assert got == expected, f"{where}: a forged chunk read back as other data"
                else:
                    assert isinstance(err, DataCorruptionError) and key in str(err), f"{where}: {err}"
                    assert f"tensor {kind.split(':')[1]!r}" in str(err), f"{where}: {err}"
            assert_verify_finds(path, key, where, expected=kind.startswith("chunk:") and not bind and got is None)
            FIGURES["forged: files forged"] += 1
            FIGURES["forged: refused on read" if got is None else "forged: read without error"] += 1
        finally:
            shutil.rmtree(path, ignore_errors=True)

    check()
