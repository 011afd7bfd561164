"""BM25 and hybrid search on a BEIR-format folder with precomputed embeddings (e.g. SciFact).

    python benchmarks/hybrid.py --data ../shared/data/scifact [--out results.json]

Reports on qrels/dev.tsv (nDCG@10, R@1, R@10, R@100) for tensordb's BM25 index, exact dense
cosine, hybrid RRF, hybrid convex (alpha tuned on qrels/train.tsv only, grid 0..1 step 0.05),
Deep Memory dense and Deep Memory hybrid (the fusion learned at training), next to bm25s used
directly with the same settings, LanceDB (its FTS index and its RRF hybrid query on the same
embeddings) and SQLite FTS5 (porter tokenizer, bm25()). Also: BM25 index build time, docs/s,
index bytes, warm median query latency (top-10 and top-100, TQL through ``ds.query``, paired
per query with bare bm25s) and the score parity of tensordb's BM25 with bm25s.

A document's text is its title, a space, and its text. A part of the tensordb API that is not
there (yet) is reported as "not available" with the error, and the rest still runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import dir_bytes, print_table, print_targets, write_json  # noqa: E402

METRICS = ["ndcg@10", "recall@1", "recall@10", "recall@100"]
DEPTH = 100  # every ranking is cut at 100 (R@100)
ALPHAS = [round(0.05 * i, 2) for i in range(21)]
BM25_SETTINGS = {"k1": 1.5, "b": 0.75, "method": "lucene"}
Ranked = list[str]  # one query's ranked document ids, best first


# -- data --------------------------------------------------------------------------------------------
@dataclass
class Split:
    """The judged queries of one qrels file: texts, embeddings, ``(doc_id, score)`` judgements."""

    texts: list[str]
    embeddings: np.ndarray
    relevance: list[list[tuple[str, float]]]


@dataclass
class Beir:
    ids: list[str]
    texts: list[str]
    embeddings: np.ndarray
    train: Split
    dev: Split
    query_texts: list[str]  # every query, in queries_emb.npy's order (the embedding lookup)
    query_embeddings: np.ndarray


def _jsonl(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def _qrels(path: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = defaultdict(dict)
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 3 and parts[2].strip().lstrip("-").replace(".", "", 1).isdigit():
                out[parts[0]][parts[1]] = float(parts[2])
    return out


def load(folder: str) -> Beir:
    """The corpus (title + " " + text, in corpus_ids.txt order), query texts and embeddings, train and dev."""
    def path(*parts: str) -> str:
        p = os.path.join(folder, *parts)
        if not os.path.exists(p):
            raise SystemExit(f"{folder}: missing {os.path.join(*parts)} (expected a BEIR folder with embeddings)")
        return p

    docs = {str(d["_id"]): d for d in _jsonl(path("corpus.jsonl"))}
    ids = _lines(path("corpus_ids.txt"))
    texts = [f"{docs[i].get('title', '')} {docs[i].get('text', '')}".strip() for i in ids]
    doc_emb = np.load(path("corpus_emb.npy")).astype(np.float32, copy=False)
    query_text = {str(q["_id"]): q["text"] for q in _jsonl(path("queries.jsonl"))}
    query_ids = _lines(path("query_ids.txt"))
    query_emb = np.load(path("queries_emb.npy")).astype(np.float32, copy=False)
    if len(ids) != len(doc_emb) or len(query_ids) != len(query_emb):
        raise SystemExit(f"{folder}: ids and embeddings have different lengths")
    row_of = {q: i for i, q in enumerate(query_ids)}
    known = set(ids)

    def split(name: str) -> Split:
        texts_, rows, rels = [], [], []
        for qid, judged in _qrels(path("qrels", name)).items():
            top = max(judged.values(), default=0.0)
            rel = [(d, s / top) for d, s in judged.items() if s > 0 and d in known]
            if qid in row_of and rel:
                texts_.append(query_text[qid])
                rows.append(row_of[qid])
                rels.append(rel)
        return Split(texts_, query_emb[rows], rels)

    return Beir(ids, texts, doc_emb, split("train.tsv"), split("dev.tsv"),
                [query_text[q] for q in query_ids], query_emb)


# -- measuring ---------------------------------------------------------------------------------------
def quality(ranked: Sequence[Ranked], relevance: Sequence[Sequence[tuple[str, float]]]) -> dict[str, float]:
    from tensordb.deep_memory.metrics import ndcg_at_k, recall_at_k

    out = {"ndcg@10": ndcg_at_k(ranked, relevance, 10)}
    out.update({f"recall@{k}": recall_at_k(ranked, relevance, k) for k in (1, 10, 100)})
    return out


def run_queries(search: Callable[[int], Ranked], n: int, warm: int = 10) -> tuple[list[Ranked], float]:
    """Every query's ranking, and the median milliseconds per query (after ``warm`` untimed queries)."""
    for i in range(min(warm, n)):
        search(i)
    ranked, times = [], []
    for i in range(n):
        t0 = time.perf_counter()
        ranked.append(search(i))
        times.append(time.perf_counter() - t0)
    return ranked, 1000 * float(np.median(times))


def paired_latency(fns: dict[str, Callable[[int], Any]], n: int, repeats: int) -> dict[str, float]:
    """Median ms per query of each function, called in turn on the same query (a warm pass first, untimed)."""
    for i in range(n):
        for fn in fns.values():
            fn(i)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for i in range(n):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn(i)
                times[name].append(time.perf_counter() - t0)
    return {name: 1000 * float(np.median(t)) for name, t in times.items()}


def not_available(e: BaseException) -> str:
    return f"not available ({type(e).__name__}: {' '.join(str(e).split())[:100]})"


# -- baselines ---------------------------------------------------------------------------------------
class Bm25s:
    """bm25s used directly: english PyStemmer stemmer, english stop words, k1=1.5, b=0.75, lucene."""

    def __init__(self, texts: list[str], scratch: str):
        import bm25s
        import Stemmer

        self._bm25s = bm25s
        self.stemmer = Stemmer.Stemmer("english")
        self.texts = texts
        self.build_s = self.build()
        saved = os.path.join(scratch, "bm25s")
        self.retriever.save(saved)
        self.index_bytes = dir_bytes(saved)

    def build(self) -> float:
        """Tokenize and index every text again; the seconds it took."""
        t0 = time.perf_counter()
        tokens = self._bm25s.tokenize(self.texts, stopwords="en", stemmer=self.stemmer, show_progress=False)
        self.retriever = self._bm25s.BM25(**BM25_SETTINGS)
        self.retriever.index(tokens, show_progress=False)
        return time.perf_counter() - t0

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of the top ``k`` (query tokenization included, as a caller would do it)."""
        tokens = self._bm25s.tokenize([query], stopwords="en", stemmer=self.stemmer, show_progress=False)
        rows, scores = self.retriever.retrieve(tokens, k=k, show_progress=False)
        return rows[0], scores[0]


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Lance's Rust logger prints two deprecation lines per hybrid query to fd 2; Python's warnings filters
    cannot reach it. Errors still arrive as Python exceptions."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class Lance:
    """LanceDB: native FTS index (English stemming and stop words) and its RRF hybrid query."""

    def __init__(self, data: Beir, scratch: str):
        import lancedb
        import pyarrow as pa

        dim = data.embeddings.shape[1]
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(data.embeddings.ravel()), dim)
        db = lancedb.connect(os.path.join(scratch, "lancedb"))
        self.table = db.create_table("docs", pa.table({"id": data.ids, "text": data.texts, "vector": vectors}))
        with warnings.catch_warnings():  # create_fts_index is deprecated in favour of create_index(config=FTS())
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            self.table.create_fts_index("text", use_tantivy=False, language="English", stem=True,
                                        remove_stop_words=True, replace=True)
            self.build_s = time.perf_counter() - t0
        indices = os.path.join(scratch, "lancedb", "docs.lance", "_indices")
        self.index_bytes = dir_bytes(indices) if os.path.isdir(indices) else None

    def fts(self, query: str, k: int) -> Ranked:
        hits = self.table.search(query, query_type="fts").select(["id", "_score"]).limit(k).to_list()
        return [h["id"] for h in hits]

    def hybrid(self, query: str, vector: np.ndarray, k: int) -> Ranked:
        from lancedb.rerankers import RRFReranker

        hits = (self.table.search(query_type="hybrid").vector(vector).text(query).distance_type("cosine")
                .rerank(RRFReranker()).select(["id"]).limit(k).to_list())
        return [h["id"] for h in hits]


class Fts5:
    """SQLite FTS5, porter tokenizer, ranked by bm25(); contentless, so the file is the index."""

    def __init__(self, texts: list[str], scratch: str):
        self.file = os.path.join(scratch, "fts5.sqlite")
        self.db = sqlite3.connect(self.file)
        t0 = time.perf_counter()
        self.db.execute("CREATE VIRTUAL TABLE docs USING fts5(text, content='', tokenize='porter')")
        self.db.executemany("INSERT INTO docs(rowid, text) VALUES (?, ?)", enumerate(texts))
        self.db.commit()
        self.build_s = time.perf_counter() - t0
        self.index_bytes = os.path.getsize(self.file)

    @staticmethod
    def match(query: str) -> str:
        """An OR of the query's words, each a quoted FTS5 string (so no word is read as syntax)."""
        words = re.findall(r"\w+", query.lower())
        return " OR ".join('"' + w.replace('"', '""') + '"' for w in words) or '""'

    def search(self, query: str, k: int) -> list[int]:
        sql = "SELECT rowid FROM docs WHERE docs MATCH ? ORDER BY bm25(docs) LIMIT ?"
        return [r[0] for r in self.db.execute(sql, (self.match(query), k))]


# -- tensordb ----------------------------------------------------------------------------------------
def tql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def bm25_tql(query: str, k: int) -> str:
    return f"select id order by bm25_similarity(text, {tql_string(query)}) desc limit {k}"


def bm25_scored_tql(query: str, k: int) -> str:
    """The same top ``k`` with the score selected (``select id order by ...`` returns the ids only)."""
    q = tql_string(query)
    return f"select id, bm25_similarity(text, {q}) as score order by score desc limit {k}"


def ids_of(hits: dict[str, list]) -> Ranked:
    return [str(i) for i in hits["id"]]


def convex_keys(dense: tuple[np.ndarray, np.ndarray], lexical: tuple[np.ndarray, np.ndarray],
                alpha: float) -> list[int]:
    """Rows ranked by tensordb's convex fusion of two ``(rows, scores)`` lists."""
    from tensordb.deep_memory import fusion

    return [int(r) for r in fusion.fuse(fusion.Ranking(*dense), fusion.Ranking(*lexical), "convex", alpha).keys]


def tune_alpha(dense: list[tuple[np.ndarray, np.ndarray]], lexical: list[tuple[np.ndarray, np.ndarray]],
               ids: list[str], relevance: list[list[tuple[str, float]]]) -> tuple[float, dict[float, float]]:
    """The alpha of convex fusion with the best train nDCG@10 over tensordb's own top-100 lists."""
    from tensordb.deep_memory.metrics import ndcg_at_k

    by_alpha = {}
    for alpha in ALPHAS:
        ranked = [[ids[r] for r in convex_keys(d, lx, alpha)[:10]] for d, lx in zip(dense, lexical, strict=True)]
        by_alpha[alpha] = ndcg_at_k(ranked, relevance, 10)
    best = max(ALPHAS, key=lambda a: (by_alpha[a], -abs(a - 0.5)))  # ties: the less extreme alpha
    return best, by_alpha


def strict_top10(ids: Sequence[str], scores: np.ndarray, eps: float = 1e-4) -> set[str]:
    """The top-10 ids that score strictly above the 10th score: the part of a top 10 that ties cannot reorder."""
    if len(scores) < 10:
        return {i for i, s in zip(ids, scores, strict=True) if s > 0}
    tenth = scores[9]
    return {i for i, s in zip(ids[:10], scores[:10], strict=True) if s > tenth + eps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="BEIR folder with corpus_emb.npy, queries_emb.npy, qrels/")
    parser.add_argument("--out", default=None)
    parser.add_argument("--latency-repeats", type=int, default=3)
    parser.add_argument("--build-repeats", type=int, default=5, help="BM25 builds timed, alternating engines")
    args = parser.parse_args()

    from tensordb import VectorStore
    from tensordb.demo import PrecomputedQueries

    data = load(args.data)
    dev, train = data.dev, data.train
    n_dev, n_docs = len(dev.texts), len(data.ids)
    row_of = {d: i for i, d in enumerate(data.ids)}
    print(f"{os.path.basename(os.path.normpath(args.data))}: {n_docs} documents, "
          f"{len(train.texts)} train and {n_dev} dev queries")
    rows: dict[str, dict[str, Any]] = {}  # method -> quality + latency, or a "not available" note
    build: list[dict[str, Any]] = []
    notes: dict[str, str] = {}

    def record(name: str, ranked: list[Ranked] | None, ms: float | None, error: BaseException | None = None):
        if error is not None:
            rows[name] = {"method": name, "note": not_available(error)}
            print(f"  {name}: {rows[name]['note']}")
            return
        rows[name] = {"method": name, **quality(ranked, dev.relevance), "median ms": ms}
        print(f"  {name}: nDCG@10 {rows[name]['ndcg@10']:.4f}")

    scratch = tempfile.mkdtemp(prefix="tensordb-hybrid-")
    try:
        # -- baselines ------------------------------------------------------------------------------
        bare = Bm25s(data.texts, scratch)
        build.append({"engine": "bm25s (bare)", "build s": bare.build_s, "docs/s": n_docs / bare.build_s,
                      "index bytes": bare.index_bytes})
        ranked, ms = run_queries(lambda i: [data.ids[r] for r in bare.search(dev.texts[i], DEPTH)[0]], n_dev)
        record("bm25s (bare)", ranked, ms)

        lance = None
        try:
            lance = Lance(data, scratch)
            build.append({"engine": "LanceDB FTS", "build s": lance.build_s, "docs/s": n_docs / lance.build_s,
                          "index bytes": lance.index_bytes})
            record("LanceDB FTS", *run_queries(lambda i: lance.fts(dev.texts[i], DEPTH), n_dev))
        except Exception as e:  # noqa: BLE001 - a baseline that cannot run is reported, not fatal
            record("LanceDB FTS", None, None, e)
        try:
            if lance is None:
                raise RuntimeError("no LanceDB table")
            with native_stderr_silenced():
                ranked, ms = run_queries(lambda i: lance.hybrid(dev.texts[i], dev.embeddings[i], DEPTH), n_dev)
            record("LanceDB hybrid (RRF)", ranked, ms)
        except Exception as e:  # noqa: BLE001
            record("LanceDB hybrid (RRF)", None, None, e)

        fts5 = Fts5(data.texts, scratch)
        build.append({"engine": "SQLite FTS5 (porter)", "build s": fts5.build_s, "docs/s": n_docs / fts5.build_s,
                      "index bytes": fts5.index_bytes})
        record("SQLite FTS5 (porter)",
               *run_queries(lambda i: [data.ids[r] for r in fts5.search(dev.texts[i], DEPTH)], n_dev))

        # -- tensordb: the store, dense --------------------------------------------------------------
        lookup = PrecomputedQueries(data.query_texts, data.query_embeddings)
        vs = VectorStore(os.path.join(scratch, "store"), embedding_function=lookup, overwrite=True)
        vs.add(text=data.texts, embedding=data.embeddings, id=data.ids)
        vs.dataset.commit("corpus")
        ds = vs.dataset

        def dense(query: np.ndarray, k: int = DEPTH) -> dict[str, list]:
            return vs.search(embedding=query, k=k, exact=True, return_tensors=["id"])

        record("tensordb dense (exact cosine)", *run_queries(lambda i: ids_of(dense(dev.embeddings[i])), n_dev))

        # -- tensordb BM25 ---------------------------------------------------------------------------
        bm25_ok = False
        try:
            ds.text.create_index("fts", kind="bm25", language="english")
            # One build takes about half a second on a shared 2-core machine: the median of a few, alternating.
            paired: dict[str, list[float]] = {"tensordb": [], "bm25s": []}
            for _ in range(args.build_repeats):
                t0 = time.perf_counter()
                ds.text.rebuild_index("fts")
                paired["tensordb"].append(time.perf_counter() - t0)
                paired["bm25s"].append(bare.build())
            build_s, bare.build_s = (float(np.median(paired[n])) for n in ("tensordb", "bm25s"))
            next(b for b in build if b["engine"] == "bm25s (bare)").update(
                {"build s": bare.build_s, "docs/s": n_docs / bare.build_s})
            index_bytes = ds.indexes["fts"].get("nbytes")
            build.insert(0, {"engine": "tensordb bm25", "build s": build_s, "docs/s": n_docs / build_s,
                             "index bytes": index_bytes})

            def bm25(query: str, k: int = DEPTH) -> Any:
                return ds.query(bm25_tql(query, k))

            def bm25_scored(query: str, k: int = DEPTH) -> Any:
                return ds.query(bm25_scored_tql(query, k))

            def bm25_ids(query: str, k: int = DEPTH) -> Ranked:
                return [str(i) for i in bm25(query, k).id.numpy(aslist=True)]

            record("tensordb BM25", *run_queries(lambda i: bm25_ids(dev.texts[i]), n_dev))
            bm25_ok = True
        except Exception as e:  # noqa: BLE001 - the API may not have landed yet
            record("tensordb BM25", None, None, e)

        latency: dict[str, Any] = {}
        parity: dict[str, Any] = {}
        if bm25_ok:
            # Score parity: the top-100 scores of each query, sorted (ties may order ids differently).
            diffs, rel_diffs, overlap, tie_free_mismatch = [], [], [], 0
            for q in dev.texts:
                view = bm25_scored(q)
                td_ids_ = [str(i) for i in view.id.numpy(aslist=True)]
                td_raw = np.asarray(view.score.numpy(), dtype=np.float64)
                b_rows, b_raw = bare.search(q, DEPTH)
                b_ids, b_raw = [data.ids[r] for r in b_rows], np.asarray(b_raw, dtype=np.float64)
                td_scores, b_scores = np.sort(td_raw)[::-1], np.sort(b_raw)[::-1]
                n = min(len(td_scores), len(b_scores))
                diff = np.abs(td_scores[:n] - b_scores[:n])
                diffs.append(float(diff.max()) if n else 0.0)
                rel_diffs.append(float((diff / np.maximum(np.abs(b_scores[:n]), 1e-9)).max()) if n else 0.0)
                overlap.append(len(set(td_ids_[:10]) & set(b_ids[:10])) / 10)
                tie_free_mismatch += strict_top10(td_ids_, td_raw) != strict_top10(b_ids, b_raw)
            parity = {"max_abs_score_diff_top100": max(diffs), "max_rel_score_diff_top100": max(rel_diffs),
                      "mean_top10_id_overlap": float(np.mean(overlap)), "min_top10_id_overlap": float(min(overlap)),
                      "queries_top10_differ_beyond_ties": int(tie_free_mismatch)}

            def td_ids(q: str, k: int) -> Ranked:
                return [str(i) for i in bm25(q, k).id.numpy(aslist=True)]

            def bare_ids(q: str, k: int) -> Ranked:
                return [data.ids[r] for r in bare.search(q, k)[0]]

            latency = paired_latency({
                "tensordb top-10": lambda i: td_ids(dev.texts[i], 10),
                "bm25s k=10": lambda i: bare_ids(dev.texts[i], 10),
                "tensordb top-100": lambda i: td_ids(dev.texts[i], 100),
                "bm25s k=100": lambda i: bare_ids(dev.texts[i], 100),
            }, n_dev, args.latency_repeats)

        # -- tensordb hybrid -------------------------------------------------------------------------
        def hybrid(query: str, k: int = DEPTH, **kw: Any) -> Ranked:
            return ids_of(vs.search(embedding_data=query, k=k, mode="hybrid", return_tensors=["id"], **kw))

        try:
            record("tensordb hybrid (default: convex, alpha 0.5)", *run_queries(lambda i: hybrid(dev.texts[i]), n_dev))
            record("tensordb hybrid RRF", *run_queries(lambda i: hybrid(dev.texts[i], fusion="rrf"), n_dev))
        except Exception as e:  # noqa: BLE001
            record("tensordb hybrid RRF", None, None, e)

        alpha, by_alpha = None, {}
        try:
            if not bm25_ok:
                raise RuntimeError("no tensordb BM25 index to tune the fusion with")

            def as_list(hits: Any) -> tuple[np.ndarray, np.ndarray]:
                # Rows no query word matched (score 0) are no lexical candidates, as in vs.search's hybrid mode.
                rows_ = np.array([row_of[str(i)] for i in hits.id.numpy(aslist=True)], dtype=np.int64)
                scores = np.asarray(hits.score.numpy(), dtype=np.float64)
                return rows_[scores > 0], scores[scores > 0]

            def dense_list(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                hits = dense(v)
                return (np.array([row_of[str(i)] for i in hits["id"]], dtype=np.int64),
                        np.asarray(hits["score"], dtype=np.float64))

            t_dense = [dense_list(v) for v in train.embeddings]
            t_lex = [as_list(bm25_scored(q)) for q in train.texts]
            alpha, by_alpha = tune_alpha(t_dense, t_lex, data.ids, train.relevance)
            notes["alpha"] = f"alpha {alpha} (train nDCG@10 {by_alpha[alpha]:.4f}; alpha=0 {by_alpha[0.0]:.4f}, " \
                             f"alpha=1 {by_alpha[1.0]:.4f})"
            print(f"  tuned on train: {notes['alpha']}")
            record(f"tensordb hybrid convex (alpha={alpha})",
                   *run_queries(lambda i: hybrid(dev.texts[i], fusion="convex", alpha=alpha), n_dev))
        except Exception as e:  # noqa: BLE001
            record("tensordb hybrid convex", None, None, e)

        # -- Deep Memory -----------------------------------------------------------------------------
        train_s = None
        try:
            t0 = time.perf_counter()
            job = vs.deep_memory.train(queries=train.texts, relevance=train.relevance)
            status = vs.deep_memory.wait(job)
            train_s = time.perf_counter() - t0
            if status["status"] != "completed":
                raise RuntimeError(f"training ended {status['status']}: {status['progress']}")
            print(f"  Deep Memory trained in {train_s:.1f} s")
            results = status.get("results") or []
            notes["deep_memory_results"] = results if isinstance(results, list) else [str(results)]
            for line in notes["deep_memory_results"]:
                print(f"    {line}")
            notes["learned_fusion"] = status.get("fusion") or "none (no text index when trained)"
            print(f"    hybrid fusion: {notes['learned_fusion']}")
            record("tensordb Deep Memory dense", *run_queries(
                lambda i: ids_of(vs.search(embedding_data=dev.texts[i], k=DEPTH, deep_memory=True,
                                           return_tensors=["id"])), n_dev))
            dm_hybrid_name = "tensordb Deep Memory hybrid (learned fusion)"
            try:
                record(dm_hybrid_name, *run_queries(lambda i: hybrid(dev.texts[i], deep_memory=True), n_dev))
            except Exception as e:  # noqa: BLE001
                record(dm_hybrid_name, None, None, e)
        except Exception as e:  # noqa: BLE001
            record("tensordb Deep Memory dense", None, None, e)
        vs.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    # -- report ------------------------------------------------------------------------------------------
    name = os.path.basename(os.path.normpath(args.data))
    print_table(f"Quality on {name} dev ({n_dev} queries; tuned/trained on {len(train.texts)} train queries)",
                list(rows.values()), ["method", *METRICS, "median ms", "note"])
    print_table(f"BM25 index build ({n_docs} documents; tensordb and bm25s: median of {args.build_repeats} "
                f"alternating builds; bm25s includes tokenization)", build,
                ["engine", "build s", "docs/s", "index bytes"])
    if latency:
        print_table("BM25 warm median query latency, ms (paired per query; bm25s includes query tokenization)",
                    [{"query": k, "ms": v} for k, v in latency.items()], ["query", "ms"])
    if parity:
        print_table("tensordb BM25 vs bm25s score parity (dev queries)",
                    [{"measure": k, "value": v} for k, v in parity.items()], ["measure", "value"])

    def metric(method_prefix: str, m: str = "ndcg@10") -> float | None:
        for key, row in rows.items():
            if key.startswith(method_prefix) and m in row:
                return row[m]
        return None

    ratios: dict[str, Any] = {}
    targets: dict[str, bool] = {}

    def target(label: str, value: float | None, ok: Callable[[float], bool], ratio_label: str) -> None:
        if value is None:
            ratios[ratio_label] = "not available"
            return
        ratios[ratio_label] = value
        targets[label] = ok(value)

    target("BM25 nDCG@10 >= 0.66", metric("tensordb BM25"), lambda v: v >= 0.66, "tensordb BM25 nDCG@10")
    target("hybrid nDCG@10 >= 0.69 (the default fusion)", metric("tensordb hybrid (default"), lambda v: v >= 0.69,
           "tensordb hybrid nDCG@10 (the default fusion)")
    dm_dense, dm_hybrid = metric("tensordb Deep Memory dense"), metric("tensordb Deep Memory hybrid")
    target("DM hybrid >= DM dense + 0.02", None if dm_dense is None or dm_hybrid is None else dm_hybrid - dm_dense,
           lambda v: v >= 0.02, "DM hybrid - DM dense, nDCG@10")
    for hybrid_row, dense_row, shown in (("tensordb hybrid (default", "tensordb dense", "tensordb hybrid (default)"),
                                         ("tensordb hybrid RRF", "tensordb dense", "tensordb hybrid RRF"),
                                         ("tensordb hybrid convex", "tensordb dense", "tensordb hybrid convex tuned"),
                                         ("tensordb Deep Memory hybrid", "tensordb Deep Memory dense",
                                          "tensordb Deep Memory hybrid")):
        margins = []
        for m in METRICS:
            h, d, b = metric(hybrid_row, m), metric(dense_row, m), metric("tensordb BM25", m)
            if h is None or d is None or b is None:
                margins = []
                break
            margins.append(100 * (h - max(d, b)))
        target(f"{shown}: no metric below max({dense_row.removeprefix('tensordb ')}, BM25) by > 0.5 points",
               min(margins) if margins else None, lambda v: v >= -0.5,
               f"{shown}: worst metric - max(dense, BM25), points")
    target("BM25 top-10 latency <= 1.3x bare bm25s",
           latency["tensordb top-10"] / latency["bm25s k=10"] if latency else None, lambda v: v <= 1.3,
           "BM25 latency ratio, top-10 (tensordb / bm25s)")
    target("BM25 top-100 latency <= 1.3x bare bm25s",
           latency["tensordb top-100"] / latency["bm25s k=100"] if latency else None, lambda v: v <= 1.3,
           "BM25 latency ratio, top-100 (tensordb / bm25s)")
    td_build = next((b for b in build if b["engine"] == "tensordb bm25"), None)
    target("indexing throughput >= 0.8x bare bm25s",
           td_build["docs/s"] / (n_docs / bare.build_s) if td_build else None, lambda v: v >= 0.8,
           "indexing throughput ratio (tensordb / bm25s)")
    print_targets(ratios, targets)
    write_json("hybrid", {"data": name, "documents": n_docs, "train_queries": len(train.texts),
                          "dev_queries": n_dev, "bm25_settings": BM25_SETTINGS, "dev": rows, "build": build,
                          "bm25_latency_ms": latency, "score_parity": parity, "alpha": alpha,
                          "train_ndcg@10_by_alpha": {str(a): v for a, v in by_alpha.items()},
                          "deep_memory_train_s": train_s, "notes": notes, "ratios": ratios,
                          "targets": targets}, args.out)


if __name__ == "__main__":
    main()
