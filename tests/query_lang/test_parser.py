"""Parser, printer and syntax-error behaviour."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tql_strategies import queries

from query_lang import TQLError, TQLSyntaxError, parse, to_sql
from query_lang import ast as A


@settings(max_examples=300, deadline=None)
@given(queries)
def test_print_parse_roundtrip(q: A.Query) -> None:
    text = to_sql(q)
    assert parse(text) == q, text
    assert to_sql(parse(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_text_only_raises_syntax_error(text: str) -> None:
    try:
        parse(text)
    except TQLSyntaxError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60))
def test_random_bytes_only_raise_syntax_error(data: bytes) -> None:
    try:
        parse("select * where " + data.decode("utf-8", errors="replace"))
    except TQLSyntaxError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["select", "*", "from", "(", ")", "where", "a", "=", "1", "'s'",
                                 "order", "by", "desc", "limit", "and", "not", "[", "]", ",",
                                 ":", "-", "ARRAY", "in", "between", "is", "null", "like"]),
                max_size=14))
def test_token_soup_only_raises_syntax_error(tokens: list[str]) -> None:
    try:
        parse(" ".join(tokens))
    except TQLSyntaxError:
        pass


def test_keywords_case_insensitive_and_names_kept() -> None:
    q = parse("SeLeCt selected, Orders FrOm (select * LIMIT 3) WhErE selected = 1 oRdEr By Orders DESC")
    assert q.select == (A.SelectItem(A.Column("selected")), A.SelectItem(A.Column("Orders")))
    assert q.source == A.Query((A.Star(),), limit=3)
    assert q.where == A.Binary("==", A.Column("selected"), A.Literal(1))
    assert q.order_by == (A.OrderKey(A.Column("Orders"), True),)


def test_literals() -> None:
    q = parse("select 1, -2.5, 1e-3, 'it''s', TRUE, false, NULL, ARRAY[1, 2.5, -3], \"a b\"")
    values = [s.expr for s in q.select]
    assert values[:7] == [A.Literal(v) for v in (1, -2.5, 0.001, "it's", True, False, None)]
    assert values[7] == A.ArrayLiteral((1, 2.5, -3))
    assert values[8] == A.Column("a b")


def test_indexing_and_json_access() -> None:
    q = parse("select t[:, 3], t[1:3], metadata['a']['b'], shape(t)[0] where a <> 1")
    e = [s.expr for s in q.select]
    assert e[0] == A.Index(A.Column("t"), (A.Slice(), 3))
    assert e[1] == A.Index(A.Column("t"), (A.Slice(1, 3),))
    assert e[2] == A.Index(A.Index(A.Column("metadata"), ("a",)), ("b",))
    assert e[3] == A.Index(A.Call("shape", (A.Column("t"),)), (0,))
    assert q.where == A.Binary("!=", A.Column("a"), A.Literal(1))


def test_precedence() -> None:
    q = parse("select * where a = 1 or b = 2 and not c > 3 + 4 * 5")
    assert q.where == A.BoolOp("OR", (
        A.Binary("==", A.Column("a"), A.Literal(1)),
        A.BoolOp("AND", (
            A.Binary("==", A.Column("b"), A.Literal(2)),
            A.Unary("NOT", A.Binary(">", A.Column("c"), A.Binary(
                "+", A.Literal(3), A.Binary("*", A.Literal(4), A.Literal(5))))),
        )),
    ))


def test_caret_line_and_column() -> None:
    with pytest.raises(TQLSyntaxError) as info:
        parse("select *\nwhere a = = 2")
    e = info.value
    assert (e.line, e.column) == (2, 11)
    lines = str(e).splitlines()
    assert lines[-2].strip() == "where a = = 2"
    assert lines[-1].index("^") - lines[-2].index("where") == 10
    assert "line 2, column 11" in str(e)
    assert "expected one of" in str(e) and "number" in e.expected


def test_keyword_typo_suggestion() -> None:
    with pytest.raises(TQLSyntaxError, match="did you mean WHERE"):
        parse("select * wher a = 1")


def test_unexpected_end() -> None:
    with pytest.raises(TQLSyntaxError, match="unexpected end of query") as info:
        parse("select * where a >")
    assert info.value.column == len("select * where a >") + 1


@pytest.mark.parametrize("text", [
    "select a\x00",
    "select 1e999",
    "select 99999999999999999999999",
    "select " + "9" * 5000,
    "select * where a = 'x' \u2603",
    "select \u00e9t\u00e9",
    "select * limit 2.5",
    "select * where t[1.5] > 0",
    "",
    "select",
])
def test_bad_input_is_syntax_error(text: str) -> None:
    with pytest.raises(TQLSyntaxError):
        parse(text)


def test_deep_nesting_never_recursion_error() -> None:
    assert parse("select " + "(" * 1000 + "1" + ")" * 1000).select[0].expr == A.Literal(1)
    for text in ["select " + "(" * 1000, "select " + "-" * 1000 + "a",
                 "select " + "(a + " * 1000 + "1" + ")" * 1000,
                 "select * where " + "not " * 5000 + "a",
                 "select " + "+".join(["a"] * 3000)]:
        with pytest.raises(TQLSyntaxError):
            parse(text)


def test_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        parse("select from")
    assert issubclass(TQLSyntaxError, TQLError)
