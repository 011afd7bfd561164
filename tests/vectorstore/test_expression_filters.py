"""A WHERE expression of query_lang's AST is a filter as it is: never printed to text and parsed back."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from query_lang import ast
from tensordb import HashingEmbedding, VectorStore
from tensordb.vectorstore import filters


def _store() -> VectorStore:
    vs = VectorStore(f"mem://{uuid.uuid4().hex}", embedding_function=HashingEmbedding(16), overwrite=True)
    vs.add(text=[f"doc {i}" for i in range(6)], metadata=[{"n": i, "even": i % 2 == 0} for i in range(6)],
           id=[f"d{i}" for i in range(6)])
    return vs


def _n_at_least(value: int) -> ast.Expr:
    return ast.Binary(">=", ast.Index(ast.Column("metadata"), ("n",)), ast.Literal(value))


@pytest.fixture
def no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(text: str) -> None:
        raise AssertionError(f"the filter was parsed from text: {text!r}")

    monkeypatch.setattr(filters, "parse", refuse)


def test_rows_where_takes_an_expression(no_parsing) -> None:
    np.testing.assert_array_equal(_store().rows_where(_n_at_least(4)), [4, 5])


def test_search_get_and_delete_take_an_expression(no_parsing) -> None:
    vs = _store()
    found = vs.search(embedding_data="doc", k=6, filter=_n_at_least(3))
    assert sorted(found["id"]) == ["d3", "d4", "d5"]
    assert vs.get(filter=_n_at_least(5))["id"] == ["d5"]
    assert vs.search(embedding_data="doc", k=6, ids=["d1", "d4"], filter=_n_at_least(3))["id"] == ["d4"]
    vs.delete(filter=_n_at_least(2))
    assert vs.get()["id"] == ["d0", "d1"]


def test_an_expression_and_its_text_select_the_same_rows() -> None:
    vs = _store()
    np.testing.assert_array_equal(vs.rows_where(_n_at_least(2)), vs.rows_where("metadata['n'] >= 2"))


def test_a_filter_of_another_type_is_refused() -> None:
    with pytest.raises(Exception, match="filter must be"):
        _store().rows_where(42)
