"""Shared pieces of the reliability suite: run length, figures, and checkable row values.

Row values are designed so any reader can tell a value some completed write
produced from a torn or invented one: row ``doc`` at version ``v`` has the text
``"<doc>:v<v>"``, the metadata ``{"doc": doc, "v": v}`` and an embedding that is a
pure function of ``(doc, v)``.
"""

from __future__ import annotations

import collections
import faulthandler
import json
import os
import sys
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

import tensordb

LONG = os.environ.get("TENSORDB_LONG") == "1"
DIM = 16

#: Counters reported at the end of the run (kills survived, faults injected, inputs fuzzed, ...).
FIGURES: collections.Counter = collections.Counter()


def scale(ci: int, long: int) -> int:
    return long if LONG else ci


def vector(doc: str, version: int, dim: int = DIM) -> np.ndarray:
    """The embedding of ``doc`` at ``version``: deterministic, finite, never all zero."""
    rng = np.random.default_rng(zlib.crc32(f"{doc}:{version}".encode()))
    v = rng.standard_normal(dim).astype(np.float32)
    v[0] = abs(v[0]) + 0.5
    return v


def text_of(doc: str, version: int) -> str:
    return f"{doc}:v{version}"


def meta_of(doc: str, version: int) -> dict[str, Any]:
    return {"doc": doc, "v": version}


def parse_text(text: str) -> tuple[str, int]:
    doc, _, version = text.rpartition(":v")
    return doc, int(version)


def store_rows(ds: Any) -> list[tuple[str, str, str, bytes]]:
    """A vector-store dataset as ``[(id, text, metadata json, embedding bytes)]`` in row order."""
    ids = ds.id.numpy(aslist=True)
    texts = ds.text.numpy(aslist=True)
    metas = ds.metadata.numpy(aslist=True)
    embs = ds.embedding.numpy()
    assert len(ids) == len(texts) == len(metas) == len(embs), "tensors of one snapshot differ in length"
    return [(i, t, json.dumps(m, sort_keys=True), e.tobytes()) for i, t, m, e in zip(ids, texts, metas, embs)]


def model_rows(model: list[tuple[str, int]]) -> list[tuple[str, str, str, bytes]]:
    """What :func:`store_rows` must return for a model ``[(doc id, version)]``."""
    return [(d, text_of(d, v), json.dumps(meta_of(d, v), sort_keys=True), vector(d, v).tobytes()) for d, v in model]


def check_row(doc: str, text: str, meta: dict, emb: np.ndarray) -> int:
    """Assert one row is a value some write produced; returns its version."""
    tdoc, version = parse_text(text)
    assert tdoc == doc, f"row {doc!r} has text of {tdoc!r}"
    assert meta == meta_of(doc, version), f"row {doc!r}: metadata {meta} does not match text {text!r}"
    assert np.array_equal(np.asarray(emb, np.float32), vector(doc, version)), f"row {doc!r}: embedding torn"
    return version


#: The suite's datasets are well under 1 MB: no read of a damaged or forged one may allocate more than this.
ALLOC_LIMIT = 64 << 20
#: A read that runs longer than this hangs: the watchdog dumps every thread's stack and exits.
HANG_LIMIT = 120


def guarded(fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """Run ``fn`` under a hang watchdog and an allocation bound; returns (result, error)."""
    faulthandler.dump_traceback_later(HANG_LIMIT, exit=True, file=sys.__stderr__)
    tracemalloc.start()
    try:
        return fn(), None
    except Exception as e:  # the caller judges which errors are allowed
        return None, e
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        faulthandler.cancel_dump_traceback_later()
        assert peak < ALLOC_LIMIT, f"reading a damaged or forged dataset allocated {peak} bytes"


def assert_verify_finds(path: str, key: str, where: str, expected: bool = True) -> None:
    """``verify`` of a damaged or forged dataset never raises, and (when ``expected``) names the file ``key``."""
    report, err = guarded(lambda: tensordb.verify(path))
    assert err is None, f"{where}: verify raised {type(err).__name__}: {err}"
    if expected:
        assert any(key in p for p in report.problems), f"{where}: verify missed it: {report.problems}"
