"""Datasets written by every earlier release open, read back exactly, verify, and take new writes."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import tensordb
from tests.compat.release_dataset import DATASETS_DIR, FIRST_ROWS, INDEXES, SECOND_ROWS, TEXT_INDEXES, expected_rows

RELEASES = sorted(os.listdir(DATASETS_DIR))


def _assert_rows(ds, expected: dict[str, list]) -> None:
    assert len(ds) == len(expected["id"])
    for name, values in expected.items():
        got = ds[name].numpy(aslist=True)
        if name == "label":
            got = [ds.label.meta.class_names[int(np.asarray(v).reshape(-1)[0])] for v in got]
        for a, b in zip(got, values, strict=True):
            if isinstance(b, np.ndarray):
                np.testing.assert_array_equal(np.asarray(a), b)
            else:
                assert a == b, name


def test_a_dataset_of_each_release_is_kept():
    # Bumping the version means writing this release's dataset: python -m tests.compat.release_dataset
    assert {"v0.1.0", f"v{tensordb.__version__}"} <= set(RELEASES)


def _at_least(release: str, version: tuple[int, int, int]) -> bool:
    return tuple(int(p) for p in release.removeprefix("v").split(".")) >= version


def _has_indexes(release: str) -> bool:
    return _at_least(release, (0, 3, 0))


def _assert_indexes(ds, release: str) -> None:
    """A release with indexes kept them, and a search and a filter through them match the exact scan."""
    if not _has_indexes(release):
        assert ds.indexes == {}
        return
    text_indexes = TEXT_INDEXES if _at_least(release, (0, 4, 0)) else {}
    assert {name: info["kind"] for name, info in ds.indexes.items()} == {**INDEXES, **text_indexes}
    if text_indexes:  # every text holds "chunk" and "café" once (its number is too short a word): all tie
        ranked = ds.query("select id, bm25_similarity(text, 'café chunk') as s order by s desc limit 3")
        assert ranked.id.numpy(aslist=True) == ["doc-0", "doc-1", "doc-2"]
        assert np.all(ranked.s.numpy() > 0) and len(set(ranked.s.numpy().tolist())) == 1
    query = ds.embedding.numpy()[3]
    tql = (f"select * where metadata['group'] == 1 order by cosine_similarity(embedding, "
           f"ARRAY[{', '.join(repr(float(v)) for v in query)}]) desc limit 3")
    indexed, exact = ds.query(tql), ds.query(tql, exact=True)
    assert indexed.id.numpy(aslist=True) == exact.id.numpy(aslist=True) == ["doc-4", "doc-1", "doc-7"][: len(indexed)]


@pytest.mark.parametrize("release", RELEASES)
def test_release_dataset_reads_back(release):
    path = os.path.join(DATASETS_DIR, release)
    ds = tensordb.load(path, read_only=True)
    _assert_rows(ds, expected_rows(FIRST_ROWS + SECOND_ROWS))
    messages = [entry["message"] for entry in ds.log(show=False)]
    assert messages == ["second", "first"]
    first = ds.log(show=False)[-1]["commit"]
    _assert_rows(tensordb.load(f"{path}@{first}"), expected_rows(FIRST_ROWS))
    side = tensordb.load(f"{path}@side", read_only=True)
    full = expected_rows(FIRST_ROWS + SECOND_ROWS)
    _assert_rows(side, {name: values[1:] for name, values in full.items()})
    _assert_indexes(ds, release)
    meta, arrays = ds.get_attachment("notes/readme")
    assert meta["written_by"] == release.removeprefix("v")
    np.testing.assert_array_equal(arrays["ones"], np.ones(3, np.float32))
    assert tensordb.verify(path).ok


@pytest.mark.parametrize("release", RELEASES)
def test_release_dataset_takes_new_writes(release, tmp_path):
    path = str(tmp_path / release)
    shutil.copytree(os.path.join(DATASETS_DIR, release), path)
    ds = tensordb.load(path)
    extra = expected_rows(FIRST_ROWS + SECOND_ROWS + 1)
    ds.append({name: values[-1] for name, values in extra.items()})
    ds.text[0] = "rewritten"
    ds.commit("written by this release")
    ds.close()
    reopened = tensordb.load(path, read_only=True)
    extra["text"][0] = "rewritten"
    _assert_rows(reopened, extra)
    assert tensordb.verify(path).ok
