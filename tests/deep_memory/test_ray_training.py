"""Deep Memory training with ``engine="ray"``: a Ray Train job of 2 torch DDP workers on the 2-CPU test cluster.

One Ray job is trained for the whole module and its record, model and search are checked against a
local job on the same problem; a second, long one is cancelled while it runs.
"""

from __future__ import annotations

import sys
import time
import uuid

import numpy as np
import pytest

from tensordb import VectorStore
from tensordb.deep_memory import jobs as jobmod
from tensordb.errors import MissingExtraError, SampleError

from .corpora import rotated_queries

N_DOCS, DIM, N_QUERIES = 240, 24, 220


class LookupEmbedding:
    """Query texts "q<i>" embed as the i-th prepared vector (the test controls every embedding)."""

    def __init__(self, queries: np.ndarray) -> None:
        self.queries = queries

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.queries[int(t[1:])] for t in texts])


@pytest.fixture(scope="module", autouse=True)
def quick_ray_train_polling():
    """Ray Train's controller checks on its workers every 2 s by default: a job's end is seen sooner at 0.2 s."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
        yield


@pytest.fixture(scope="module")
def problem():
    docs, ids, queries, targets = rotated_queries(np.random.default_rng(7), N_DOCS, DIM, N_QUERIES)
    texts = [f"q{i}" for i in range(N_QUERIES)]
    relevance = [[(ids[t], 1.0)] for t in targets]
    return docs, ids, queries, texts, relevance


def _store(path: str, problem) -> VectorStore:
    docs, ids, queries, _, _ = problem
    vs = VectorStore(path, embedding_function=LookupEmbedding(queries), overwrite=True)
    vs.add(text=[f"doc {i}" for i in ids], embedding=docs, id=ids)
    return vs


@pytest.fixture(scope="module")
def trained(ray_cluster, problem, tmp_path_factory):
    """One local and one Ray job on the same store and problem; the Ray job's status while it ran."""
    _, _, _, texts, relevance = problem
    vs = _store(str(tmp_path_factory.mktemp("ray-train") / "vs"), problem)
    local = vs.deep_memory.train(texts, relevance, max_seconds=1, seed=3)
    vs.deep_memory.wait(local, timeout=60)
    job = vs.deep_memory.train(texts, relevance, max_seconds=2, seed=3, engine="ray", num_workers=2)
    seen = []
    while vs.deep_memory.status(job, show=False)["status"] in (jobmod.PENDING, jobmod.RUNNING):
        seen.append(vs.deep_memory.status(job, show=False)["record"])
        time.sleep(0.2)
    vs.deep_memory.wait(job, timeout=60)
    return vs, local, job, seen


def test_ray_job_completes_like_a_local_one(trained) -> None:
    vs, local, job, _ = trained
    ray_record = vs.deep_memory.status(job, show=False)["record"]
    local_record = vs.deep_memory.status(local, show=False)["record"]
    assert ray_record.status == jobmod.COMPLETED, ray_record.error
    assert local_record.status == jobmod.COMPLETED
    assert ray_record.engine == "ray (2 workers)" and local_record.engine == "local"
    assert set(vars(ray_record)) == set(vars(local_record))
    # The same validation split and identity baseline; a learnable problem, so the Ray model improves on it.
    assert ray_record.validated_on == local_record.validated_on
    assert ray_record.baseline == local_record.baseline
    assert ray_record.improved and ray_record.results["ndcg@10"] > ray_record.baseline["ndcg@10"]
    assert ray_record.epoch > 0 and ray_record.max_epochs == local_record.max_epochs
    assert 0 < ray_record.seconds and ray_record.finished >= ray_record.started


def test_ray_model_lands_in_the_dataset_and_search_uses_it(trained, problem) -> None:
    vs, _, job, _ = trained
    docs, ids, queries, _, _ = problem
    stored = vs.dataset.get_attachment(jobmod.MODEL_PREFIX + job)[1]
    assert set(stored) == {"query_matrix", "memory_vectors"}
    assert all(a.dtype == np.float32 for a in stored.values())
    model = vs.deep_memory.model()  # the latest completed job's: the Ray one
    np.testing.assert_array_equal(model.query_matrix, stored["query_matrix"])
    assert not np.allclose(model.query_matrix, np.eye(DIM))
    expected = model.search(queries[:5], docs, ids, k=5)
    for q, want in zip(queries[:5], expected, strict=True):
        assert vs.search(embedding=q, k=5, deep_memory=True)["id"] == want
    # The model really changes the ranking, so the equality above says it was used.
    plain = [vs.search(embedding=q, k=5)["id"] for q in queries[:20]]
    assert plain != [vs.search(embedding=q, k=5, deep_memory=True)["id"] for q in queries[:20]]


def test_ray_job_reports_progress_while_running(trained) -> None:
    _, _, _, seen = trained
    running = [r for r in seen if r.status == jobmod.RUNNING]
    assert running, "the job was never seen running"
    epochs = [r.epoch for r in running]
    assert max(epochs) > 0 and epochs == sorted(epochs)
    assert any(r.progress and "ndcg@10" in r.progress for r in running)


def test_cancel_stops_a_ray_job(ray_cluster, problem, tmp_path) -> None:
    _, _, _, texts, relevance = problem
    vs = _store(str(tmp_path / "vs"), problem)
    # Five copies of every query: many epochs of improvement ahead, so only the cancel can end it soon.
    job = vs.deep_memory.train(texts * 5, relevance * 5, max_seconds=600, engine="ray", num_workers=2)
    deadline = time.monotonic() + 40
    while vs.deep_memory.status(job, show=False)["record"].epoch < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert vs.deep_memory.cancel(job)
    done = vs.deep_memory.wait(job, timeout=30)
    assert done["status"] == jobmod.CANCELLED
    assert vs.deep_memory.model() is None
    assert not vs.dataset.list_attachments(jobmod.MODEL_PREFIX)


@pytest.mark.parametrize(("options", "message"), [
    ({"engine": "spark"}, r"engine must be one of \['local', 'ray'\], got 'spark'"),
    ({"engine": "ray", "num_workers": 0}, "num_workers must be a positive integer, got 0"),
    ({"engine": "ray", "num_workers": 1.5}, "num_workers must be a positive integer, got 1.5"),
    ({"engine": "ray", "num_workers": True}, "num_workers must be a positive integer, got True"),
    ({"num_workers": 2}, "num_workers applies to engine='ray' only"),
])
def test_bad_engine_or_workers_is_refused_before_anything_is_written(problem, options, message) -> None:
    _, _, _, texts, relevance = problem
    vs = _store(f"mem://ray-bad-args-{uuid.uuid4().hex}", problem)
    with pytest.raises(SampleError, match=message):
        vs.deep_memory.train(texts, relevance, **options)
    assert not vs.dataset.list_attachments(jobmod.JOB_PREFIX)


def test_ray_engine_without_ray_names_the_extra(problem, monkeypatch) -> None:
    _, _, _, texts, relevance = problem
    vs = _store(f"mem://ray-missing-{uuid.uuid4().hex}", problem)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(MissingExtraError, match=r'pip install "tensordb\[ray\]"'):
        vs.deep_memory.train(texts, relevance, engine="ray", num_workers=2)
    assert not vs.dataset.list_attachments(jobmod.JOB_PREFIX)
