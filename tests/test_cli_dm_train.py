"""tensordb dm train / dm evaluate: the Deep Memory loop from a qa.jsonl file, and each error it can meet."""

from __future__ import annotations

import json
import sys

import pytest

import tensordb
from tensordb import cli

N_DOCS, N_QUERIES = 24, 16


def run(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _write_qa(path, entries) -> str:
    path.write_text("\n".join(e if isinstance(e, str) else json.dumps(e) for e in entries) + "\n")
    return str(path)


@pytest.fixture
def store(tmp_path):
    """A small hashing-embedded store, and a qa.jsonl (pairs and plain ids) about its chunks."""
    path = str(tmp_path / "store")
    vs = tensordb.VectorStore(path, embedding_function=tensordb.HashingEmbedding(dim=32))
    vs.add(text=[f"chunk {i} is about subject{i} and object{i % 5}" for i in range(N_DOCS)],
           id=[f"c{i}" for i in range(N_DOCS)])
    vs.dataset.commit("chunks")
    vs.close()
    entries = [{"query": f"what about subject{i}?", "relevance": [[f"c{i}", 1.0]] if i % 2 else [f"c{i}"]}
               for i in range(N_QUERIES)]
    return path, _write_qa(tmp_path / "qa.jsonl", entries + [""])


def _state(path):
    ds = tensordb.load(path, read_only=True)
    try:
        return ds.commit_id, len(ds), ds.list_attachments("")
    finally:
        ds.close()


def test_train_then_evaluate_with_a_plot(store, tmp_path, capsys):
    path, qa = store
    code, out, err = run(["dm", "train", path, "--data", qa, "--embedding", "hashing", "--max-seconds", "3"], capsys)
    assert code == 0, err
    assert "training Deep Memory" in err  # the progress bar
    assert "| status" in out and "completed" in out and "recall@10" in out
    assert "k-fold on training queries" in out  # the table says which queries chose the model
    plot = tmp_path / "recall.png"
    code, out, err = run(["dm", "evaluate", path, "--data", qa, "--embedding", "hashing", "--plot", str(plot)], capsys)
    assert code == 0, err
    assert "without Deep Memory" in out and "recall@1 " in out and "recall@100" in out and "16 queries" in out
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "Traceback" not in out + err


def test_train_with_a_validation_file(store, tmp_path, capsys):
    path, qa = store
    val = _write_qa(tmp_path / "val.jsonl", [{"query": "subject3 please", "relevance": ["c3"]},
                                             {"query": "subject5 please", "relevance": ["c5"]}])
    code, out, err = run(["dm", "train", path, "--data", qa, "--validation", val, "--embedding", "hashing",
                          "--max-seconds", "2"], capsys)
    assert code == 0, err
    assert "given validation set (2 queries)" in out


def test_help_documents_the_file_format(capsys):
    with pytest.raises(SystemExit):
        cli.main(["dm", "train", "--help"])
    out = capsys.readouterr().out
    assert '{"query": "how do I open a dataset read-only?", "relevance": [["chunk-007", 1.0]' in out
    assert "plain ids (score 1)" in out and "--embedding" in out


def _assert_clean_error(code, out, err, message):
    assert code == 1
    assert message in err, err
    assert "Traceback" not in out + err


@pytest.mark.parametrize("command", ["train", "evaluate"])
@pytest.mark.parametrize("lines, message", [
    (['{"query": "ok", "relevance": ["c1"]}', "{not json"], "qa.jsonl: line 2: not valid JSON"),
    (['{"query": "ok", "relevance": ["c1"]}', "", '["a list"]'], "qa.jsonl: line 3: expected {\"query\""),
    (['{"query": "ok", "relevance": []}'], 'line 1: "relevance" must be a non-empty list'),
    (['{"query": "ok", "relevance": [["c1", 7]]}'], "line 1: each relevance item must be an id or an [id, score]"),
    (['{"query": "ok", "relevance": ["c1"]}', '{"query": "x", "relevance": [["nowhere", 1.0]]}'],
     "qa.jsonl: line 2: id 'nowhere' is not in the store"),
    ([""], "no queries"),
])
def test_a_bad_data_file_is_a_clean_error_naming_the_line(store, tmp_path, capsys, command, lines, message):
    path, _ = store
    before = _state(path)
    qa = _write_qa(tmp_path / "qa.jsonl", lines)
    _assert_clean_error(*run(["dm", command, path, "--data", qa, "--embedding", "hashing"], capsys), message)
    assert _state(path) == before


def test_a_missing_models_extra_is_a_clean_error(store, capsys, monkeypatch):
    path, qa = store
    before = _state(path)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import sentence_transformers now fails
    code, out, err = run(["dm", "train", path, "--data", qa, "--embedding", "minilm"], capsys)
    _assert_clean_error(code, out, err, 'pip install "tensordb[models]"')
    assert _state(path) == before


def test_minilm_on_a_store_of_another_dimension_is_a_clean_error(store, capsys):
    path, qa = store
    before = _state(path)
    code, out, err = run(["dm", "train", path, "--data", qa, "--embedding", "minilm"], capsys)
    _assert_clean_error(code, out, err, "384-dimensional vectors but the store's embeddings have 32 dimensions")
    assert _state(path) == before


def test_a_plot_in_a_missing_folder_is_a_clean_error_before_any_work(store, tmp_path, capsys):
    path, qa = store
    assert run(["dm", "train", path, "--data", qa, "--embedding", "hashing", "--max-seconds", "1"], capsys)[0] == 0
    before = _state(path)
    code, out, err = run(["dm", "evaluate", path, "--data", qa, "--embedding", "hashing",
                          "--plot", str(tmp_path / "missing" / "r.png")], capsys)
    _assert_clean_error(code, out, err, "does not exist")
    assert _state(path) == before and not (tmp_path / "missing").exists()


def test_evaluate_without_a_trained_model_is_a_clean_error(store, capsys):
    path, qa = store
    _assert_clean_error(*run(["dm", "evaluate", path, "--data", qa, "--embedding", "hashing"], capsys),
                        "no trained Deep Memory model")


def test_a_missing_store_is_not_created(tmp_path, capsys):
    qa = _write_qa(tmp_path / "qa.jsonl", ['{"query": "q", "relevance": ["c1"]}'])
    code, out, err = run(["dm", "train", str(tmp_path / "nothing"), "--data", qa, "--embedding", "hashing"], capsys)
    _assert_clean_error(code, out, err, "no tensordb dataset")
    assert not (tmp_path / "nothing").exists()


def test_a_missing_data_file_is_a_clean_error(store, tmp_path, capsys):
    path, _ = store
    _assert_clean_error(*run(["dm", "train", path, "--data", str(tmp_path / "none.jsonl"), "--embedding", "hashing"],
                             capsys), "none.jsonl")


def test_minilm_trains_a_store_built_with_minilm(tmp_path, capsys):
    path = str(tmp_path / "minilm")
    vs = tensordb.VectorStore(path, embedding_function=tensordb.SentenceTransformerEmbedding("all-MiniLM-L6-v2"))
    vs.add(text=["the writer lock", "chunk compression", "branches and commits", "deep memory training"],
           id=["a", "b", "c", "d"])
    vs.close()
    qa = _write_qa(tmp_path / "qa.jsonl", [{"query": "how are chunks compressed?", "relevance": ["b"]},
                                           {"query": "who may write?", "relevance": ["a"]},
                                           {"query": "how do I branch?", "relevance": ["c"]}])
    code, out, err = run(["dm", "train", path, "--data", qa, "--embedding", "minilm", "--max-seconds", "1"], capsys)
    assert code == 0, err
    assert "completed" in out
