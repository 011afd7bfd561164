"""The tensordb command line: exit codes, output, read-only opening, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import tensordb
from tensordb import cli


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A small vector store with a json index, a commit and one completed Deep Memory job."""
    path = str(tmp_path_factory.mktemp("cli") / "store")
    vs = tensordb.VectorStore(path, embedding_function=tensordb.HashingEmbedding(dim=32))
    texts = [f"document number {i} about {'locks' if i % 2 else 'chunks'}" for i in range(20)]
    texts[3] = "a very long text " * 20
    vs.add(text=texts, metadata=[{"source": f"s{i % 3}.md", "n": i} for i in range(20)],
           id=[f"doc-{i}" for i in range(20)])
    vs.dataset.metadata.create_index("meta", kind="json", paths=["n"])
    vs.dataset.commit("first commit message")
    queries = [f"which document is {i}" for i in range(12)]
    job = vs.deep_memory.train(queries, [[f"doc-{i}"] for i in range(12)], max_seconds=2)
    vs.deep_memory.wait(job)
    vs.close()
    return path, job


def run(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_info(store, capsys):
    code, out, _ = run(["info", store[0]], capsys)
    assert code == 0
    assert "embedding" in out and "(20, 32)" in out and "rows: 20" in out
    assert "index meta: json on metadata; 20 rows, 0 fresh, 0 deleted" in out


def test_log(store, capsys):
    code, out, _ = run(["log", store[0]], capsys)
    assert code == 0 and "first commit message" in out


def test_query_table_and_limit(store, capsys):
    code, out, _ = run(["query", store[0], "select id, text, metadata['n'] as n where metadata['n'] < 5",
                        "--limit", "4"], capsys)
    assert code == 0
    assert "doc-0" in out and "doc-3" in out and "doc-4" not in out
    assert "5 rows (showing 4" in out
    assert "..." in out  # the long text was truncated
    assert max(len(line) for line in out.splitlines()) < 200


def test_query_embeddings_are_abbreviated(store, capsys):
    code, out, _ = run(["query", store[0], "select embedding limit 1"], capsys)
    assert code == 0 and "(32,)" in out and "1 row" in out


def test_query_error_exit_1_without_traceback(store, capsys):
    code, out, err = run(["query", store[0], "select * wher x"], capsys)
    assert code == 1
    assert "Syntax error" in err and "Traceback" not in err + out


def test_missing_dataset_is_error_1(tmp_path, capsys):
    code, _, err = run(["info", str(tmp_path / "nothing")], capsys)
    assert code == 1 and "no tensordb dataset" in err and "Traceback" not in err


def test_usage_errors_exit_2(capsys):
    for argv in ([], ["bogus"], ["query"], ["dm"], ["query", "p", "select *", "--limit", "x"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2, argv
    capsys.readouterr()


@pytest.mark.parametrize("argv", [[], ["info"], ["log"], ["query"], ["verify"], ["dm"], ["dm", "status"],
                                  ["dm", "list"], ["demo"]])
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--help"])
    assert e.value.code == 0
    assert "usage: tensordb" in capsys.readouterr().out


def test_dm_list_and_status(store, capsys):
    path, job = store
    code, out, _ = run(["dm", "list", path], capsys)
    assert code == 0 and job in out and "completed" in out
    code, out, _ = run(["dm", "status", path, job], capsys)
    assert code == 0 and job in out and "| status" in out
    code, _, err = run(["dm", "status", path, "no-such-job"], capsys)
    assert code == 1 and "no Deep Memory job" in err and "Traceback" not in err


def test_commands_do_not_take_the_writer_lock(store, capsys):
    path, job = store
    writer = tensordb.load(path)  # holds the lock for the whole test
    try:
        for argv in (["info", path], ["log", path], ["query", path, "select id limit 2"], ["verify", path],
                     ["dm", "list", path], ["dm", "status", path, job]):
            assert run(argv, capsys)[0] == 0, argv
    finally:
        writer.close()


def test_verify_ok_then_damaged(tmp_path, capsys):
    path = str(tmp_path / "ds")
    ds = tensordb.empty(path)
    ds.create_tensor("x")
    ds.extend({"x": np.arange(100, dtype=np.int64)})
    ds.close()
    code, out, _ = run(["verify", path], capsys)
    assert code == 0 and "ok" in out
    chunks = os.listdir(os.path.join(path, "chunks"))
    assert chunks
    target = os.path.join(path, "chunks", chunks[0])
    data = bytearray(open(target, "rb").read())
    data[-1] ^= 0xFF
    with open(target, "wb") as f:
        f.write(data)
    code, out, err = run(["verify", path], capsys)
    assert code == 1
    assert "PROBLEM" in out and chunks[0] in out
    assert "Traceback" not in out + err


def test_python_dash_m_entry_point(store):
    proc = subprocess.run([sys.executable, "-m", "tensordb", "info", store[0]], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "embedding" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "tensordb", "query", store[0], "select nope"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stderr.startswith("error:")


# -- terminal escapes: user data is shown with visible escapes, never as raw control characters ----
HOSTILE_TEXT = "red \x1b[31mRED\x1b[0m bell \x07 back \r over \x9b csi\nsecond line"
ESCAPED_FORMS = ("\\x1b[31m", "\\x07", "\\r", "\\x9b", "\\n")


def raw_controls(out: str) -> list[str]:
    """Control characters in ``out`` other than the newlines that end the CLI's own lines."""
    return sorted({ch for ch in out if ch != "\n" and (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F)})


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A dataset whose commit message, text and JSON hold escape sequences, a bell, CR, CSI and a newline."""
    path = str(tmp_path_factory.mktemp("cli-escapes") / "ds")
    ds = tensordb.empty(path)
    ds.create_tensor("text", htype="text")
    ds.create_tensor("meta", htype="json")
    ds.extend({"text": [HOSTILE_TEXT, "plain"], "meta": [{"note": HOSTILE_TEXT}, {"note": "plain"}]})
    ds.commit(HOSTILE_TEXT + "\ncommit 0000000000000000  branch main  2000-01-01 00:00:00")
    ds.close()
    return path


def test_log_escapes_control_characters_in_commit_messages(hostile, capsys):
    code, out, _ = run(["log", hostile], capsys)
    assert code == 0
    assert raw_controls(out) == []
    for form in ESCAPED_FORMS:
        assert form in out, form
    # The newline in the message cannot forge a second commit line.
    assert sum(line.startswith("commit ") for line in out.splitlines()) == 1


def test_query_escapes_control_characters_in_texts_and_json(hostile, capsys):
    code, out, _ = run(["query", hostile, "select text, meta", "--width", "200"], capsys)
    assert code == 0
    assert raw_controls(out) == []
    for form in ESCAPED_FORMS:
        assert out.count(form) >= 2, form  # once in the text, once in the JSON value
    assert len(out.splitlines()) == 7  # rule, header, rule, 2 rows, rule, count


def test_query_error_message_escapes_the_echoed_query(hostile, capsys):
    code, out, err = run(["query", hostile, "select text wher \x1b[31m x"], capsys)
    assert code == 1 and err.startswith("error:")
    assert raw_controls(err) == [] and "\\x1b[31m" in err


def test_info_and_verify_escape_a_hostile_dataset_path(tmp_path, capsys):
    path = str(tmp_path / "ds\x1b[31m\x07")
    ds = tensordb.empty(path)
    ds.create_tensor("x")
    ds.extend({"x": np.arange(10, dtype=np.int64)})
    ds.close()
    code, out, err = run(["info", path], capsys)
    assert code == 0 and raw_controls(out + err) == [] and "\\x1b[31m" in out
    chunks = os.listdir(os.path.join(path, "chunks"))
    os.remove(os.path.join(path, "chunks", chunks[0]))
    code, out, err = run(["verify", path], capsys)
    assert code == 1 and "PROBLEM" in out
    assert raw_controls(out + err) == [] and "\\x1b[31m\\x07" in out


def test_dm_list_and_status_escape_a_tampered_job_record(store, tmp_path, capsys):
    import shutil

    path, job = store
    copy = str(tmp_path / "store")
    shutil.copytree(path, copy)
    ds = tensordb.load(copy)
    name = f"deep_memory/jobs/{job}"
    meta, _ = ds.get_attachment(name)
    ds.put_attachment(name, {**meta, "error": HOSTILE_TEXT})
    ds.close()
    for argv in (["dm", "list", copy], ["dm", "status", copy, job]):
        code, out, _ = run(argv, capsys)
        assert code == 0, argv
        assert raw_controls(out) == [], argv
        for form in ESCAPED_FORMS:
            assert form in out, (argv, form)


def test_printable_escapes_every_control_character():
    assert cli.printable("a\x1b[31mb\x07\r\t\x00\x7f\x9b\u2028\u202e\ud800") == (
        "a\\x1b[31mb\\x07\\r\\t\\x00\\x7f\\x9b\\u2028\\u202e\\ud800")
    assert cli.printable("one\ntwo") == "one\\ntwo"
    assert cli.printable("one\ntwo\r", keep_newlines=True) == "one\ntwo\\r"
    assert cli.printable("plain, ünïcödé and 漢字") == "plain, ünïcödé and 漢字"
