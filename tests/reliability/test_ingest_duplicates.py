"""ingest_jsonl never stores an id twice: not from one file, and not from a rerun after a bad line."""

from __future__ import annotations

import json

import pytest

import tensordb
from tensordb.errors import SampleError


def _write_lines(path, records) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


def _ids(path: str) -> list[str]:
    return tensordb.load(path, read_only=True).id.numpy(aslist=True)


def test_duplicate_ids_within_a_file_are_skipped_and_reported(tmp_path):
    source = _write_lines(tmp_path / "a.jsonl", [{"id": "a", "text": "1"}, {"id": "b", "text": "2"},
                                                {"id": "a", "text": "again"}])
    with pytest.warns(UserWarning, match=r"skipped 1 lines .*\['a'\]"):
        tensordb.ingest_jsonl(source, str(tmp_path / "db"), progress=False).close()
    ds = tensordb.load(str(tmp_path / "db"), read_only=True)
    assert ds.id.numpy(aslist=True) == ["a", "b"]
    assert ds.text.numpy(aslist=True) == ["1", "2"]  # the first line of an id wins


def test_rerun_after_a_bad_line_stores_each_id_once(tmp_path):
    db = str(tmp_path / "db")
    lines = [{"id": f"d{i}", "text": str(i)} for i in range(5)]
    broken = _write_lines(tmp_path / "broken.jsonl", lines[:3] + ["{not json"] + lines[3:])
    with pytest.raises(SampleError, match="line 4: not valid JSON"):
        tensordb.ingest_jsonl(broken, db, batch_size=2, progress=False)
    stored = _ids(db)
    assert stored == ["d0", "d1"]  # the batch before the bad line is durable
    fixed = _write_lines(tmp_path / "fixed.jsonl", lines)
    with pytest.warns(UserWarning, match="skipped 2 lines"):
        tensordb.ingest_jsonl(fixed, db, batch_size=2, progress=False).close()
    assert _ids(db) == [f"d{i}" for i in range(5)]


def test_on_duplicate_error_names_the_line_and_the_id(tmp_path):
    db = str(tmp_path / "db")
    first = _write_lines(tmp_path / "first.jsonl", [{"id": "x", "text": "1"}])
    tensordb.ingest_jsonl(first, db, progress=False).close()
    again = _write_lines(tmp_path / "again.jsonl", [{"id": "y", "text": "2"}, {"id": "x", "text": "3"}])
    with pytest.raises(SampleError, match=r"line 2: id 'x' is already stored"):
        tensordb.ingest_jsonl(again, db, on_duplicate="error", progress=False)
    assert _ids(db) == ["x"]


def test_on_duplicate_must_be_known(tmp_path):
    source = _write_lines(tmp_path / "a.jsonl", [{"id": "a", "text": "1"}])
    with pytest.raises(ValueError, match="on_duplicate must be one of"):
        tensordb.ingest_jsonl(source, str(tmp_path / "db"), on_duplicate="keep")
