"""Same data, seed and settings → the same Deep Memory model and figures, however slow the machine runs.

The slow machine is simulated: every minibatch takes ``SECONDS_PER_BATCH`` and every clock
reading ``SECONDS_PER_READING`` (``train_model``'s ``clock`` and ``should_stop`` hooks). The
budget is set just above what the slow run needs in total, so it never runs out, yet it is
tight enough that the old wall-clock heuristics tripped: with a hold-out they skipped the
refit (the refit was predicted not to fit), with cross-validation they stopped the selection
before its best epoch (selection kept only 60% of the budget).
"""

from __future__ import annotations

import math
import uuid

import numpy as np
import pytest

import tensordb
from tensordb.deep_memory.api import DeepMemory
from tensordb.deep_memory.training import TrainingConfig, TrainingResult, train_model

from .corpora import ArrayCorpus, rotated_queries

SECONDS_PER_BATCH = 10.0
SECONDS_PER_READING = 1.0
CONFIG = TrainingConfig(max_epochs=40, patience=5, lr_query=1e-3, lr_memory=1e-3, min_queries_for_transform=20)


class SlowMachine:
    """Simulated time: advances with the work done (minibatches) and with every reading."""

    def __init__(self) -> None:
        self.t = 0.0
        self.epoch_end: list[float] = []  # the time each selection epoch ended

    def now(self) -> float:
        self.t += SECONDS_PER_READING
        return self.t

    def batch(self) -> bool:  # polled before every minibatch; never asks to stop
        self.t += SECONDS_PER_BATCH
        return False

    def progress(self, epoch: int, max_epochs: int, metrics: dict[str, float]) -> None:
        self.epoch_end.append(self.t)


def _problem(n_q: int, n_docs: int = 300, dim: int = 32, seed: int = 0):
    """Queries are noisy partial rotations of their document, so learning keeps improving for many epochs."""
    docs, ids, queries, target = rotated_queries(np.random.default_rng(seed), n_docs, dim, n_q)
    return docs, ids, queries, [{ids[t]: 1.0} for t in target]


def _train(problem, max_seconds: float, machine: SlowMachine | None = None) -> TrainingResult:
    docs, ids, queries, relevance = problem
    if machine is None:  # the real clock, on a machine that is not loaded
        return train_model(docs, ids, queries, relevance, seed=3, max_seconds=max_seconds, config=CONFIG)
    return train_model(docs, ids, queries, relevance, seed=3, max_seconds=max_seconds, config=CONFIG,
                       clock=machine.now, should_stop=machine.batch, progress=machine.progress)


def _figures(result: TrainingResult) -> dict:
    """Everything a status or a metadata reader sees, except the timing."""
    meta = {k: v for k, v in result.model.metadata.items() if k != "seconds"}
    return {
        "metadata": meta, "before": result.val_metrics_before, "after": result.val_metrics_after,
        "history": result.history, "improved": result.improved, "best_epoch": result.best_epoch,
        "refitted": result.refitted, "n_train": result.n_train_queries, "n_val": result.n_val_queries,
        "validated_on": result.validated_on, "note": result.time_budget_note,
    }


def _assert_same_model(a: TrainingResult, b: TrainingResult) -> None:
    assert np.array_equal(a.model.query_matrix, b.model.query_matrix)
    assert np.array_equal(a.model.memory_vectors, b.model.memory_vectors)
    assert a.model.memory_ids == b.model.memory_ids
    assert _figures(a) == _figures(b)


def _tight_budget(problem) -> tuple[float, SlowMachine]:
    """A budget 5% above the simulated time a slow run needs in all (it never runs out), and that run's clock."""
    probe = SlowMachine()
    result = _train(problem, math.inf, probe)
    assert result.stopped_by_time_budget is None
    return 1.05 * probe.t, probe


def test_a_hold_out_run_refits_however_slow_the_machine() -> None:
    problem = _problem(n_q=250)
    budget, probe = _tight_budget(problem)
    fast = _train(problem, budget)
    slow_machine = SlowMachine()
    slow = _train(problem, budget, slow_machine)
    assert fast.validated_on.startswith("held-out") and fast.improved and fast.refitted
    assert fast.best_epoch >= 5 and fast.stopped_by_time_budget is None
    # The old heuristic extrapolated selection's per-epoch time to the refit and skipped it here.
    selection_end, n_epochs = probe.epoch_end[-1], len(probe.epoch_end)
    predicted_refit = selection_end / n_epochs * 250 / fast.n_train_queries * fast.best_epoch
    assert selection_end + predicted_refit > budget
    _assert_same_model(fast, slow)
    assert slow_machine.t < budget and slow.time_budget_note == ""


def test_a_cross_validated_run_selects_the_same_epoch_however_slow_the_machine() -> None:
    problem = _problem(n_q=60)
    budget, probe = _tight_budget(problem)
    fast = _train(problem, budget)
    slow_machine = SlowMachine()
    slow = _train(problem, budget, slow_machine)
    assert fast.validated_on.startswith("k-fold") and fast.improved and fast.refitted
    # The old selection stopped at 60% of the budget, before the best epoch was reached.
    assert probe.epoch_end[fast.best_epoch - 1] > 0.6 * budget
    _assert_same_model(fast, slow)
    assert slow_machine.t < budget and slow.stopped_by_time_budget is None


@pytest.mark.parametrize("share, phase", [(0.3, "selection"), (0.9, "refit")])
def test_a_budget_that_runs_out_is_reported(share: float, phase: str) -> None:
    problem = _problem(n_q=250)
    budget, probe = _tight_budget(problem)
    full = _train(problem, budget)
    cut = _train(problem, share * probe.t, SlowMachine())
    assert cut.stopped_by_time_budget == phase and cut.model.metadata["stopped_by_time_budget"] == phase
    assert 0 < cut.stopped_at_epoch < cut.planned_epochs
    assert cut.model.metadata["stopped_at_epoch"] == cut.stopped_at_epoch
    assert cut.time_budget_note.startswith(
        f"time budget ran out during {phase} at epoch {cut.stopped_at_epoch} of {cut.planned_epochs}")
    if phase == "selection":
        assert cut.planned_epochs == CONFIG.max_epochs and len(cut.history) == cut.stopped_at_epoch
        assert not cut.refitted  # the budget is spent: no refit is started
    else:  # the refit was cut: the complete, validated held-out model ships instead
        assert cut.planned_epochs == full.best_epoch and not cut.refitted
        assert cut.history == full.history and not np.array_equal(cut.model.query_matrix, full.model.query_matrix)


def _status(max_seconds: float, capsys) -> tuple[dict, str]:
    docs, ids, queries, relevance = _problem(n_q=60)
    names = {f"q{i}": q for i, q in enumerate(queries)}
    dm = DeepMemory(ArrayCorpus(tensordb.empty(f"mem://{uuid.uuid4().hex}", overwrite=True), ids, docs, names))
    job = dm.train(list(names), [list(r.items()) for r in relevance], max_seconds=max_seconds, seed=0)
    info = dm.wait(job, timeout=120)
    assert info["status"] == "completed"
    capsys.readouterr()
    dm.status(job)
    return info, capsys.readouterr().out


def test_status_shows_a_time_budget_cut_and_nothing_otherwise(capsys) -> None:
    # A budget of a nanosecond is spent after the first epoch, however fast the machine.
    info, printed = _status(1e-9, capsys)
    assert info["time_budget"] == ("time budget ran out during selection at epoch 1 of 200; "
                                   "the model was chosen from the epochs learned by then")
    assert "time budget" in printed and "at epoch 1 of 200" in printed
    info, printed = _status(600, capsys)
    assert info["time_budget"] == "" and "time budget" not in printed
