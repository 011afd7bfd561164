"""relevance_from_qa_dataset: LlamaIndex's EmbeddingQAFinetuneDataset as Deep Memory training data.

The class lives in llama-index-finetuning (deprecated; not a tensordb dependency), so the
dataset object here is a pydantic model with exactly its fields, built on llama-index-core's
pydantic bridge; the function reads the fields, the dict of ``model_dump()`` and the JSON of
``save_json`` alike.
"""

from __future__ import annotations

import json
import uuid

import pytest
from llama_index.core.bridge.pydantic import BaseModel

from tensordb.errors import SampleError
from tensordb.integrations.llama_index import relevance_from_qa_dataset
from tensordb.vectorstore import HashingEmbedding, VectorStore


class EmbeddingQAFinetuneDataset(BaseModel):
    """The fields of llama_index.finetuning.EmbeddingQAFinetuneDataset (queries, corpus, relevant_docs, mode)."""

    queries: dict[str, str]
    corpus: dict[str, str]
    relevant_docs: dict[str, list[str]]
    mode: str = "text"


@pytest.fixture
def qa() -> EmbeddingQAFinetuneDataset:
    return EmbeddingQAFinetuneDataset(
        queries={"q1": "what is a lock?", "q2": "how are chunks stored?"},
        corpus={"n1": "locks ...", "n2": "chunks ...", "n3": "more on chunks"},
        relevant_docs={"q1": ["n1"], "q2": ["n2", "n3", "n2"]},
    )


EXPECTED = (["what is a lock?", "how are chunks stored?"], [[("n1", 1.0)], [("n2", 1.0), ("n3", 1.0)]])


def test_object_dict_and_saved_json_give_the_same_pairs(qa, tmp_path):
    assert relevance_from_qa_dataset(qa) == EXPECTED
    assert relevance_from_qa_dataset(qa.model_dump()) == EXPECTED
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(qa.model_dump(), indent=4))  # what EmbeddingQAFinetuneDataset.save_json writes
    assert relevance_from_qa_dataset(str(path)) == EXPECTED
    assert relevance_from_qa_dataset(path) == EXPECTED


def test_the_pairs_train_deep_memory_on_a_store_of_those_nodes(qa):
    vs = VectorStore(f"mem://{uuid.uuid4().hex}", embedding_function=HashingEmbedding(dim=16))
    vs.add(text=list(qa.corpus.values()), id=list(qa.corpus))
    queries, relevance = relevance_from_qa_dataset(qa)
    job = vs.deep_memory.train(queries, relevance, max_seconds=2)
    assert vs.deep_memory.wait(job, timeout=60)["status"] == "completed"


@pytest.mark.parametrize("bad, message", [
    ({"queries": {"q": "x"}, "relevant_docs": {}}, "query 'q': expected a text with a list of relevant node ids"),
    ({"queries": {"q": "x"}, "relevant_docs": {"q": "n1"}}, "query 'q'"),
    ({"queries": {}, "relevant_docs": {}}, "no queries"),
    ({"queries": ["x"], "relevant_docs": {}}, "needs 'queries' as a dict"),
    (object(), "needs 'queries' as a dict"),
])
def test_malformed_datasets_are_refused(bad, message):
    with pytest.raises(SampleError, match=message):
        relevance_from_qa_dataset(bad)
