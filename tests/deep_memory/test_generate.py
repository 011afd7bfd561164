"""generate_queries: an LLM (callable, LlamaIndex-like .complete, LangChain-like .invoke) writes training questions."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import tensordb
from tensordb.deep_memory import QueryGenerationError, generate_queries
from tensordb.deep_memory.corpus import TextCorpus
from tensordb.deep_memory.relevance import check_relevance

TEXTS = [f"chunk {i} explains topic{i} in detail" for i in range(30)]
IDS = [f"c{i}" for i in range(30)]


def question_for(prompt: str) -> str:
    """A deterministic stand-in LLM: names the topic of the chunk it was shown."""
    topic = next(w for w in prompt.split() if w.startswith("topic"))
    return f"Question: what is {topic}?\n(extra explanation the cleaner drops)"


@pytest.fixture
def store(vs_path):
    vs = tensordb.VectorStore(vs_path, embedding_function=tensordb.HashingEmbedding(dim=16))
    vs.add(text=TEXTS, id=IDS)
    vs.dataset.commit("chunks")
    return vs


def _state(vs) -> tuple[Any, ...]:
    ds = vs.dataset
    return ds.commit_id, len(ds), ds.list_attachments(""), ds["text"].numpy(aslist=True)


def test_one_question_per_sampled_chunk_pointing_at_that_chunk(store):
    before = _state(store)
    queries, relevance = generate_queries(store, question_for, n=10, seed=0, show_progress=False)
    assert len(queries) == 10 and len(set(queries)) == 10
    for q, rel in zip(queries, relevance, strict=True):
        assert len(rel) == 1 and rel[0][1] == 1.0
        chunk = IDS.index(rel[0][0])
        assert q == f"what is topic{chunk}?"  # the question was written from that chunk's own text
    assert check_relevance(queries, relevance, set(IDS)) == relevance  # ready for train()
    assert _state(store) == before


def test_the_sample_follows_the_seed(store):
    a = generate_queries(store, question_for, n=8, seed=1, show_progress=False)
    assert generate_queries(store, question_for, n=8, seed=1, show_progress=False) == a
    assert generate_queries(store, question_for, n=8, seed=2, show_progress=False) != a


def test_llama_index_and_langchain_shaped_llms_give_the_same_questions(store):
    expected = generate_queries(store, question_for, n=5, show_progress=False)
    llama_like = SimpleNamespace(complete=lambda p: SimpleNamespace(text=question_for(p)))
    langchain_like = SimpleNamespace(invoke=lambda p: SimpleNamespace(content=question_for(p)))
    assert generate_queries(store, llama_like, n=5, show_progress=False) == expected
    assert generate_queries(store, langchain_like, n=5, show_progress=False) == expected


def test_empty_and_duplicate_questions_are_skipped_for_other_chunks(store):
    def patchy(prompt: str) -> str:
        topic = int(next(w for w in prompt.split() if w.startswith("topic"))[5:])
        if topic % 3 == 0:
            return "   \n"
        return "What is this?" if topic % 3 == 1 else f"what is topic{topic}?"

    queries, relevance = generate_queries(store, patchy, n=12, show_progress=False)
    # One "What is this?" survives; every other question is a distinct topic ≡ 2 (mod 3); 10 of those exist.
    assert len(queries) == 11 and queries.count("What is this?") == 1
    assert len({r[0][0] for r in relevance}) == 11


def test_a_failing_call_is_retried_then_named(store):
    calls = []

    def flaky(prompt: str) -> str:
        calls.append(prompt)
        if len(calls) % 3:  # fails twice, then answers
            raise ConnectionError("rate limited")
        return question_for(prompt)

    queries, _ = generate_queries(store, flaky, n=2, max_retries=2, retry_wait=0, show_progress=False)
    assert len(queries) == 2 and len(calls) == 6
    before = _state(store)
    calls.clear()
    with pytest.raises(QueryGenerationError, match=r"chunk 'c\d+' after 2 attempts: ConnectionError: rate limited"):
        generate_queries(store, flaky, n=2, max_retries=1, retry_wait=0, show_progress=False)
    assert _state(store) == before


@pytest.mark.parametrize("answer, shown", [
    (None, "NoneType None"),
    (["a", "question"], "list ['a', 'question']"),
    (SimpleNamespace(text=3), "int 3"),
])
def test_an_answer_that_is_not_text_is_named_with_its_chunk(store, answer, shown):
    llm = SimpleNamespace(complete=lambda p: answer) if isinstance(answer, SimpleNamespace) else (lambda p: answer)
    before = _state(store)
    with pytest.raises(QueryGenerationError, match=rf"chunk 'c\d+' with {re.escape(shown)}"):
        generate_queries(store, llm, n=3, show_progress=False)
    assert _state(store) == before


def test_fewer_chunks_than_asked_return_every_chunk_once(store):
    queries, relevance = generate_queries(store, question_for, n=100, show_progress=False)
    assert len(queries) == 30 and sorted(r[0][0] for r in relevance) == sorted(IDS)


@dataclass
class ArrayTextCorpus:
    dataset: tensordb.Dataset
    ids: list[str]
    texts: list[str]

    def ids_and_embeddings(self) -> tuple[list[str], np.ndarray]:
        return list(self.ids), np.zeros((len(self.ids), 4), np.float32)

    def embed_queries(self, texts: list[str], embedding_function: Any = None) -> np.ndarray:
        return np.zeros((len(texts), 4), np.float32)

    def ids_and_texts(self) -> tuple[list[str], list[str]]:
        return list(self.ids), list(self.texts)


def test_a_text_corpus_is_read_through_its_protocol():
    corpus = ArrayTextCorpus(tensordb.empty(f"mem://{uuid.uuid4().hex}", overwrite=True), ["x", "y"],
                             ["about topicX", ""])
    assert isinstance(corpus, TextCorpus)
    assert generate_queries(corpus, question_for, n=5, show_progress=False) == (["what is topicX?"], [[("x", 1.0)]])


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "n must be a positive int"),
    ({"prompt": "no slot"}, "prompt must be a str holding {text}"),
    ({"max_retries": -1}, "max_retries must be an int >= 0"),
])
def test_bad_arguments_are_refused(store, kwargs, message):
    with pytest.raises(QueryGenerationError, match=message):
        generate_queries(store, question_for, show_progress=False, **kwargs)


def test_an_llm_of_no_known_shape_is_refused(store):
    with pytest.raises(QueryGenerationError, match="got int"):
        generate_queries(store, 42, show_progress=False)
