"""The ``tensordb`` command line: inspect datasets, run TQL, verify checksums, train and watch Deep Memory.

Exit codes: 0 on success, 2 on a usage error, 1 on any other error (its message is
printed, without a traceback). Every command but ``dm train`` opens datasets
read-only: it never takes the writer lock, so it can inspect a dataset another
process is writing.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from query_lang.errors import TQLError

from .errors import TensorDBError
from .version import __version__

DEFAULT_LIMIT = 20
CELL_WIDTH = 48


# -- output: every line goes through printable() ----------------------------------------------------
# C0, DEL and C1 controls (ESC, CSI, BEL, CR, ...), line and paragraph separators, bidi overrides and
# lone surrogates: user data holding them could recolor, move the cursor, forge lines or fail to encode.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def printable(text: str, keep_newlines: bool = False) -> str:
    """``text`` with each terminal control character written as a visible escape such as ``\\x1b``.

    ``keep_newlines`` keeps the newlines of text the program laid out itself (tables, error messages).
    """
    if keep_newlines:
        return "\n".join(printable(line) for line in text.split("\n"))
    return _CONTROL.sub(_escape, text)


def say(text: str = "", *, keep_newlines: bool = False, err: bool = False) -> None:
    """Print ``text`` to stdout (or stderr) with every control character escaped."""
    print(printable(text, keep_newlines), file=sys.stderr if err else sys.stdout)


# -- formatting ----------------------------------------------------------------------------------
def _cell(value: Any, width: int = CELL_WIDTH) -> str:
    """One value as a single short line."""
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            value = value.item()
        else:
            flat = value.reshape(-1)
            shown = ", ".join(_number(x) for x in flat[:4])
            more = ", ..." if flat.size > 4 else ""
            text = f"[{shown}{more}]" + (f" {value.shape}" if value.ndim > 1 or flat.size > 4 else "")
            return _truncate(text, width)
    if isinstance(value, (float, np.floating)):
        return _number(value)
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return _truncate(printable(str(value)), width)


def _number(x: Any) -> str:
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.4g}"
    return str(x.item() if isinstance(x, np.generic) else x)


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def format_table(columns: list[str], rows: list[list[str]]) -> str:
    """An aligned table of already printable cells, one line per row."""
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    rule = "  ".join("-" * w for w in widths)
    lines = [rule, "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(), rule]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append(rule)
    return "\n".join(lines)


# -- commands ------------------------------------------------------------------------------------
def _open(path: str):
    from .core import load

    return load(path, read_only=True)


def cmd_info(args: argparse.Namespace) -> int:
    ds = _open(args.path)
    # Tensor names are identifiers and the path is quoted, so the summary's newlines are all its own.
    say(ds.summary(show=False), keep_newlines=True)
    say(f"rows: {len(ds)}  branch: {ds.branch or '-'}  commit: {ds.commit_id or '-'}  "
        f"branches: {', '.join(ds.branches)}")
    for name, index in ds.indexes.items():
        metric = f", {index['metric']}" if "metric" in index else ""
        say(f"index {name}: {index['kind']} on {index['tensor']}{metric}; {index['rows']} rows, "
            f"{index['fresh_rows']} fresh, {index['deleted_rows']} deleted; {index['nbytes']} bytes")
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    ds = _open(args.path)
    entries = ds.log(show=False)
    say(f"---- log of {ds.branch or ds.commit_id} ----")
    for e in entries:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["time"]))
        say(f"commit {e['commit']}  branch {e['branch']}  {stamp}")
        say(f"    {e['message']}")  # a newline in the message shows as \\n: it cannot forge a log line
    if not entries:
        say("(no commits)")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise TensorDBError(f"--limit must be >= 0, got {args.limit}")
    view = _open(args.path).query(args.tql)
    names = view.column_names()
    total = len(view)
    shown = view[: min(args.limit, total)] if total else view
    n = min(args.limit, total)
    columns: dict[str, list[Any]] = {}
    for name in names:
        if n == 0:
            columns[name] = []
            continue
        column = shown[name]
        try:
            values = column.numpy(aslist=True)
        except TypeError:
            values = column.numpy()
        columns[name] = list(values)[:n]
    rows = [[_cell(columns[name][i], args.width) for name in names] for i in range(n)]
    say(format_table([printable(name) for name in names], rows), keep_newlines=True)
    more = f" (showing {n}; use --limit to see more)" if n < total else ""
    say(f"{total} row{'s' if total != 1 else ''}{more}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    report = _open(args.path).verify()
    for problem in report.problems:
        say(f"PROBLEM: {problem}")
    if report.ok:
        say(f"ok: {report.files_checked} files checked, every checksum matches")
        return 0
    say(f"{len(report.problems)} problem{'s' if len(report.problems) != 1 else ''} found "
          f"({report.files_checked} files checked)")
    return 1


def _store(path: str):
    from .vectorstore import VectorStore

    return VectorStore(path, read_only=True)


def cmd_dm_status(args: argparse.Namespace) -> int:
    _print_status(_store(args.path).deep_memory.status(args.job, show=False))
    return 0


def _print_status(info: dict[str, Any]) -> None:
    """A job's status table, every value escaped."""
    from .deep_memory.api import format_box, status_rows

    rows = [(key, [printable(v) for v in values]) for key, values in status_rows(info)]
    say(format_box(printable(info["id"]), rows), keep_newlines=True)


def cmd_dm_list(args: argparse.Namespace) -> int:
    jobs = _store(args.path).deep_memory.list_jobs(show=False)
    if not jobs:
        say("(no Deep Memory jobs)")
        return 0
    say(f"{'ID':<26}{'STATUS':<12}{'RESULTS':<34}PROGRESS")
    for j in jobs:
        say(f"{j['id']:<26}{j['status']:<12}{'; '.join(j['results']):<34}{'; '.join(j['progress'])}")
    return 0


# -- Deep Memory training from the command line -----------------------------------------------------
QA_FORMAT = """\
The --data (and --validation) file holds one JSON object a line:
  {"query": "how do I open a dataset read-only?", "relevance": [["chunk-007", 1.0], ["chunk-012", 0.5]]}
  {"query": "which tensors does a vector store have?", "relevance": ["chunk-003"]}
"relevance" lists the ids of the store's chunks that answer the query, each with a score
in [0, 1], or as plain ids (score 1). Blank lines are skipped.

--embedding must be the embedding the store was built with: "minilm" is
tensordb.SentenceTransformerEmbedding("all-MiniLM-L6-v2") (pip install "tensordb[models]");
"hashing" is tensordb.HashingEmbedding at the store's dimension."""
EMBEDDINGS = ("minilm", "hashing")


def read_qa_file(path: str, known_ids: set[str]) -> tuple[list[str], list[list[tuple[str, float]]]]:
    """Queries and relevance from a ``qa.jsonl`` file (see ``QA_FORMAT``); errors name the line."""
    from .errors import SampleError

    queries, relevance = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}: line {number}"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                raise SampleError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            query, pairs = _qa_entry(entry, where)
            unknown = [doc_id for doc_id, _ in pairs if doc_id not in known_ids]
            if unknown:
                raise SampleError(f"{where}: id {unknown[0]!r} is not in the store")
            queries.append(query)
            relevance.append(pairs)
    if not queries:
        raise SampleError(f"{path}: no queries: expected one JSON object a line, "
                          '{"query": "...", "relevance": [["chunk_id", 1.0]]}')
    return queries, relevance


def _qa_entry(entry: Any, where: str) -> tuple[str, list[tuple[str, float]]]:
    from .errors import SampleError

    expected = 'expected {"query": "...", "relevance": [["chunk_id", 1.0], ...]}'
    if not isinstance(entry, dict) or not isinstance(entry.get("query"), str) or not entry["query"].strip():
        raise SampleError(f"{where}: {expected}, got {_short(entry)}")
    items = entry.get("relevance")
    if not isinstance(items, list) or not items:
        raise SampleError(f"{where}: \"relevance\" must be a non-empty list of ids or [id, score] pairs, "
                          f"got {_short(items)}")
    pairs = []
    for item in items:
        if isinstance(item, str):
            item = [item, 1.0]
        score = item[1] if isinstance(item, list) and len(item) == 2 else None
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                or isinstance(score, bool) or not isinstance(score, (int, float))
                or not math.isfinite(score) or not 0 <= score <= 1):
            raise SampleError(f"{where}: each relevance item must be an id or an [id, score] pair with a score "
                              f"in [0, 1], got {_short(item)}")
        pairs.append((item[0], float(score)))
    return entry["query"], pairs


def _short(value: Any) -> str:
    return _truncate(printable(json.dumps(value)), 80)


def _embedding(name: str, store_dim: int) -> Any:
    """The embedding function ``--embedding`` names, checked against the store's dimension."""
    from .vectorstore import HashingEmbedding, SentenceTransformerEmbedding

    if name == "hashing":
        return HashingEmbedding(dim=store_dim)
    fn = SentenceTransformerEmbedding("all-MiniLM-L6-v2")
    if fn.dim != store_dim:
        raise TensorDBError(f"--embedding minilm gives {fn.dim}-dimensional vectors but the store's embeddings have "
                            f"{store_dim} dimensions: pass the embedding the store was built with")
    return fn


def _store_dim_and_ids(path: str) -> tuple[int, set[str]]:
    vs = _store(path)
    try:
        if len(vs) == 0:
            raise TensorDBError(f"{path}: the store holds no documents; add chunks before training Deep Memory")
        ids, embeddings = vs.ids_and_embeddings()
        return int(embeddings.shape[1]), set(ids)
    finally:
        vs.close()


def _prepared(args: argparse.Namespace) -> tuple[Any, list[str], list[list[tuple[str, float]]], set[str]]:
    """The embedding function, the --data file's queries and the store's ids: every check before any write."""
    dim, known = _store_dim_and_ids(args.path)
    fn = _embedding(args.embedding, dim)
    queries, relevance = read_qa_file(args.data, known)
    return fn, queries, relevance, known


def cmd_dm_train(args: argparse.Namespace) -> int:
    from .vectorstore import VectorStore

    fn, queries, relevance, known = _prepared(args)
    validation: dict[str, Any] = {}
    if args.validation:
        vq, vr = read_qa_file(args.validation, known)
        validation = {"validation_queries": vq, "validation_relevance": vr}
    vs = VectorStore(args.path, embedding_function=fn)
    try:
        job = vs.deep_memory.train(queries, relevance, max_seconds=args.max_seconds, seed=args.seed, **validation)
        info = _follow(vs.deep_memory, job, args.max_seconds)
        _print_status(info)
    finally:
        vs.close()
    return 0 if info["status"] == "completed" else 1


def _follow(dm: Any, job: str, max_seconds: float) -> dict[str, Any]:
    """Wait for the job with a progress bar of its epochs; Ctrl-C cancels it."""
    from tqdm.auto import tqdm

    with tqdm(desc="training Deep Memory", unit="epoch", file=sys.stderr) as bar:
        try:
            while True:
                info = dm.wait(job, timeout=0.5)
                record = info["record"]
                if record.max_epochs and bar.total != record.max_epochs:
                    bar.total = record.max_epochs
                bar.update(record.epoch - bar.n)
                if record.progress.get("recall@10") is not None:
                    bar.set_postfix_str(f"validation recall@10 {100 * record.progress['recall@10']:.1f}%")
                if info["status"] not in ("pending", "running"):
                    bar.total = bar.n  # early stopping ends before max_epochs: show the bar full
                    bar.refresh()
                    return info
        except KeyboardInterrupt:
            dm.cancel(job)
            dm.wait(job, timeout=max_seconds)
            raise


def cmd_dm_evaluate(args: argparse.Namespace) -> int:
    from .deep_memory.plotting import check_plot_path

    if args.plot:
        check_plot_path(args.plot)  # before the model is loaded or anything is ranked
    fn, queries, relevance, _ = _prepared(args)
    vs = _store(args.path)
    try:
        out = vs.deep_memory.evaluate(queries, relevance, embedding_function=fn, show=False, plot=args.plot)
    finally:
        vs.close()
    names = sorted({k for m in out.values() for k in m}, key=lambda k: (k.split("@")[0] != "recall",
                                                                        k.split("@")[0], int(k.split("@")[1])))
    rows = [[name] + [f"{100 * out[label][name]:.1f}%" for label in out] for name in names]
    say(format_table(["metric", "without Deep Memory", "with Deep Memory"], rows), keep_newlines=True)
    say(f"{len(queries)} queries")
    if args.plot:
        say(f"recall@k plot written to {args.plot}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_from_args

    run_from_args(args)
    return 0


# -- parser --------------------------------------------------------------------------------------
def _dm_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="vector store directory")
    p.add_argument("--data", metavar="QA.JSONL", required=True, help="queries and their relevant chunk ids")
    p.add_argument("--embedding", choices=EMBEDDINGS, required=True,
                   help="the embedding the store was built with (minilm needs the models extra)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tensordb",
        description="Inspect and query tensordb datasets; run the Deep Memory demo.",
        epilog="Exit codes: 0 success, 1 error, 2 usage error. PATH may end in @branch or @commit.",
    )
    parser.add_argument("--version", action="version", version=f"tensordb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("info", help="print a dataset's summary", description="Print the tensors of a dataset.")
    p.add_argument("path", metavar="PATH", help="dataset directory (optionally PATH@branch or PATH@commit)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("log", help="print the commit history", description="Print commits, newest first.")
    p.add_argument("path", metavar="PATH", help="dataset directory (optionally PATH@branch or PATH@commit)")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("query", help="run a TQL query and print the rows",
                       description="Run a TQL query and print the resulting rows as a table.")
    p.add_argument("path", metavar="PATH", help="dataset directory (optionally PATH@branch or PATH@commit)")
    p.add_argument("tql", metavar="TQL", help="the query, e.g. \"select id, text where contains(text, 'lock')\"")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"rows to print (default {DEFAULT_LIMIT})")
    p.add_argument("--width", type=int, default=CELL_WIDTH, help=f"longest cell, in characters (default {CELL_WIDTH})")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("verify", help="check every checksum; exit 1 on damage",
                       description="Check every file any branch or commit uses; print each problem.")
    p.add_argument("path", metavar="PATH", help="dataset directory")
    p.set_defaults(func=cmd_verify)

    dm = sub.add_parser("dm", help="Deep Memory jobs of a vector store", description="Deep Memory jobs.")
    dm_sub = dm.add_subparsers(dest="dm_command", metavar="COMMAND", required=True)
    p = dm_sub.add_parser("status", help="status table of one job", description="Print one job's status table.")
    p.add_argument("path", metavar="PATH", help="vector store directory")
    p.add_argument("job", metavar="JOB", help="job id (from 'tensordb dm list')")
    p.set_defaults(func=cmd_dm_status)
    p = dm_sub.add_parser("list", help="list all jobs", description="List every Deep Memory job, oldest first.")
    p.add_argument("path", metavar="PATH", help="vector store directory")
    p.set_defaults(func=cmd_dm_list)

    p = dm_sub.add_parser("train", help="train Deep Memory from a qa.jsonl file",
                          description="Train Deep Memory on the store at PATH, with a progress bar; ends with the "
                                      "job's status table. Exit 1 when the job does not complete.",
                          epilog=QA_FORMAT, formatter_class=argparse.RawDescriptionHelpFormatter)
    _dm_data_arguments(p)
    p.add_argument("--validation", metavar="FILE",
                   help="a few real questions (same format) that alone choose the model, e.g. when --data is "
                        "generated by an LLM")
    p.add_argument("--max-seconds", type=float, default=60.0, help="training time budget (default 60)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_dm_train)

    p = dm_sub.add_parser("evaluate", help="recall with and without Deep Memory",
                          description="Recall@k, nDCG@10 and MRR@10 of the queries in --data, without and with "
                                      "the store's trained model.",
                          epilog=QA_FORMAT, formatter_class=argparse.RawDescriptionHelpFormatter)
    _dm_data_arguments(p)
    p.add_argument("--plot", metavar="FILE.png", help="also draw recall@k for k = 1..100 (log k axis) to this image")
    p.set_defaults(func=cmd_dm_evaluate)

    from .demo import build_parser as demo_parser

    p = sub.add_parser("demo", help="build a store, train Deep Memory, compare recall",
                       description="Build a vector store from the shipped documentation corpus (or a BEIR "
                                   "folder), train Deep Memory and print recall with and without it.")
    demo_parser(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (argparse exits with 2 on usage errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (TensorDBError, TQLError) as e:
        say(f"error: {e}", keep_newlines=True, err=True)
        return 1
    except (OSError, ValueError, KeyError) as e:  # e.g. a demo --data folder that is incomplete
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        say(f"error: {message}", keep_newlines=True, err=True)
        return 1
    except KeyboardInterrupt:
        say("interrupted", err=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
