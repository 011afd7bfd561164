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
    """A small vector store with a commit and one completed Deep Memory job."""
    path = str(tmp_path_factory.mktemp("cli") / "store")
    vs = tensordb.VectorStore(path, embedding_function=tensordb.HashingEmbedding(dim=32))
    texts = [f"document number {i} about {'locks' if i % 2 else 'chunks'}" for i in range(20)]
    texts[3] = "a very long text " * 20
    vs.add(text=texts, metadata=[{"source": f"s{i % 3}.md", "n": i} for i in range(20)],
           id=[f"doc-{i}" for i in range(20)])
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
