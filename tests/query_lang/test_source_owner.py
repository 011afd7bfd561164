"""ScanSource.owner: the typed way for a function to reach the object the rows come from."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from query_lang import CallContext, Function, MemorySource, ScanSource, execute, execute_many
from query_lang.functions import check_same_dim, register_function, unregister_function
from query_lang.vtypes import NUMBER


class _OwnerScore(Function):
    """dot(embedding, q) plus the owner's bias: a vector score that needs more than columns."""

    name = "owner_score"
    min_args = max_args = 2
    vector_score = True
    pure = False

    def check(self, args):
        check_same_dim(self.name, args[0], args[1])
        return NUMBER

    def evaluate(self, args, ctx: CallContext):
        owner = ctx.source.owner
        return np.asarray(args[0], dtype=np.float64) @ np.asarray(args[1], dtype=np.float64) + owner["bias"]


@pytest.fixture
def owner_score():
    register_function(_OwnerScore())
    yield
    unregister_function("owner_score")


def _source(owner):
    emb = np.arange(12, dtype=np.float32).reshape(6, 2)
    return MemorySource({"embedding": emb}, {"embedding": "embedding"}, owner=owner)


def test_the_protocol_declares_owner_and_the_call_context_is_typed():
    assert "owner" in typing.get_type_hints(ScanSource)
    hint = typing.get_type_hints(CallContext)["source"]
    assert ScanSource in typing.get_args(hint) or hint is ScanSource


def test_a_memory_source_has_no_owner_unless_given():
    assert MemorySource({"x": [1, 2]}).owner is None
    marker = object()
    assert MemorySource({"x": [1, 2]}, owner=marker).owner is marker


def test_a_function_reaches_the_owner(owner_score):
    result = execute("select * order by owner_score(embedding, ARRAY[1, 0]) desc limit 2", _source({"bias": 100}))
    assert result.rows.tolist() == [5, 4]
    assert result.virtual["score"].tolist() == [110.0, 108.0]


def test_batched_vector_searches_also_see_the_owner(owner_score):
    texts = [f"select * order by owner_score(embedding, ARRAY[{a}, 1]) desc limit 2" for a in (1, 2)]
    source = _source({"bias": 0.5})
    batched = execute_many(texts, source)
    for text, got in zip(texts, batched, strict=True):
        want = execute(text, source)
        assert got.rows.tolist() == want.rows.tolist()
        assert got.virtual["score"].tolist() == want.virtual["score"].tolist()
