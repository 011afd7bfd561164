"""``vs.deep_memory``: train, watch, evaluate and manage Deep Memory models of a store."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.engines import check_engine
from ..errors import SampleError, TensorDBError, VersionError
from . import jobs as jobmod
from .corpus import DocumentCorpus
from .fusion import Ranking, fusion_or_default
from .jobs import JobRecord
from .metrics import evaluate_rankings, recall_curve
from .model import DeepMemoryModel
from .plotting import CURVE_MAX_K, check_plot_path, plot_recall_at_k
from .relevance import check_relevance
from .tql import jobs_of
from .training import FUSION_DEPTH, TrainingCancelled, train_model

DEFAULT_TOP_K = (1, 3, 5, 10, 50, 100)
#: How often a running job writes its progress into its record.
PROGRESS_EVERY_SECONDS = 1.0


class DeepMemory:
    """Deep Memory of one document corpus (such as a VectorStore): jobs persist inside its dataset."""

    def __init__(self, corpus: DocumentCorpus):
        self._corpus = corpus
        self._jobs = jobs_of(corpus.dataset)

    # -- training -------------------------------------------------------------------------------
    def train(
        self,
        queries: Sequence[str],
        relevance: Sequence[Sequence[Any]],
        embedding_function: Any = None,
        max_seconds: float = 60.0,
        seed: int = 0,
        validation_queries: Sequence[str] | None = None,
        validation_relevance: Sequence[Sequence[Any]] | None = None,
        engine: str = "local",
        num_workers: int | None = None,
    ) -> str:
        """Start training in the background and return the job id at once.

        ``relevance[i]`` lists ``(id, score)`` pairs (score in [0, 1]) relevant to ``queries[i]``.
        ``validation_queries`` / ``validation_relevance`` (same format): a few real questions
        that alone choose the model and decide whether it beats no model, when the training
        queries are synthetic (see :func:`~.generate.generate_queries`). Without them part of
        the training queries is held out (k-fold below 200 queries). ``engine="ray"`` trains as a
        Ray Train job of ``num_workers`` torch DDP workers (default 2; needs
        ``pip install "tensordb[ray]"``); the record and model land as a local job's do. Bad input
        raises before anything is written.
        """
        workers = _checked_engine(engine, num_workers)
        ds = self._corpus.dataset
        ds.check_writable("train Deep Memory")
        if ds.in_batch:
            # The job records its progress as writes, which would wait for the block: it could never finish in it.
            raise VersionError("train inside a 'with ds:' block is not allowed; train after the block")
        doc_ids, doc_embeddings = self._corpus.ids_and_embeddings()
        pairs = check_relevance(queries, relevance, set(doc_ids))
        validation = _checked_validation(validation_queries, validation_relevance, set(doc_ids))
        query_embeddings = self._corpus.embed_queries(list(queries), embedding_function)
        if validation is not None:
            validation = (self._corpus.embed_queries(list(validation_queries or []), embedding_function), validation)
        record = JobRecord(
            id=jobmod.new_job_id(), status=jobmod.PENDING, created=time.time(), commit_id=ds.commit_id,
            n_queries=len(queries), engine=_engine_note(workers),
        )
        self._jobs.save(record)

        texts = (list(queries), None if validation is None else list(validation_queries or []))

        def run(stop: threading.Event) -> None:
            self._run_job(record, doc_embeddings, doc_ids, query_embeddings, pairs, max_seconds, seed, stop,
                          validation, texts, workers)

        self._jobs.start(record.id, run)
        return record.id

    def _run_job(
        self,
        record: JobRecord,
        doc_embeddings: np.ndarray,
        doc_ids: list[str],
        query_embeddings: np.ndarray,
        relevance: list[list[tuple[str, float]]],
        max_seconds: float,
        seed: int,
        stop: threading.Event,
        validation: tuple[np.ndarray, list[list[tuple[str, float]]]] | None = None,
        texts: tuple[list[str], list[str] | None] = ([], None),
        ray_workers: int | None = None,
    ) -> None:
        record.status, record.started = jobmod.RUNNING, time.time()
        last_save = 0.0
        try:
            self._jobs.save(record)

            def progress(epoch: int, max_epochs: int, metrics: dict[str, float]) -> None:
                nonlocal last_save
                record.epoch, record.max_epochs, record.progress = epoch, max_epochs, dict(metrics)
                if time.monotonic() - last_save >= PROGRESS_EVERY_SECONDS:
                    last_save = time.monotonic()
                    self._jobs.save(record)

            val_embeddings, val_relevance = validation if validation is not None else (None, None)
            # With a text index, the job also learns how hybrid search fuses the model's ranking with BM25's.
            rankings = getattr(self._corpus, "lexical_rankings", None)
            lexical, val_lexical = (rankings(t, FUSION_DEPTH) if t is not None and rankings else None for t in texts)
            options: dict[str, Any] = dict(
                seed=seed, max_seconds=max_seconds, progress=progress, should_stop=stop.is_set,
                validation_query_embeddings=val_embeddings, validation_relevance=val_relevance,
                lexical_rankings=lexical, validation_lexical_rankings=val_lexical,
            )
            if ray_workers is None:
                result = train_model(doc_embeddings, doc_ids, query_embeddings, relevance, **options)
            else:
                from .ray_training import train_on_ray

                result = train_on_ray(doc_embeddings, doc_ids, query_embeddings, relevance,
                                      num_workers=ray_workers, **options)
            # The model lands before the record says completed: search never sees half a job.
            self._jobs.save_model(record.id, result.model)
            record.baseline, record.results = result.val_metrics_before, result.val_metrics_after
            record.improved, record.seconds = result.improved, result.seconds
            record.validated_on, record.time_budget = result.validated_on, result.time_budget_note
            record.fusion = "" if result.fusion is None else result.fusion.describe()
            record.status = jobmod.COMPLETED
        except TrainingCancelled:
            record.status = jobmod.CANCELLED
        except Exception as e:  # the job reports every failure in its record
            record.status, record.error = jobmod.FAILED, f"{type(e).__name__}: {e}"
        record.finished = time.time()
        try:
            self._jobs.save(record)
        except TensorDBError:
            pass  # the dataset went away (closed); the record reads as failed next time

    # -- jobs -----------------------------------------------------------------------------------
    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job ends (or ``timeout`` seconds pass); returns its status."""
        if self._corpus.dataset.in_batch:
            raise VersionError("wait inside a 'with ds:' block is not allowed: the job's writes wait for the block")
        self._jobs.load(job_id)
        self._jobs.wait(job_id, timeout)
        return self.status(job_id, show=False)

    def status(self, job_id: str, show: bool = True) -> dict[str, Any]:
        """The job's status, progress and results; prints a boxed table unless ``show=False``."""
        record = self._jobs.load(job_id)
        info = {
            "id": record.id,
            "status": record.status,
            "progress": _progress_text(record),
            "results": _results_text(record),
            "validated_on": record.validated_on,
            "time_budget": record.time_budget,
            "fusion": record.fusion,
            "record": record,
        }
        if show:
            print(format_box(record.id, status_rows(info)))
        return info

    def list_jobs(self, show: bool = True) -> list[dict[str, Any]]:
        """Every job of this store, oldest first; printed as a table unless ``show=False``."""
        rows = [self.status(r.id, show=False) for r in self._jobs.records()]
        if show:
            header = f"{'ID':<26}{'STATUS':<12}{'RESULTS':<34}PROGRESS"
            print(header)
            for r in rows:
                print(f"{r['id']:<26}{r['status']:<12}{'; '.join(r['results']):<34}{'; '.join(r['progress'])}")
        return rows

    def cancel(self, job_id: str) -> bool:
        """Ask a running job to stop; returns whether it was running here."""
        self._jobs.load(job_id)
        return self._jobs.cancel(job_id)

    def delete(self, job_id: str) -> None:
        """Remove a finished job and its model."""
        record = self._jobs.load(job_id)
        if record.status in (jobmod.PENDING, jobmod.RUNNING):
            raise TensorDBError(f"job {job_id!r} is {record.status}; cancel it and wait before deleting")
        self._corpus.dataset.check_writable("delete a Deep Memory job")
        self._jobs.delete(job_id)

    def model(self) -> DeepMemoryModel | None:
        """The model search uses: that of the latest completed job (``None`` if none)."""
        latest = self._jobs.latest_model()
        return None if latest is None else latest[1]

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(
        self,
        queries: Sequence[str],
        relevance: Sequence[Sequence[Any]],
        embedding_function: Any = None,
        top_k: Sequence[int] = DEFAULT_TOP_K,
        show: bool = True,
        plot: str | os.PathLike[str] | None = None,
        mode: str = "vector",
    ) -> dict[str, dict[str, float]]:
        """Recall@k (and nDCG@10, MRR@10) without and with the trained model, on these queries.

        ``mode="hybrid"`` compares hybrid search as ``search(mode="hybrid")`` runs it: without the
        model, the plain embeddings fused with BM25 by the default fusion; with it, the model's
        ranking fused with BM25 as its training chose (needs a text index).
        ``plot="recall.png"`` also draws recall@k for k = 1..100, with and without the
        model, on a log-scaled k axis (needs matplotlib: ``pip install "tensordb[models]"``).
        A plot that cannot be written is refused before any work.
        """
        if mode not in ("vector", "hybrid"):
            raise SampleError(f"evaluate: mode must be 'vector' or 'hybrid', got {mode!r}")
        plot_path = check_plot_path(plot) if plot is not None else None
        model = self.model()
        if model is None:
            raise TensorDBError("no trained Deep Memory model: run vs.deep_memory.train(...) and wait for it first")
        doc_ids, doc_embeddings = self._corpus.ids_and_embeddings()
        pairs = check_relevance(queries, relevance, set(doc_ids))
        query_embeddings = self._corpus.embed_queries(list(queries), embedding_function)
        ks = sorted({int(k) for k in top_k} | {10})
        # One ranking per query, deep enough for every k asked and for the whole curve.
        depth = max(ks + ([CURVE_MAX_K] if plot_path else []))
        identity = DeepMemoryModel.identity(model.dim)
        lexical = self._lexical_rankings(list(queries), depth) if mode == "hybrid" else None
        out, curves = {}, {}
        for label, m in (("without model", identity), ("with model", model)):
            ranked = self._ranked(m, query_embeddings, doc_embeddings, doc_ids, depth, lexical)
            judged = [dict(p) for p in pairs]
            metrics = evaluate_rankings(ranked, judged, top_k=ks)
            out[label] = {k: v for k, v in metrics.items() if k.split("@")[0] == "recall"
                          or k in ("ndcg@10", "mrr@10")}
            if plot_path:
                curves[label.replace("model", "Deep Memory")] = recall_curve(ranked, judged, CURVE_MAX_K)
            if show:
                print(f"---- Evaluating {label.replace('model', 'Deep Memory')} ----")
                for k in ks:
                    if k in top_k:
                        print(f"Recall@{k}:\t{100 * metrics[f'recall@{k}']:.1f}%")
        if plot_path:
            plot_recall_at_k(curves, plot_path)
            if show:
                print(f"recall@k plot written to {plot_path}")
        return out


    def _lexical_rankings(self, queries: list[str], depth: int) -> list[Ranking]:
        rankings = getattr(self._corpus, "lexical_rankings", None)
        found = None if rankings is None else rankings(queries, max(depth, FUSION_DEPTH))
        if found is None:
            raise SampleError("evaluate: mode='hybrid' needs a text index on the corpus (a bm25 index on 'text')")
        return found

    @staticmethod
    def _ranked(model: DeepMemoryModel, queries: np.ndarray, docs: np.ndarray, doc_ids: list[str], depth: int,
                lexical: list[Ranking] | None) -> list[list[str]]:
        """Each query's ranking: ``model``'s, or (given BM25's) their fusion as hybrid search makes it."""
        if lexical is None:
            return model.search(queries, docs, doc_ids, k=depth)
        choice = fusion_or_default(model.metadata.get("fusion"))
        dense = [Ranking([doc_ids[r] for r in rows], scores)
                 for rows, scores in model.scored_search(queries, docs, doc_ids, max(depth, FUSION_DEPTH))]
        return [[str(k) for k in choice.apply(d, x).keys[:depth]] for d, x in zip(dense, lexical, strict=True)]


def status_rows(info: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The rows of a job's status table (for :func:`format_box`), from :meth:`DeepMemory.status`'s dict."""
    rows = [("status", [info["status"]]), ("progress", info["progress"]), ("results", info["results"])]
    if info.get("validated_on"):
        rows.append(("validated on", [info["validated_on"]]))
    if info.get("time_budget"):  # only a run the budget cut
        rows.append(("time budget", [info["time_budget"]]))
    if info.get("fusion"):  # only a corpus with a text index
        rows.append(("hybrid fusion", [info["fusion"]]))
    return rows


#: The Ray worker count when none is given.
DEFAULT_RAY_WORKERS = 2


def _checked_engine(engine: Any, num_workers: Any) -> int | None:
    """The Ray worker count for ``engine="ray"`` (``None`` for local), once Ray is known to be installed."""
    check_engine(engine, num_workers)
    if engine == "local":
        return None
    from .ray_training import require_ray

    require_ray()
    return DEFAULT_RAY_WORKERS if num_workers is None else int(num_workers)


def _engine_note(ray_workers: int | None) -> str:
    """Where a job trains, as its record says it: "local" or "ray (2 workers)"."""
    if ray_workers is None:
        return "local"
    return f"ray ({ray_workers} worker{'s' if ray_workers > 1 else ''})"


def _checked_validation(
    queries: Sequence[str] | None, relevance: Sequence[Sequence[Any]] | None, known_ids: set[str]
) -> list[list[tuple[str, float]]] | None:
    """The validation set's judgements as ``(id, score)`` pairs, ``None`` when none is given."""
    if queries is None and relevance is None:
        return None
    if queries is None or relevance is None:
        given = "validation_queries" if relevance is None else "validation_relevance"
        raise SampleError(f"a validation set needs both validation_queries and validation_relevance; "
                          f"only {given} was given")
    try:
        return check_relevance(queries, relevance, known_ids)
    except SampleError as e:
        raise SampleError(f"validation set: {e}") from None


def _pct(metrics: dict[str, float], baseline: dict[str, float], key: str = "recall@10") -> str:
    if key not in metrics:
        return ""
    delta = metrics[key] - baseline.get(key, metrics[key])
    return f"{key}: {100 * metrics[key]:.2f}% ({100 * delta:+.2f}%)"


def _progress_text(record: JobRecord) -> list[str]:
    if record.status in (jobmod.PENDING,):
        return ["waiting to start"]
    if record.status == jobmod.RUNNING:
        lines = [f"epoch {record.epoch}/{record.max_epochs}"]
        if record.started and record.epoch:
            per_epoch = (time.time() - record.started) / record.epoch
            lines.append(f"eta: {per_epoch * max(record.max_epochs - record.epoch, 0):.1f} seconds")
        if record.progress:
            lines.append(_pct(record.progress, record.baseline or record.progress))
        return lines
    lines = [f"duration: {record.seconds:.1f} seconds"]
    if record.error:
        lines.append(record.error)
    return lines


def _results_text(record: JobRecord) -> list[str]:
    if record.status != jobmod.COMPLETED:
        return ["not available yet" if record.status in (jobmod.PENDING, jobmod.RUNNING) else "none"]
    lines = [_pct(record.results, record.baseline)]
    if not record.improved:
        lines.append("no gain on validation: the identity (no change) was kept")
    return lines


def format_box(title: str, rows: list[tuple[str, list[str]]]) -> str:
    """A boxed two-column table: each key beside its lines of values."""
    left = max(len(k) for k, _ in rows) + 2
    right = max([len(title) - left] + [len(v) for _, vs in rows for v in vs]) + 2
    rule = "-" * (left + right + 3)
    out = [rule, f"|{title.center(left + right + 1)}|", rule]
    for key, values in rows:
        for i, value in enumerate(values or [""]):
            out.append(f"| {(key if i == 0 else ''):<{left - 1}}| {value:<{right - 1}}|")
        out.append(rule)
    return "\n".join(out)
