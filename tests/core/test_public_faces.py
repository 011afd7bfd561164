"""The faces core shows the layers above: attachment requirements, row positions, virtual columns, revisions."""

from __future__ import annotations

import numpy as np
import pytest

import tensordb
from tensordb.errors import InvalidNameError, ReadOnlyError


@pytest.fixture
def ds(tmp_path):
    ds = tensordb.empty(str(tmp_path / "ds"))
    ds.create_tensor("n", htype="generic", dtype="int64")
    ds.create_tensor("embedding", htype="embedding", dtype="float32")
    ds.extend({"n": [0, 1, 2, 3], "embedding": np.eye(4, dtype=np.float32)})
    yield ds
    ds.close()


def test_verify_reports_a_missing_required_attachment(ds):
    ds.put_attachment("models/a", {"kind": "model"})
    ds.put_attachment("jobs/a", {"status": "completed"}, requires=["models/a"])
    assert ds.verify().ok
    ds.delete_attachment("models/a")
    problems = ds.verify().problems
    assert len(problems) == 1
    assert "'jobs/a' requires 'models/a'" in problems[0] and "attachments/models/a" in problems[0]


def test_a_record_requiring_nothing_verifies_alone(ds):
    ds.put_attachment("notes/x", {"a": 1})
    assert ds.verify().ok
    assert ds.get_attachment("notes/x") == ({"a": 1}, {})


def test_required_names_are_checked_before_writing(ds):
    with pytest.raises(InvalidNameError):
        ds.put_attachment("jobs/b", {}, requires=["../escape"])
    assert ds.list_attachments() == []


def test_row_positions_and_virtual_columns_of_a_query(ds):
    assert ds.row_positions.tolist() == [0, 1, 2, 3]
    view = ds.query("select * order by dot(embedding, ARRAY[0, 0, 1, 0]) desc limit 2")
    assert view.row_positions.tolist()[0] == 2
    assert set(view.virtual_columns) == {"score"}
    assert view.column_names() == ["n", "embedding", "score"]
    assert ds[[3, 1]].row_positions.tolist() == [3, 1]


def test_revision_changes_with_every_write_to_the_tensor(ds):
    before = ds.n.revision
    ds.embedding[0] = np.ones(4, np.float32)
    assert ds.n.revision == before  # another tensor's write leaves it alone
    ds.n[0] = 7
    assert ds.n.revision != before


def test_check_writable(ds, tmp_path):
    ds.check_writable("write")
    ds.commit("one")
    reader = tensordb.load(ds.path, read_only=True)
    with pytest.raises(ReadOnlyError, match="cannot train: .* read-only"):
        reader.check_writable("train")
