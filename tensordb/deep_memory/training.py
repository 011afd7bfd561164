"""Training of :class:`~.model.DeepMemoryModel` from labelled queries.

Loss: weighted InfoNCE. For query ``i`` with positives ``P_i`` (relevance score > 0)::

    loss_i = - sum_{p in P_i} w_p * log softmax(s(q_i, .) / T)[p] / sum_p w_p

with ``w_p`` the graded relevance score and the softmax over *all* corpus documents
when the corpus has at most ``full_softmax_max_docs`` rows, otherwise over the
positives plus hard negatives mined once with the untrained (cosine) model. L2
regularisation pulls ``A`` toward the identity and the memory toward zero; it grows
when few queries are available, so tiny label sets can only nudge the ranking.

Model selection: a seeded split of the queries into train / validation; after every
epoch the validation queries are ranked against the whole corpus and the epoch with
the best validation score (mean of nDCG@10 and recall@10, see
:func:`_selection_score`) is kept, with early stopping. If that best model does not
beat the identity on validation, the identity is returned (``improved=False``).
Otherwise (``config.refit``, and always after cross-validation, which leaves no
held-out model) the model is refitted on *all* queries for the chosen number of epochs
(the memory then covers validation-query documents too); ``val_metrics_after`` always
reports the held-out model, never the refit.

Reproducibility: the same data, seed and settings give the same model bit for bit,
however fast the machine runs; the clock is read only to enforce ``max_seconds``.
When that budget runs out (it is checked after every epoch) the run says so:
``TrainingResult.stopped_by_time_budget`` names the phase that was cut
(``"selection"``: the best epoch so far is kept; ``"refit"`` after a hold-out: the
held-out model is shipped instead), ``stopped_at_epoch`` / ``planned_epochs`` say how
far it got, and :attr:`TrainingResult.time_budget_note` says it in words. The refit
after cross-validation is never cut: there is no held-out model to fall back on.

A given validation set (``validation_query_embeddings`` with ``validation_relevance``:
a few real questions beside synthetic training queries) replaces the split: every
training query trains, the validation queries alone choose the epoch and decide
whether the model beats the identity, and the model they judged is the one shipped
(no refit). ``TrainingResult.validated_on`` names the set that decided.

Cancellation: ``should_stop()`` is polled between minibatches; when it returns true a
:class:`TrainingCancelled` is raised and nothing is returned (a cancelled job ships no
half-trained model).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .fusion import FusionChoice, Ranking, fit_fusion
from .metrics import DEFAULT_TOP_K, Relevance, evaluate_rankings
from .model import DeepMemoryModel

ProgressFn = Callable[[int, int, dict[str, float]], None]


class TrainingCancelled(Exception):
    """Raised by :func:`train_model` when ``should_stop()`` returned true."""


@dataclass
class TrainingConfig:
    """Hyper-parameters; defaults were tuned on the SciFact train split only."""

    temperature: float = 0.05
    lr_query: float = 1e-3
    lr_memory: float = 1e-3
    # Per-query-normalised L2 strengths: the effective penalty is
    # ``reg * ref_queries / n_train`` so it weakens as labels grow.
    reg_query: float = 1e-3
    reg_memory: float = 1e-4
    ref_queries: int = 500
    reg_power: float = 1.0
    # A dense d×d transform fitted on a handful of queries moves *every* query and
    # hurt unrelated ones in SciFact few-label runs; below this many usable queries
    # only the sparse memory (which touches only its own documents) is learned.
    min_queries_for_transform: int = 100
    batch_size: int = 64
    max_epochs: int = 200
    patience: int = 15
    min_improvement: float = 1e-3  # val score gain over identity needed to ship
    full_softmax_max_docs: int = 200_000
    hard_negatives: int = 512
    max_val_queries: int = 1000
    min_val_queries: int = 5
    cv_below_queries: int = 200  # fewer usable queries → k-fold cross-validation
    cv_folds: int = 5
    refit: bool = True
    use_query_transform: bool = True
    use_memory: bool = True


@dataclass
class TrainingResult:
    """Outcome of :func:`train_model`.

    ``val_metrics_before`` / ``val_metrics_after`` are :func:`evaluate_rankings` dicts
    on the validation queries for the identity and for the selected (held-out) model;
    ``history`` has one dict per epoch (``epoch``, ``loss``, ``val_score`` and the val
    metrics); ``improved`` tells whether a non-identity model was shipped.
    """

    model: DeepMemoryModel
    val_metrics_before: dict[str, float]
    val_metrics_after: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    improved: bool = False
    seconds: float = 0.0
    best_epoch: int = 0
    refitted: bool = False
    n_train_queries: int = 0
    n_val_queries: int = 0
    validated_on: str = ""
    #: The phase the time budget cut ("selection" or "refit"), ``None`` when it did not run out.
    stopped_by_time_budget: str | None = None
    stopped_at_epoch: int = 0  # epochs the cut phase completed
    planned_epochs: int = 0  # epochs it would have run (max_epochs for selection, best_epoch for the refit)
    #: How hybrid search fuses this model's ranking with BM25's, when lexical rankings were given.
    fusion: FusionChoice | None = None

    @property
    def time_budget_note(self) -> str:
        """The time budget's cut in words ("" when the budget did not run out)."""
        return budget_note(self.stopped_by_time_budget, self.stopped_at_epoch, self.planned_epochs)


def budget_note(phase: str | None, epoch: int, planned: int) -> str:
    """One line on what a time budget that ran out cut ("" when ``phase`` is ``None``)."""
    if phase is None:
        return ""
    head = f"time budget ran out during {phase} at epoch {epoch} of {planned}"
    if phase == "selection":
        return f"{head}; the model was chosen from the epochs learned by then"
    return f"{head}; the held-out model was shipped instead of the unfinished refit"


class Replicas:
    """The processes one training run is replicated over; this base is the single local process.

    Every replica runs the same :func:`train_model` on the same data and seed. A data-parallel
    subclass (:mod:`.ray_training`) replaces each trainer's objective so that a replica computes
    the loss of its share of every minibatch and the gradients are averaged across replicas:
    all of them then take the same step, and make the same epoch and stopping decisions.
    """

    def objective(self, trainer: Any) -> Callable[..., Any]:
        """What ``trainer.step`` minimises: here the whole minibatch's loss, unchanged."""
        return trainer.loss


def _selection_score(m: Mapping[str, float]) -> float:
    # nDCG rewards the top of the list, recall@10 guards the rest of the page.
    return 0.5 * m["ndcg@10"] + 0.5 * m["recall@10"]


def _as_pairs(rel: Relevance) -> list[tuple[str, float]]:
    items = rel.items() if isinstance(rel, Mapping) else rel
    return [(str(d), float(s)) for d, s in items]


class _Trainer:
    """Torch state for one training run (kept out of the model: inference is numpy)."""

    def __init__(
        self,
        docs_unit: Any,  # torch.Tensor (n, d), unit rows
        memory_rows: np.ndarray,
        cfg: TrainingConfig,
        n_train: int,
        seed: int,
        use_transform: bool = True,
    ) -> None:
        import torch

        self.torch = torch
        self.cfg = cfg
        self.docs = docs_unit
        n, d = docs_unit.shape
        self.memory_rows = torch.as_tensor(memory_rows, dtype=torch.long)
        self.mem_of_row = torch.full((n,), -1, dtype=torch.long)
        self.mem_of_row[self.memory_rows] = torch.arange(len(memory_rows))
        g = torch.Generator().manual_seed(seed)
        self.gen = g
        # Parameters (not bare tensors) so that a data-parallel wrapper can hold them (see :class:`Replicas`).
        self.W = torch.nn.Parameter(torch.zeros(d, d))
        self.M = torch.nn.Parameter(torch.zeros(len(memory_rows), d))
        groups = []
        if use_transform:
            groups.append({"params": [self.W], "lr": cfg.lr_query})
        if cfg.use_memory and len(memory_rows):
            groups.append({"params": [self.M], "lr": cfg.lr_memory})
        self.opt = torch.optim.Adam(groups) if groups else None
        #: ``objective(q, pos_idx, pos_w, cand)`` → the loss :meth:`step` minimises; :class:`Replicas` may replace it.
        self.objective: Callable[..., Any] = self.loss
        scale = (cfg.ref_queries / max(n_train, 1)) ** cfg.reg_power
        self.reg_w = cfg.reg_query * scale
        self.reg_m = cfg.reg_memory * scale

    def qprime(self, q: Any) -> Any:
        t = self.torch
        return t.nn.functional.normalize(q + q @ self.W, dim=1)

    def logits(self, qp: Any, cand: Any | None) -> Any:
        """Model scores of ``qp`` against candidate rows (all rows when ``cand`` is None)."""
        t = self.torch
        if cand is None:
            s = qp @ self.docs.T
            if self.M.shape[0]:
                s = s.index_add(1, self.memory_rows, qp @ self.M.T)
            return s
        s = qp @ self.docs[cand].T
        mem = self.mem_of_row[cand]
        has = t.nonzero(mem >= 0).flatten()
        if has.numel():
            s = s.index_add(1, has, qp @ self.M[mem[has]].T)
        return s

    def log_likelihoods(self, q: Any, pos_idx: Any, pos_w: Any, cand: Any | None) -> Any:
        """Each query's weighted mean log-probability of its positives; ``pos_idx``/``pos_w`` are (b, P), 0-padded."""
        qp = self.qprime(q)
        logits = self.logits(qp, cand) / self.cfg.temperature
        logp = logits.log_softmax(dim=1)
        lp = logp.gather(1, pos_idx)
        return (lp * pos_w).sum(1) / pos_w.sum(1)

    def penalised(self, data_loss: Any) -> Any:
        """``data_loss`` plus the L2 pull of ``A`` toward the identity and of the memory toward zero."""
        return data_loss + self.reg_w * (self.W**2).sum() + self.reg_m * (self.M**2).sum()

    def loss(self, q: Any, pos_idx: Any, pos_w: Any, cand: Any | None) -> Any:
        """The minibatch's loss: weighted InfoNCE averaged over its queries, plus the L2 terms."""
        return self.penalised(-self.log_likelihoods(q, pos_idx, pos_w, cand).mean())

    def step(self, q: Any, pos_idx: Any, pos_w: Any, cand: Any | None) -> float:
        """One optimiser step on a minibatch; ``pos_idx``/``pos_w`` are (b, P) padded with weight 0."""
        assert self.opt is not None
        loss = self.objective(q, pos_idx, pos_w, cand)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def trained_parameters(self) -> list[Any]:
        """The tensors the optimiser updates (``W`` and/or ``M``)."""
        return [] if self.opt is None else [p for group in self.opt.param_groups for p in group["params"]]

    def to_model(self, memory_ids: list[str]) -> DeepMemoryModel:
        d = self.W.shape[0]
        A = np.eye(d, dtype=np.float32) + self.W.detach().numpy()
        return DeepMemoryModel(A, memory_ids, self.M.detach().numpy().copy())

    def rank(self, q: Any, k: int) -> np.ndarray:
        t = self.torch
        with t.no_grad():
            out = []
            for s in range(0, q.shape[0], 256):
                sc = self.logits(self.qprime(q[s : s + 256]), None)
                out.append(sc.topk(min(k, sc.shape[1]), dim=1).indices.numpy())
            return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


def _make_folds(
    n_q: int, val_fraction: float, cfg: TrainingConfig, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Hold-out split for many queries, k-fold cross-validation for few."""
    perm = rng.permutation(n_q)
    if n_q < 2:
        return []
    if n_q < cfg.cv_below_queries:
        k = max(2, min(cfg.cv_folds, n_q // max(cfg.min_val_queries, 1)))
        parts = np.array_split(perm, k)
        return [(np.sort(np.concatenate(parts[:j] + parts[j + 1 :])), np.sort(parts[j])) for j in range(k)]
    n_val = int(round(val_fraction * n_q))
    n_val = min(max(n_val, cfg.min_val_queries), cfg.max_val_queries, n_q // 2)
    return [(np.sort(perm[n_val:]), np.sort(perm[:n_val]))]


def train_model(
    doc_embeddings: np.ndarray,
    doc_ids: Sequence[str],
    query_embeddings: np.ndarray,
    relevance: Sequence[Relevance],
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_seconds: float = 60.0,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    config: TrainingConfig | None = None,
    num_threads: int | None = 2,
    validation_query_embeddings: np.ndarray | None = None,
    validation_relevance: Sequence[Relevance] | None = None,
    clock: Callable[[], float] = time.monotonic,
    lexical_rankings: Sequence[Ranking] | None = None,
    validation_lexical_rankings: Sequence[Ranking] | None = None,
    replicas: Replicas | None = None,
) -> TrainingResult:
    """Train a Deep Memory model.

    Args:
        doc_embeddings: ``(n, d)`` corpus embeddings (rows need not be unit norm).
        doc_ids: ``n`` document ids (strings), row order of ``doc_embeddings``.
        query_embeddings: ``(m, d)`` training query embeddings.
        relevance: ``m`` judgements, ``{doc_id: score}`` or ``[(doc_id, score)]``,
            score in [0, 1]; ids missing from ``doc_ids`` are ignored.
        val_fraction: share of queries held out for early stopping / model selection
            (at least ``config.min_val_queries``). Below ``config.cv_below_queries``
            usable queries, k-fold cross-validation is used instead and its pooled
            validation metrics are reported.
        seed: controls the split and minibatch order.
        max_seconds: wall-clock budget, checked after every epoch; when it runs out training
            stops early and the result says where (``stopped_by_time_budget``). It never
            changes what is learned otherwise.
        progress: ``progress(epoch, max_epochs, val_metrics)`` after every epoch.
        should_stop: polled between minibatches; true → :class:`TrainingCancelled`.
        config: hyper-parameters (:class:`TrainingConfig`).
        num_threads: torch intra-op threads (``None`` leaves torch's setting alone).
        validation_query_embeddings, validation_relevance: a separate validation set
            (``(v, d)`` and ``v`` judgements); when given, it alone selects the epoch and
            guards against shipping a model worse than the identity, and
            ``val_fraction`` / cross-validation are not used.
        clock: the time source ``max_seconds`` is measured with (seconds, monotonic);
            tests pass a simulated one.
        lexical_rankings, validation_lexical_rankings: each query's BM25 ranking (keyed by
            document id, best first), aligned with ``query_embeddings`` and the validation set.
            When given, the fusion of the model's ranking with BM25's is fitted on the
            validation queries with the held-out model (:func:`~.fusion.fit_fusion`), stored
            in ``model.metadata["fusion"]`` and returned as ``fusion``.
        replicas: the processes the run is replicated over (default: this one alone); a
            data-parallel run also passes ``should_stop`` and ``clock`` that every replica agrees on.
    """
    budget = _Clock(clock, max_seconds)
    cfg = config or TrainingConfig()
    docs, queries = _checked_arrays(doc_embeddings, doc_ids, query_embeddings, relevance)
    validation = _checked_validation(docs, validation_query_embeddings, validation_relevance)
    _check_lexical(lexical_rankings, len(relevance), validation_lexical_rankings, validation_relevance)
    with _torch_threads(num_threads):
        run = _Run(docs, queries, [str(i) for i in doc_ids], relevance, val_fraction, cfg, seed, should_stop,
                   validation, replicas or Replicas())
        before = run.pooled_metrics([None] * len(run.folds)) if run.folds else {}
        selection = _select_epochs(run, before, budget, progress)
        improved = bool(selection.best_epoch > 0
                        and _selection_score(selection.after) > _selection_score(before) + cfg.min_improvement)
        if improved:
            model, refitted = _shipped_model(run, selection, budget)
            held_out = [tr.to_model(memory) for tr, memory in selection.fold_models]
        else:
            selection.after = before
            model, refitted = DeepMemoryModel.identity(docs.shape[1]), False
            held_out = [model] * len(run.folds)
        result = _result(run, model, before, selection, improved, refitted, budget)
        if lexical_rankings is not None and run.folds:
            result.fusion = _fitted_fusion(run, held_out, docs, lexical_rankings, validation_lexical_rankings)
            model.metadata["fusion"] = result.fusion.to_dict()
        return result


#: How deep each side's ranking goes when the fusion is fitted (as deep as hybrid search fetches).
FUSION_DEPTH = 100


def _fitted_fusion(run: _Run, held_out: list[DeepMemoryModel], docs: np.ndarray, lexical: Sequence[Ranking],
                   validation_lexical: Sequence[Ranking] | None) -> FusionChoice:
    """The fusion the validation queries choose, each ranked by the model held out from it (its fold's)."""
    dense = []
    for model, (_, fold_validation) in zip(held_out, run.folds, strict=True):
        found = model.scored_search(run.queries[fold_validation].numpy(), docs, run.ids, FUSION_DEPTH)
        dense += [Ranking([run.ids[r] for r in rows], scores) for rows, scores in found]
    positions = [int(i) for i in run.val_all]  # the folds' validation queries, in fold order
    # Validation queries sit after the training ones (a given set) or among them (a split).
    lexical_of = [lexical[run.keep[i]] if i < run.n_queries else validation_lexical[run.val_keep[i - run.n_queries]]
                  for i in positions]
    return fit_fusion(dense, lexical_of, run.val_relevance)


@dataclass(frozen=True)
class _Cut:
    """Where the time budget stopped a phase: after ``epoch`` of its ``planned`` epochs."""

    phase: str
    epoch: int
    planned: int


class _Clock:
    """The run's time source, start and budget, and the cut the budget made (if it ran out)."""

    def __init__(self, now: Callable[[], float], max_seconds: float) -> None:
        self.now, self.max_seconds = now, max_seconds
        self.start = now()
        self.cut: _Cut | None = None

    def elapsed(self) -> float:
        return self.now() - self.start

    def ran_out(self) -> bool:
        """Whether the whole budget is spent (a cut already recorded counts as spent, without a reading)."""
        return self.cut is not None or self.now() > self.start + self.max_seconds

    def stops(self, phase: str, epoch: int, planned: int) -> bool:
        """Whether ``phase`` must stop after ``epoch`` of ``planned`` epochs; records the cut when it must."""
        if epoch >= planned or not self.ran_out():
            return False
        self.cut = self.cut or _Cut(phase, epoch, planned)
        return True


def _checked_arrays(
    doc_embeddings: np.ndarray, doc_ids: Sequence[str], query_embeddings: np.ndarray, relevance: Sequence[Relevance]
) -> tuple[np.ndarray, np.ndarray]:
    """Documents and queries as float32 matrices of one dimension, with one id / judgement per row."""
    docs = np.asarray(doc_embeddings, dtype=np.float32)
    queries = np.asarray(query_embeddings, dtype=np.float32)
    assert docs.ndim == 2 and queries.ndim == 2 and docs.shape[1] == queries.shape[1]
    assert len(doc_ids) == docs.shape[0] and len(relevance) == queries.shape[0]
    return docs, queries


def _check_lexical(lexical: Sequence[Ranking] | None, n_queries: int, validation_lexical: Sequence[Ranking] | None,
                   validation_relevance: Sequence[Relevance] | None) -> None:
    """Refuse BM25 rankings that are not one per query (training and validation), before any training."""
    if lexical is None:
        if validation_lexical is not None:
            raise ValueError("validation_lexical_rankings given without lexical_rankings for the training queries")
        return
    if len(lexical) != n_queries:
        raise ValueError(f"lexical_rankings: expected one ranking per training query ({n_queries}), got {len(lexical)}")
    if validation_relevance is None:
        if validation_lexical is not None:
            raise ValueError("validation_lexical_rankings given without a validation set")
        return
    if validation_lexical is None or len(validation_lexical) != len(validation_relevance):
        got = "none" if validation_lexical is None else len(validation_lexical)
        raise ValueError(f"validation_lexical_rankings: expected one ranking per validation query "
                         f"({len(validation_relevance)}), got {got}")


def _checked_validation(
    docs: np.ndarray, query_embeddings: np.ndarray | None, relevance: Sequence[Relevance] | None
) -> tuple[np.ndarray, Sequence[Relevance]] | None:
    """The given validation set as a float32 matrix beside its judgements, or ``None`` when none was given."""
    if query_embeddings is None and relevance is None:
        return None
    if query_embeddings is None or relevance is None:
        raise ValueError("a validation set needs both validation_query_embeddings and validation_relevance")
    queries = np.asarray(query_embeddings, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != docs.shape[1] or len(relevance) != queries.shape[0]:
        raise ValueError(f"validation set: expected ({len(relevance)}, {docs.shape[1]}) query embeddings "
                         f"(one per judgement, the documents' dimension), got {queries.shape}")
    return queries, relevance


@contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run with ``num_threads`` torch intra-op threads (``None``: leave the setting alone)."""
    import torch

    previous = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        if num_threads:
            torch.set_num_threads(previous)


class _Run:
    """One training run's shared state: corpus, usable queries, folds, and the minibatch order."""

    def __init__(self, docs: np.ndarray, queries: np.ndarray, ids: list[str], relevance: Sequence[Relevance],
                 val_fraction: float, cfg: TrainingConfig, seed: int, should_stop: Callable[[], bool] | None,
                 validation: tuple[np.ndarray, Sequence[Relevance]] | None = None,
                 replicas: Replicas | None = None) -> None:
        import torch

        self.torch = torch
        self.cfg, self.seed, self.should_stop, self.ids = cfg, seed, should_stop, ids
        self.replicas = replicas or Replicas()
        n_docs, dim = docs.shape
        keep, self.positives = _usable_queries(ids, relevance)
        self.keep, self.val_keep = keep, []
        self.n_queries = len(keep)
        # Decided on the whole label set so that validation and refit train the same family.
        self.use_transform = cfg.use_query_transform and self.n_queries >= cfg.min_queries_for_transform
        self.docs = torch.nn.functional.normalize(torch.from_numpy(docs), dim=1)
        kept = queries[keep] if keep else np.zeros((0, dim), np.float32)
        if validation is None:
            self.folds = _make_folds(self.n_queries, val_fraction, cfg, np.random.default_rng(seed))
            self.refit = cfg.refit
            self.validated_on = _split_name(self.folds)
        else:
            # The validation queries sit after the training ones; only training rows are ever trained on.
            kept, self.folds = self._append_validation(kept, validation)
            self.refit = False  # ship the model the validation set judged
            self.validated_on = f"given validation set ({len(self.folds[0][1]) if self.folds else 0} queries)"
        self.queries = torch.from_numpy(np.ascontiguousarray(kept))
        self.kmax = min(max(DEFAULT_TOP_K), n_docs)
        self.val_all = np.concatenate([v for _, v in self.folds]) if self.folds else np.zeros(0, np.int64)
        judged = [{ids[r]: s for r, s in p} for p in self.positives]
        self.val_relevance = [judged[i] for i in self.val_all]
        self.full_softmax = n_docs <= cfg.full_softmax_max_docs
        self.gen = torch.Generator().manual_seed(seed)

    def _append_validation(self, kept: np.ndarray, validation: tuple[np.ndarray, Sequence[Relevance]]
                           ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """Training queries followed by the usable validation queries, and the one fold (train, validation)."""
        val_queries, val_relevance = validation
        val_keep, val_positives = _usable_queries(self.ids, val_relevance)
        self.val_keep = val_keep
        if not val_keep:
            raise ValueError("validation set: no query has a relevant document in the corpus")
        self.positives = self.positives + val_positives
        n, n_val = self.n_queries, len(val_keep)
        folds = [(np.arange(n), np.arange(n, n + n_val))] if n else []
        return np.concatenate([kept, val_queries[val_keep]]), folds

    def new_trainer(self, train_q: np.ndarray) -> tuple[_Trainer, list[str]]:
        """A fresh trainer for the queries ``train_q``, with memory for their positive documents."""
        mem_rows = sorted({r for i in train_q for r, _ in self.positives[i]}) if self.cfg.use_memory else []
        tr = _Trainer(self.docs, np.asarray(mem_rows, dtype=np.int64), self.cfg, len(train_q), self.seed,
                      self.use_transform)
        tr.objective = self.replicas.objective(tr)
        return tr, [self.ids[r] for r in mem_rows]

    def pooled_metrics(self, trainers: list[_Trainer | None]) -> dict[str, float]:
        """Validation metrics over every fold (``None``: the identity model)."""
        ranked: list[list[str]] = []
        for tr, (_, v) in zip(trainers, self.folds, strict=True):
            tr = tr or _Trainer(self.docs, np.zeros(0, dtype=np.int64), self.cfg, 1, self.seed)
            ranked += [[self.ids[r] for r in row] for row in tr.rank(self.queries[v], self.kmax)]
        return evaluate_rankings(ranked, self.val_relevance, DEFAULT_TOP_K)

    def mine(self, tr: _Trainer, train_q: np.ndarray) -> np.ndarray | None:
        """Hard negatives of ``train_q``, when the softmax does not cover the whole corpus."""
        # Mined once with the cosine model: re-mining every epoch would cost a full
        # corpus scan per training query.
        return None if self.full_softmax else tr.rank(self.queries[train_q], self.cfg.hard_negatives)

    def run_epoch(self, tr: _Trainer, train_q: np.ndarray, hard: np.ndarray | None) -> float:
        """One pass over ``train_q`` in a seeded order; the mean minibatch loss."""
        torch = self.torch
        order = train_q[torch.randperm(len(train_q), generator=self.gen).numpy()]
        losses = []
        for s in range(0, len(order), self.cfg.batch_size):
            if self.should_stop is not None and self.should_stop():
                raise TrainingCancelled("Deep Memory training cancelled")
            batch = order[s : s + self.cfg.batch_size]
            pidx, pw = self._padded_positives(batch)
            cand = None
            if hard is not None:
                cand_np, pidx = _candidates(hard, train_q, batch, pidx)
                cand = torch.from_numpy(cand_np)
            losses.append(tr.step(self.queries[batch], torch.from_numpy(pidx), torch.from_numpy(pw), cand))
        return float(np.mean(losses))

    def _padded_positives(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positive rows and weights of each query of ``batch``, padded to one width with weight 0."""
        width = max(len(self.positives[i]) for i in batch)
        pidx = np.zeros((len(batch), width), dtype=np.int64)
        pw = np.zeros((len(batch), width), dtype=np.float32)
        for j, i in enumerate(batch):
            for c, (r, sc) in enumerate(self.positives[i]):
                pidx[j, c], pw[j, c] = r, sc
        return pidx, pw


def _split_name(folds: list[tuple[np.ndarray, np.ndarray]]) -> str:
    """How the training queries were split to validate on themselves."""
    if not folds:
        return "nothing (fewer than 2 training queries)"
    n_val = sum(len(v) for _, v in folds)
    if len(folds) == 1:
        return f"held-out training queries ({n_val} queries)"
    return f"k-fold on training queries ({len(folds)} folds, {n_val} queries)"


def _usable_queries(ids: list[str], relevance: Sequence[Relevance]) -> tuple[list[int], list[list[tuple[int, float]]]]:
    """The queries with at least one positive found in the corpus, and those positives as (row, score)."""
    row_of = {doc_id: r for r, doc_id in enumerate(ids)}
    keep: list[int] = []
    positives: list[list[tuple[int, float]]] = []
    for i, rel in enumerate(relevance):
        pos = [(row_of[d], s) for d, s in _as_pairs(rel) if s > 0 and d in row_of]
        if pos:
            keep.append(i)
            positives.append(pos)
    return keep, positives


def _candidates(hard: np.ndarray, train_q: np.ndarray, batch: np.ndarray,
                pidx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows a minibatch's softmax runs over (its hard negatives and positives), and the positives among them."""
    rows = hard[np.searchsorted(train_q, batch)].ravel()
    cand = np.unique(np.concatenate([rows, pidx.ravel()]))
    return cand, np.searchsorted(cand, pidx)


@dataclass
class _Selection:
    """What the selection phase found: per-epoch history, the best epoch and its validation metrics."""

    fold_models: list[tuple[_Trainer, list[str]]]
    after: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0


def _select_epochs(run: _Run, before: dict[str, float], clock: _Clock, progress: ProgressFn | None) -> _Selection:
    """Train every fold epoch by epoch, keeping the best validation epoch, with early stopping.

    Every fold's trainer is left holding the best epoch's weights.
    """
    cfg, folds = run.cfg, run.folds
    selection = _Selection([run.new_trainer(t) for t, _ in folds], before)
    if not folds or selection.fold_models[0][0].opt is None:
        return selection
    hards = [run.mine(tr, t) for (tr, _), (t, _) in zip(selection.fold_models, folds, strict=True)]
    best_score, bad, best_states = _selection_score(before), 0, None
    for epoch in range(1, cfg.max_epochs + 1):
        trained = zip(selection.fold_models, folds, hards, strict=True)
        loss = float(np.mean([run.run_epoch(tr, t, h) for (tr, _), (t, _), h in trained]))
        m = run.pooled_metrics([tr for tr, _ in selection.fold_models])
        score = _selection_score(m)
        selection.history.append({"epoch": epoch, "loss": loss, "val_score": score, **m})
        if progress is not None:
            progress(epoch, cfg.max_epochs, m)
        if score > best_score + 1e-9:
            best_score, selection.best_epoch, selection.after, bad = score, epoch, m, 0
            best_states = [(tr.W.detach().clone(), tr.M.detach().clone()) for tr, _ in selection.fold_models]
        else:
            bad += 1
        if bad >= cfg.patience or clock.stops("selection", epoch, cfg.max_epochs):
            break
    for (tr, _), state in zip(selection.fold_models, best_states or [], strict=False):
        _restore(tr, state)
    return selection


def _restore(tr: _Trainer, state: tuple[Any, Any]) -> None:
    with tr.torch.no_grad():
        tr.W.copy_(state[0])
        tr.M.copy_(state[1])


def _shipped_model(run: _Run, selection: _Selection, clock: _Clock) -> tuple[DeepMemoryModel, bool]:
    """The model to ship after a successful selection, and whether it was refitted on all queries.

    After cross-validation (no held-out model) always a refit on every query for the
    selected number of epochs; after a hold-out that refit when ``run.refit``, unless
    the time budget runs out first or during it, and otherwise the held-out model.
    """
    if len(run.folds) > 1:
        return _refit(run, selection.best_epoch, None), True
    held_out = selection.fold_models[0][0].to_model(selection.fold_models[0][1])
    if not run.refit or clock.ran_out():
        return held_out, False
    refitted = _refit(run, selection.best_epoch, clock)
    return (held_out, False) if clock.cut is not None else (refitted, True)


def _refit(run: _Run, epochs: int, clock: _Clock | None) -> DeepMemoryModel:
    """A model trained on every usable query for ``epochs`` epochs, unless ``clock``'s budget cuts it first."""
    all_q = np.arange(run.n_queries)
    tr, mem_ids = run.new_trainer(all_q)
    hard = run.mine(tr, all_q)
    for epoch in range(1, epochs + 1):
        run.run_epoch(tr, all_q, hard)
        if clock is not None and clock.stops("refit", epoch, epochs):
            break
    return tr.to_model(mem_ids)


def _result(run: _Run, model: DeepMemoryModel, before: dict[str, float], selection: _Selection, improved: bool,
            refitted: bool, clock: _Clock) -> TrainingResult:
    """The run's outcome, also recorded in ``model.metadata``."""
    seconds = clock.elapsed()
    cut = clock.cut
    phase, stopped_at, planned = (cut.phase, cut.epoch, cut.planned) if cut else (None, 0, 0)
    model.metadata = {
        "trained": improved,
        "best_epoch": selection.best_epoch,
        "refitted": refitted,
        "folds": len(run.folds),
        "n_queries": run.n_queries,
        "validated_on": run.validated_on,
        "val_metrics_before": before,
        "val_metrics_after": selection.after,
        "seconds": round(seconds, 3),
        "stopped_by_time_budget": phase,
        "stopped_at_epoch": stopped_at,
        "planned_epochs": planned,
    }
    return TrainingResult(
        model=model,
        val_metrics_before=before,
        val_metrics_after=selection.after,
        history=selection.history,
        improved=improved,
        seconds=seconds,
        best_epoch=selection.best_epoch,
        refitted=refitted,
        n_train_queries=int(len(run.folds[0][0])) if run.folds else 0,
        n_val_queries=int(len(run.val_all)),
        validated_on=run.validated_on,
        stopped_by_time_budget=phase,
        stopped_at_epoch=stopped_at,
        planned_epochs=planned,
    )
