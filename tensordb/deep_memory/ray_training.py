"""Deep Memory training as a Ray Train job: :func:`train_model` on every worker, torch DDP between them.

Every worker holds the corpus' embeddings and the labelled queries and runs the same
:func:`~.training.train_model` with the same seed. :class:`DataParallelReplicas` wraps each
trainer's loss in ``DistributedDataParallel`` (gloo): a worker computes the loss of its share
of every minibatch and DDP averages the gradients, so every rank takes the same optimiser step
and reaches the same epoch, early-stopping and selection decisions. The two decisions that are
not a function of the data are agreed on by all ranks: the clock is rank 0's (broadcast at each
reading) and a cancel request is read by rank 0 and broadcast before every minibatch.

Rank 0 talks to the driver through a :class:`JobChannel` actor: it reports each epoch's
validation metrics (the driver's job thread copies them into the job record) and finally sends
the model as float32 arrays with JSON-able params (no pickle file is written anywhere).
The ``loss`` in the returned history is rank 0's share of each minibatch (scaled), not the whole
minibatch's: no decision reads it.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from ..core.engines import import_ray
from .fusion import FusionChoice, Ranking
from .metrics import Relevance
from .model import DeepMemoryModel
from .training import ProgressFn, Replicas, TrainingCancelled, TrainingResult, train_model

#: How often the driver copies rank 0's progress into the job and forwards a cancel request.
POLL_SECONDS = 0.2
#: How often rank 0 asks the driver whether the job was cancelled (each minibatch re-uses the last answer).
CANCEL_CHECK_SECONDS = 0.2


def require_ray() -> None:
    """Raise :class:`MissingExtraError` unless Ray Train and torch are importable."""
    import_ray('Deep Memory training with engine="ray"', "train.torch")


class JobChannel:
    """The driver's end of a Ray job (run as an actor): progress in, cancel requests out, the outcome back."""

    def __init__(self) -> None:
        self._progress: tuple[int, int, dict[str, float]] | None = None
        self._cancelled = False
        self._outcome: dict[str, Any] | None = None

    def report(self, epoch: int, max_epochs: int, metrics: dict[str, float]) -> None:
        self._progress = (epoch, max_epochs, metrics)

    def progress(self) -> tuple[int, int, dict[str, float]] | None:
        return self._progress

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled

    def finish(self, outcome: dict[str, Any]) -> None:
        self._outcome = outcome

    def outcome(self) -> dict[str, Any] | None:
        return self._outcome


class DataParallelReplicas(Replicas):
    """One DDP rank of ``world``: trains on its share of every minibatch, gradients averaged by DDP."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    def share(self, batch_size: int) -> slice:
        """The rows of a minibatch of ``batch_size`` that this rank computes the loss of (may be empty)."""
        return slice(self.rank * batch_size // self.world, (self.rank + 1) * batch_size // self.world)

    def objective(self, trainer: Any) -> Callable[..., Any]:
        wrapped: list[Any] = []  # DDP is built on the first step: its construction is collective, as steps are

        def share_loss(q: Any, pos_idx: Any, pos_w: Any, cand: Any | None) -> Any:
            if not wrapped:
                wrapped.append(_distributed_loss(trainer, self))
            return wrapped[0](q, pos_idx, pos_w, cand)

        return share_loss


def _distributed_loss(trainer: Any, replicas: DataParallelReplicas) -> Any:
    """``trainer``'s loss on this rank's share, as a DDP module over the parameters it trains."""
    import torch

    class ShareLoss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for i, parameter in enumerate(trainer.trained_parameters()):
                self.register_parameter(f"trained_{i}", parameter)

        def forward(self, q: Any, pos_idx: Any, pos_w: Any, cand: Any | None) -> Any:
            rows = replicas.share(len(q))
            likelihood = trainer.log_likelihoods(q[rows], pos_idx[rows], pos_w[rows], cand)
            # Scaled so that DDP's mean over ranks is the whole minibatch's mean; the L2 terms are the same
            # on every rank, so their mean is themselves.
            return trainer.penalised(-likelihood.sum() * (replicas.world / len(q)))

    return torch.nn.parallel.DistributedDataParallel(ShareLoss())


class _RankAgreement:
    """The stop flag and clock every rank agrees on: rank 0's, broadcast (each call is a collective)."""

    def __init__(self, rank: int, channel: Any) -> None:
        self.rank, self.channel = rank, channel
        self._last_check, self._cancelled = 0.0, False

    def stop_requested(self) -> bool:
        import ray
        import torch
        import torch.distributed as dist

        if self.rank == 0 and time.monotonic() - self._last_check >= CANCEL_CHECK_SECONDS:
            self._cancelled = bool(ray.get(self.channel.cancelled.remote()))
            self._last_check = time.monotonic()
        flag = torch.tensor([1 if self._cancelled else 0], dtype=torch.int64)
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def clock(self) -> float:
        import torch
        import torch.distributed as dist

        now = torch.tensor([time.monotonic() if self.rank == 0 else 0.0], dtype=torch.float64)
        dist.broadcast(now, src=0)
        return float(now.item())


def _train_loop(config: dict[str, Any]) -> None:
    """A Ray Train worker: the whole :func:`train_model` as one DDP rank; rank 0 sends the outcome."""
    import ray
    import ray.train

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    inputs = ray.get(config["inputs"])
    channel = config["channel"]
    agreement = _RankAgreement(rank, channel)

    def progress(epoch: int, max_epochs: int, metrics: dict[str, float]) -> None:
        channel.report.remote(epoch, max_epochs, dict(metrics))

    validation = inputs["validation_query_embeddings"]
    _warm_up_ddp()
    try:
        result = train_model(
            np.array(inputs["doc_embeddings"]), inputs["doc_ids"], np.array(inputs["query_embeddings"]),
            inputs["relevance"], seed=inputs["seed"], max_seconds=inputs["max_seconds"],
            progress=progress if rank == 0 else None, should_stop=agreement.stop_requested,
            clock=agreement.clock, num_threads=config["threads"],
            validation_query_embeddings=None if validation is None else np.array(validation),
            validation_relevance=inputs["validation_relevance"],
            # Fusion is fitted after the last collective step, from rank 0's model: the others skip it.
            lexical_rankings=inputs["lexical_rankings"] if rank == 0 else None,
            validation_lexical_rankings=inputs["validation_lexical_rankings"] if rank == 0 else None,
            replicas=DataParallelReplicas(rank, world),
        )
    except TrainingCancelled:
        if rank == 0:
            ray.get(channel.finish.remote({"cancelled": True}))
        return
    if rank == 0:
        ray.get(channel.finish.remote(_outcome_of(result)))


def _warm_up_ddp() -> None:
    """Build one throwaway DDP module (collective: every rank does): its first construction imports
    seconds' worth of modules, which would otherwise be spent out of ``max_seconds``' training budget."""
    import torch

    torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(1, 1, bias=False))


def _outcome_of(result: TrainingResult) -> dict[str, Any]:
    """``result`` as plain data: the model as float32 arrays and JSON-able params, the rest as scalars."""
    arrays, params = result.model.to_state()
    scalars = {f.name: getattr(result, f.name) for f in fields(result) if f.name not in ("model", "fusion")}
    return {"cancelled": False, "arrays": arrays, "params": params, "result": scalars,
            "fusion": None if result.fusion is None else result.fusion.to_dict()}


def _result_of(outcome: dict[str, Any]) -> TrainingResult:
    model = DeepMemoryModel.from_state(outcome["arrays"], outcome["params"])
    fusion = None if outcome["fusion"] is None else FusionChoice.from_dict(outcome["fusion"])
    return TrainingResult(model=model, fusion=fusion, **outcome["result"])


def train_on_ray(
    doc_embeddings: np.ndarray,
    doc_ids: Sequence[str],
    query_embeddings: np.ndarray,
    relevance: Sequence[Relevance],
    *,
    num_workers: int,
    seed: int = 0,
    max_seconds: float = 60.0,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    validation_query_embeddings: np.ndarray | None = None,
    validation_relevance: Sequence[Relevance] | None = None,
    lexical_rankings: Sequence[Ranking] | None = None,
    validation_lexical_rankings: Sequence[Ranking] | None = None,
    cpus_per_worker: int = 1,
) -> TrainingResult:
    """:func:`~.training.train_model` as a Ray Train ``TorchTrainer`` job of ``num_workers`` DDP ranks.

    Blocks until the job ends; meanwhile ``progress`` gets rank 0's epochs (on this thread) and
    ``should_stop()`` is forwarded to the workers, which then stop before their next minibatch
    (:class:`~.training.TrainingCancelled` is raised here). Uses the running Ray cluster (or
    starts a local one, as Ray does on first use).
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    channel = ray.remote(num_cpus=0)(JobChannel).remote()
    inputs = ray.put({
        "doc_embeddings": np.asarray(doc_embeddings, dtype=np.float32), "doc_ids": [str(i) for i in doc_ids],
        "query_embeddings": np.asarray(query_embeddings, dtype=np.float32), "relevance": list(relevance),
        "seed": seed, "max_seconds": max_seconds,
        "validation_query_embeddings": validation_query_embeddings,
        "validation_relevance": None if validation_relevance is None else list(validation_relevance),
        "lexical_rankings": None if lexical_rankings is None else list(lexical_rankings),
        "validation_lexical_rankings": None if validation_lexical_rankings is None
        else list(validation_lexical_rankings),
    })
    # Ray Train keeps its run state under storage_path; nothing of it is needed once the job is over.
    storage = tempfile.mkdtemp(prefix="tensordb-ray-train-")
    try:
        trainer = TorchTrainer(
            _train_loop,
            train_loop_config={"inputs": inputs, "channel": channel, "threads": cpus_per_worker},
            torch_config=TorchConfig(backend="gloo"),
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=False,
                                         resources_per_worker={"CPU": cpus_per_worker}),
            run_config=RunConfig(name=f"deep-memory-{uuid.uuid4().hex[:12]}", storage_path=storage),
        )
        _fit_while_polling(trainer, channel, progress, should_stop)
        outcome = ray.get(channel.outcome.remote())
    finally:
        ray.kill(channel)
        shutil.rmtree(storage, ignore_errors=True)
    if outcome is None:
        raise RuntimeError("the Ray training job ended without sending its model from rank 0")
    if outcome["cancelled"]:
        raise TrainingCancelled("Deep Memory training cancelled")
    return _result_of(outcome)


def _fit_while_polling(trainer: Any, channel: Any, progress: ProgressFn | None,
                       should_stop: Callable[[], bool] | None) -> None:
    """Run ``trainer.fit()`` on a helper thread; this one relays progress and a cancel request meanwhile."""
    import ray

    failure: list[BaseException] = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as e:  # re-raised on the job's thread
            failure.append(e)

    fitting = threading.Thread(target=fit, name="deep-memory-ray-fit", daemon=True)
    fitting.start()
    seen_epoch, cancel_sent = 0, False
    while fitting.is_alive():
        fitting.join(POLL_SECONDS)
        if should_stop is not None and should_stop() and not cancel_sent:
            channel.cancel.remote()
            cancel_sent = True
        reported = ray.get(channel.progress.remote())
        if progress is not None and reported is not None and reported[0] != seen_epoch:
            seen_epoch = reported[0]
            progress(*reported)
    if failure:
        raise failure[0]
