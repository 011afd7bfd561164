"""deepmemory_distance finds its dataset through the typed ScanSource.owner, on any source."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

import tensordb
from query_lang import MemorySource, execute
from query_lang.errors import TQLExecutionError
from tensordb.deep_memory.jobs import COMPLETED, JobRecord, new_job_id
from tensordb.deep_memory.model import DeepMemoryModel
from tensordb.deep_memory.tql import jobs_of

DIM = 8


def _dataset_with_model(model: DeepMemoryModel) -> tensordb.Dataset:
    ds = tensordb.empty(f"mem://{uuid.uuid4().hex}", overwrite=True)
    jobs = jobs_of(ds)
    job_id = new_job_id()
    jobs.save_model(job_id, model)
    now = time.time()
    jobs.save(JobRecord(id=job_id, status=COMPLETED, created=now, commit_id=None, n_queries=0, finished=now))
    return ds


def _query(q: np.ndarray) -> str:
    return "select * order by deepmemory_distance(embedding, ARRAY[" + ", ".join(map(str, q)) + "]) desc limit 5"


def test_a_source_owned_by_a_dataset_scores_with_its_model() -> None:
    rng = np.random.default_rng(1)
    docs = rng.standard_normal((30, DIM)).astype(np.float32)
    ids = [f"d{i}" for i in range(30)]
    model = DeepMemoryModel(np.eye(DIM, dtype=np.float32) + 0.5 * rng.standard_normal((DIM, DIM)).astype(np.float32),
                            ids[::5], rng.standard_normal((6, DIM)).astype(np.float32))
    ds = _dataset_with_model(model)
    source = MemorySource({"embedding": docs, "id": ids}, htypes={"embedding": "embedding", "id": "id"}, owner=ds)
    assert not hasattr(source, "dataset")
    q = rng.standard_normal(DIM).astype(np.float32)
    result = execute(_query(q), source)
    scores = model.score_block(model.transform_queries(q), docs, None, model.memory_index(ids))
    assert list(result.rows) == list(np.argsort(-scores, kind="stable")[:5])


def test_a_source_without_a_dataset_owner_says_there_is_no_model() -> None:
    docs = np.eye(DIM, dtype=np.float32)
    source = MemorySource({"embedding": docs, "id": [f"d{i}" for i in range(DIM)]},
                          htypes={"embedding": "embedding", "id": "id"}, owner={"not": "a dataset"})
    with pytest.raises(TQLExecutionError, match="no trained Deep Memory model"):
        execute(_query(docs[0]), source)
