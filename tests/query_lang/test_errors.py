"""Plan-time name/type errors and their messages."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from tql_strategies import queries

from query_lang import (
    MemorySource,
    TQLError,
    TQLExecutionError,
    TQLNameError,
    TQLTypeError,
    execute,
)


def _vec(n: int) -> str:
    return "ARRAY[" + ", ".join(["0.5"] * n) + "]"


def test_unknown_tensor_suggests(src: MemorySource) -> None:
    with pytest.raises(TQLNameError) as info:
        execute("select * where lables = 1", src)
    msg = str(info.value)
    assert "Unknown tensor 'lables'" in msg and "Did you mean 'labels'?" in msg
    assert "embedding" in msg and info.value.suggestion == "labels"


def test_unknown_function_suggests(src: MemorySource) -> None:
    with pytest.raises(TQLNameError, match="Did you mean 'cosine_similarity'"):
        execute(f"select * order by cosine_similarty(embedding, {_vec(8)}) limit 1", src)


def test_alias_in_where_hint(src: MemorySource) -> None:
    with pytest.raises(TQLNameError, match="subquery"):
        execute("select *, len(text) as n where n > 3", src)


def test_cosine_on_text(src: MemorySource) -> None:
    with pytest.raises(TQLTypeError) as info:
        execute("select * order by cosine_similarity(text, ARRAY[1, 2]) desc limit 3", src)
    assert str(info.value) == (
        "cosine_similarity expects an embedding or numeric array, but tensor 'text' has "
        "htype text")


def test_array_length_mismatch() -> None:
    src = MemorySource({"embedding": np.ones((3, 384), np.float32)}, {"embedding": "embedding"})
    with pytest.raises(TQLTypeError, match="ARRAY has 383 elements but tensor 'embedding' "
                                           "has dimension 384"):
        execute(f"select * order by cosine_similarity(embedding, {_vec(383)}) limit 1", src)
    with pytest.raises(TQLTypeError, match="ARRAY has 2 elements"):
        execute("select * order by l2_norm(embedding - ARRAY[1, 2]) limit 1", src)


@pytest.mark.parametrize("query, pattern", [
    ("select * where text > 3", "cannot compare text"),
    ("select * where embedding > 0", "any"),
    ("select * where text + 1 > 0", "not defined for text"),
    ("select len(labels) as x", "len expects"),
    ("select embedding[9] as x", "bad index"),
    ("select * where text like labels", "LIKE pattern"),
    ("select contains(labels, 1) as c", "contains expects"),
    ("select dot(embedding) as d", "takes 2"),
])
def test_type_errors(src: MemorySource, query: str, pattern: str) -> None:
    with pytest.raises(TQLTypeError, match=pattern):
        execute(query, src)


def test_errors_raised_before_scanning(src: MemorySource) -> None:
    class Exploding(MemorySource):
        def scan(self, columns, rows=None):  # noqa: ANN001, ANN201
            raise AssertionError("scanned")

    bad = Exploding({"text": ["a"]}, {"text": "text"})
    with pytest.raises(TQLTypeError):
        execute("select * order by cosine_similarity(text, ARRAY[1]) limit 1", bad)


def test_source_failures_become_tql_errors() -> None:
    class Broken(MemorySource):
        def scan(self, columns, rows=None):  # noqa: ANN001, ANN201
            raise OSError("disk on fire")
            yield

    with pytest.raises(TQLExecutionError, match="disk on fire"):
        execute("select * where x > 1", Broken({"x": np.arange(3)}))


def test_syntax_errors_through_execute(src: MemorySource) -> None:
    with pytest.raises(TQLError):
        execute("select * where (", src)


def _robust_source() -> MemorySource:
    return MemorySource(
        {"a": np.arange(6), "b": np.linspace(-1, 1, 6), "text": list("abcdef"),
         "metadata": [{"a": i} for i in range(6)],
         "embedding": np.ones((6, 3), np.float32), "x1": [np.ones(i) for i in range(6)]},
        {"text": "text", "metadata": "json", "embedding": "embedding"}, batch_size=4)


@settings(max_examples=250, deadline=None)
@given(queries)
def test_random_queries_fail_only_with_tql_errors(q: Any) -> None:
    try:
        execute(q, _robust_source())
    except TQLError:
        pass
