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
Otherwise, when time allows, the model is refitted on *all* queries for the chosen
number of epochs (the memory then covers validation-query documents too);
``val_metrics_after`` always reports the held-out model, never the refit.

Cancellation: ``should_stop()`` is polled between minibatches; when it returns true a
:class:`TrainingCancelled` is raised and nothing is returned (a cancelled job ships no
half-trained model).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
        self.W = torch.zeros(d, d, requires_grad=True)
        self.M = torch.zeros(len(memory_rows), d, requires_grad=True)
        groups = []
        if use_transform:
            groups.append({"params": [self.W], "lr": cfg.lr_query})
        if cfg.use_memory and len(memory_rows):
            groups.append({"params": [self.M], "lr": cfg.lr_memory})
        self.opt = torch.optim.Adam(groups) if groups else None
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

    def step(self, q: Any, pos_idx: Any, pos_w: Any, cand: Any | None) -> float:
        """One optimiser step; ``pos_idx``/``pos_w`` are (b, P) padded with weight 0."""
        t = self.torch
        assert self.opt is not None
        qp = self.qprime(q)
        logits = self.logits(qp, cand) / self.cfg.temperature
        logp = logits.log_softmax(dim=1)
        lp = logp.gather(1, pos_idx)
        loss = -((lp * pos_w).sum(1) / pos_w.sum(1)).mean()
        loss = loss + self.reg_w * (self.W**2).sum() + self.reg_m * (self.M**2).sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        del t
        return float(loss.detach())

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
        max_seconds: wall-clock budget; training stops early when it runs out.
        progress: ``progress(epoch, max_epochs, val_metrics)`` after every epoch.
        should_stop: polled between minibatches; true → :class:`TrainingCancelled`.
        config: hyper-parameters (:class:`TrainingConfig`).
        num_threads: torch intra-op threads (``None`` leaves torch's setting alone).
    """
    import torch

    t0 = time.monotonic()
    deadline = t0 + max_seconds
    cfg = config or TrainingConfig()
    docs_np = np.asarray(doc_embeddings, dtype=np.float32)
    q_np = np.asarray(query_embeddings, dtype=np.float32)
    assert docs_np.ndim == 2 and q_np.ndim == 2 and docs_np.shape[1] == q_np.shape[1]
    assert len(doc_ids) == docs_np.shape[0] and len(relevance) == q_np.shape[0]
    n_docs, dim = docs_np.shape
    ids = [str(i) for i in doc_ids]
    row_of = {doc_id: r for r, doc_id in enumerate(ids)}

    prev_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        # Queries with at least one positive found in the corpus are usable.
        pos_lists: list[list[tuple[int, float]]] = []
        keep: list[int] = []
        for i, rel in enumerate(relevance):
            pos = [(row_of[d], s) for d, s in _as_pairs(rel) if s > 0 and d in row_of]
            if pos:
                keep.append(i)
                pos_lists.append(pos)
        rel_dicts = [{ids[r]: s for r, s in p} for p in pos_lists]
        n_q = len(keep)
        # Decided on the whole label set so that validation and refit train the same family.
        use_transform = cfg.use_query_transform and n_q >= cfg.min_queries_for_transform
        folds = _make_folds(n_q, val_fraction, cfg, np.random.default_rng(seed))
        docs_t = torch.nn.functional.normalize(torch.from_numpy(docs_np), dim=1)
        q_all = torch.from_numpy(q_np[keep]) if keep else torch.zeros(0, dim)
        kmax = min(max(DEFAULT_TOP_K), n_docs)
        val_all = np.concatenate([v for _, v in folds]) if folds else np.zeros(0, np.int64)
        val_rel = [rel_dicts[i] for i in val_all]

        def new_trainer(train_q: np.ndarray) -> tuple[_Trainer, list[str]]:
            mem_rows = sorted({r for i in train_q for r, _ in pos_lists[i]})
            if not cfg.use_memory:
                mem_rows = []
            tr = _Trainer(docs_t, np.asarray(mem_rows, dtype=np.int64), cfg, len(train_q), seed, use_transform)
            return tr, [ids[r] for r in mem_rows]

        def pooled_metrics(trainers: list[_Trainer | None]) -> dict[str, float]:
            ranked: list[list[str]] = []
            for tr, (_, v) in zip(trainers, folds, strict=True):
                tr = tr or _Trainer(docs_t, np.zeros(0, dtype=np.int64), cfg, 1, seed)
                ranked += [[ids[r] for r in row] for row in tr.rank(q_all[v], kmax)]
            return evaluate_rankings(ranked, val_rel, DEFAULT_TOP_K)

        full_softmax = n_docs <= cfg.full_softmax_max_docs
        gen = torch.Generator().manual_seed(seed)

        def run_epoch(tr: _Trainer, train_q: np.ndarray, hard: np.ndarray | None) -> float:
            order = train_q[torch.randperm(len(train_q), generator=gen).numpy()]
            losses = []
            for s in range(0, len(order), cfg.batch_size):
                if should_stop is not None and should_stop():
                    raise TrainingCancelled("Deep Memory training cancelled")
                b = order[s : s + cfg.batch_size]
                width = max(len(pos_lists[i]) for i in b)
                pidx = np.zeros((len(b), width), dtype=np.int64)
                pw = np.zeros((len(b), width), dtype=np.float32)
                for j, i in enumerate(b):
                    for c, (r, sc) in enumerate(pos_lists[i]):
                        pidx[j, c], pw[j, c] = r, sc
                cand = None
                if hard is not None:
                    rows = hard[np.searchsorted(train_q, b)].ravel()
                    cand_np = np.unique(np.concatenate([rows, pidx.ravel()]))
                    pidx = np.searchsorted(cand_np, pidx)
                    cand = torch.from_numpy(cand_np)
                losses.append(tr.step(q_all[b], torch.from_numpy(pidx), torch.from_numpy(pw), cand))
            return float(np.mean(losses))

        def mine(tr: _Trainer, train_q: np.ndarray) -> np.ndarray | None:
            # Mined once with the cosine model: re-mining every epoch would cost a full
            # corpus scan per training query.
            return None if full_softmax else tr.rank(q_all[train_q], cfg.hard_negatives)

        before = pooled_metrics([None] * len(folds)) if folds else {}
        after = before
        history: list[dict[str, float]] = []
        best_epoch = 0
        fold_models: list[tuple[_Trainer, list[str]]] = [new_trainer(t) for t, _ in folds]
        trainable = bool(folds) and fold_models[0][0].opt is not None
        if trainable:
            hards = [mine(tr, t) for (tr, _), (t, _) in zip(fold_models, folds, strict=True)]
            best_score, bad, best_states = _selection_score(before), 0, None
            # Selection phase gets most of the budget, the refit on all queries the rest.
            select_deadline = t0 + (0.6 if cfg.refit else 1.0) * max_seconds
            for epoch in range(1, cfg.max_epochs + 1):
                loss = float(
                    np.mean([run_epoch(tr, t, h) for (tr, _), (t, _), h in zip(fold_models, folds, hards, strict=True)])
                )
                m = pooled_metrics([tr for tr, _ in fold_models])
                score = _selection_score(m)
                history.append({"epoch": epoch, "loss": loss, "val_score": score, **m})
                if progress is not None:
                    progress(epoch, cfg.max_epochs, m)
                if score > best_score + 1e-9:
                    best_score, best_epoch, after, bad = score, epoch, m, 0
                    best_states = [(tr.W.detach().clone(), tr.M.detach().clone()) for tr, _ in fold_models]
                else:
                    bad += 1
                if bad >= cfg.patience or time.monotonic() > select_deadline:
                    break
            if best_states is not None and len(folds) == 1:
                tr = fold_models[0][0]
                with torch.no_grad():
                    tr.W.copy_(best_states[0][0])
                    tr.M.copy_(best_states[0][1])

        improved = bool(best_epoch > 0 and _selection_score(after) > _selection_score(before) + cfg.min_improvement)
        refitted = False
        model = DeepMemoryModel.identity(dim)
        if not improved:
            after = before
        else:
            if len(folds) == 1:
                model = fold_models[0][0].to_model(fold_models[0][1])
            elapsed = time.monotonic() - t0
            per_epoch = elapsed / max(len(history) * len(folds), 1) * n_q / len(folds[0][0])
            # Cross-validation leaves no held-out model to ship: the refit is required.
            if len(folds) > 1 or (cfg.refit and elapsed + per_epoch * best_epoch < max_seconds):
                all_q = np.arange(n_q)
                tr, mem_ids = new_trainer(all_q)
                hard = mine(tr, all_q)
                for _ in range(best_epoch):
                    run_epoch(tr, all_q, hard)
                    if len(folds) == 1 and time.monotonic() > deadline:
                        break
                model = tr.to_model(mem_ids)
                refitted = True
        seconds = time.monotonic() - t0
        n_train = int(len(folds[0][0])) if folds else 0
        model.metadata = {
            "trained": improved,
            "best_epoch": best_epoch,
            "refitted": refitted,
            "folds": len(folds),
            "n_queries": n_q,
            "val_metrics_before": before,
            "val_metrics_after": after,
            "seconds": round(seconds, 3),
        }
        return TrainingResult(
            model=model,
            val_metrics_before=before,
            val_metrics_after=after,
            history=history,
            improved=improved,
            seconds=seconds,
            best_epoch=best_epoch,
            refitted=refitted,
            n_train_queries=n_train,
            n_val_queries=int(len(val_all)),
        )
    finally:
        if num_threads:
            torch.set_num_threads(prev_threads)
