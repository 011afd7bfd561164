"""A folder that is not a dataset is never deleted, replaced or written to; a copy never destroys its source."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

import tensordb
from tensordb import VectorStore
from tensordb.errors import DatasetExistsError, DatasetNotFoundError, ForeignFilesError, InvalidNameError
from tensordb.integrations.langchain import TensorDB
from tensordb.integrations.llama_index import TensorDBVectorStore


def _project_folder(root) -> dict[str, bytes]:
    """A folder holding someone's work: a .git directory, a source file and an empty folder."""
    (root / ".git" / "objects").mkdir(parents=True)
    (root / ".git" / "HEAD").write_bytes(b"ref: refs/heads/main\n")
    (root / "main.py").write_bytes(b"print('hello')\n")
    (root / "empty_dir").mkdir()
    return _snapshot(root)


def _snapshot(root) -> dict[str, bytes]:
    found = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(dirpath, name), root) + "/"] = b""
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = f.read()
    return found


def _tiny_dataset(path: str) -> None:
    ds = tensordb.empty(path)
    ds.create_tensor("text", htype="text")
    ds.extend({"text": ["a", "b"]})
    ds.commit("two rows")
    ds.close()


def _embed(texts):
    return np.ones((len(texts), 4), dtype=np.float32)


class _LangChainEmbedding:
    def embed_documents(self, texts):
        return _embed(texts).tolist()

    def embed_query(self, text):
        return _embed([text])[0].tolist()


CREATORS = {
    "empty": lambda p: tensordb.empty(p, overwrite=True),
    "dataset": lambda p: tensordb.dataset(p, overwrite=True),
    "dataset-no-overwrite": lambda p: tensordb.dataset(p),
    "VectorStore": lambda p: VectorStore(p, overwrite=True),
    "VectorStore-no-overwrite": lambda p: VectorStore(p),
    "from_arrow": lambda p: tensordb.from_arrow(pa.table({"x": [1, 2]}), p, overwrite=True, progress=False),
    "ingest_jsonl": lambda p: tensordb.ingest_jsonl(os.devnull, p, overwrite=True, progress=False),
    "langchain": lambda p: TensorDB(p, _LangChainEmbedding(), overwrite=True),
    "llama_index": lambda p: TensorDBVectorStore(p, overwrite=True),
}


@pytest.mark.parametrize("create", list(CREATORS))
def test_creating_over_a_project_folder_deletes_nothing(tmp_path, create):
    root = tmp_path / "project"
    root.mkdir()
    before = _project_folder(root)
    with pytest.raises(ForeignFilesError) as caught:
        CREATORS[create](str(root))
    message = str(caught.value)
    assert str(root) in message and "'.git'" in message and "'main.py'" in message
    assert "Nothing was created or deleted" in message
    assert _snapshot(root) == before  # not even a LOCK file


def test_deepcopy_over_a_project_folder_deletes_nothing(tmp_path):
    source = str(tmp_path / "source")
    _tiny_dataset(source)
    root = tmp_path / "project"
    root.mkdir()
    before = _project_folder(root)
    with pytest.raises(ForeignFilesError):
        tensordb.deepcopy(source, str(root), overwrite=True, progress=False)
    assert _snapshot(root) == before


@pytest.mark.parametrize("opener", ["load", "load-read-only", "verify", "exists"])
def test_opening_a_folder_that_is_not_a_dataset_writes_nothing(tmp_path, opener):
    root = tmp_path / "project"
    root.mkdir()
    before = _project_folder(root)
    if opener == "exists":
        assert tensordb.exists(str(root)) is False
    elif opener == "verify":
        assert not tensordb.verify(str(root)).ok
    else:
        with pytest.raises(DatasetNotFoundError):
            tensordb.load(str(root), read_only=opener == "load-read-only")
    assert _snapshot(root) == before


def test_loading_a_missing_path_creates_nothing(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(DatasetNotFoundError):
        tensordb.load(str(missing))
    assert not missing.exists()


def test_overwrite_replaces_a_dataset_and_an_empty_folder(tmp_path):
    path = str(tmp_path / "ds")
    _tiny_dataset(path)
    ds = tensordb.empty(path, overwrite=True)
    assert list(ds.tensors) == [] and ds.log(show=False) == []
    ds.close()
    (tmp_path / "empty").mkdir()
    assert len(tensordb.empty(str(tmp_path / "empty"))) == 0


def test_without_overwrite_a_dataset_is_kept(tmp_path):
    path = str(tmp_path / "ds")
    _tiny_dataset(path)
    with pytest.raises(DatasetExistsError, match="already holds a dataset"):
        tensordb.empty(path)
    assert tensordb.load(path, read_only=True).text.numpy(aslist=True) == ["a", "b"]


def test_a_stray_file_inside_a_dataset_blocks_overwrite(tmp_path):
    path = tmp_path / "ds"
    _tiny_dataset(str(path))
    (path / "notes.txt").write_text("mine")
    with pytest.raises(ForeignFilesError, match="'notes.txt'"):
        tensordb.empty(str(path), overwrite=True)
    assert tensordb.load(str(path), read_only=True).text.numpy(aslist=True) == ["a", "b"]
    assert (path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("target", ["same", "alias", "inside", "around"])
def test_deepcopy_onto_or_into_its_source_is_refused(tmp_path, target):
    source = tmp_path / "src"
    _tiny_dataset(str(source))
    before = _snapshot(source)
    if target == "alias":
        os.symlink(source, tmp_path / "alias")
    dest = {
        "same": source,
        "alias": tmp_path / "alias",
        "inside": source / "copy",
        "around": tmp_path,
    }[target]
    with pytest.raises((InvalidNameError, ForeignFilesError), match="deepcopy|not part of a tensordb dataset"):
        tensordb.deepcopy(str(source), str(dest), overwrite=True, progress=False)
    assert _snapshot(source) == before
    assert tensordb.load(str(source), read_only=True).text.numpy(aslist=True) == ["a", "b"]
    assert tensordb.verify(str(source)).ok


@pytest.mark.parametrize("name", ["my@db", "v@1.0", "mem://team@x"])
def test_a_path_with_at_in_its_last_part_is_refused_at_creation(tmp_path, name):
    path = name if name.startswith("mem://") else str(tmp_path / name)
    with pytest.raises(InvalidNameError, match="'@'"):
        tensordb.empty(path)
    with pytest.raises(InvalidNameError, match="'@'"):
        VectorStore(path)
    if not name.startswith("mem://"):
        assert not os.path.exists(path)


def test_at_in_a_parent_folder_is_fine(tmp_path):
    path = str(tmp_path / "team@corp" / "db")
    _tiny_dataset(path)
    assert tensordb.load(path, read_only=True).text.numpy(aslist=True) == ["a", "b"]
