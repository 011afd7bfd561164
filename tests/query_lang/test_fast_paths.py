"""The parser's shortcut for long ARRAY literals, and batched execution (execute_many)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from query_lang import MemorySource, execute, execute_many, parse
from query_lang.errors import TQLSyntaxError
from query_lang.parser import _parser


def _body() -> str:
    q = np.random.default_rng(0).standard_normal(32)
    return ", ".join(repr(float(x)) for x in q) + ",\n -3, 7 , 1e3, .5, -2.5E-3, 9223372036854775807"


@pytest.mark.parametrize("template", [
    "select * order by cosine_similarity(embedding, ARRAY[{b}]) desc limit 3",
    "select ARRAY[{b}] as a, 'ARRAY[{b}]' as s, \"ARRAY[1]\" from (select *)",
    "select * where x == 1 order by dot(embedding, array [ {b} ]) limit 2",
    "select ARRAY[{b}] as a, ARRAY[1, 2] as b, ARRAY[] as c",
])
def test_long_array_literal_parses_like_the_grammar(template):
    text = template.format(b=_body())
    assert parse(text) == _parser().parse(text)


@pytest.mark.parametrize("tail", [", 99999999999999999999", ", 1e999", ", - 5", ", +5", ", 1_0", ",, 2", " 2"])
def test_unusual_number_lists_are_left_to_the_grammar(tail):
    _assert_parses_like_the_grammar(f"select ARRAY[{_body()}{tail}] as a")


def _assert_parses_like_the_grammar(text: str) -> None:
    """``parse`` gives the grammar's own AST (number types included), or a TQLSyntaxError where it fails."""
    try:
        expected = _parser().parse(text)
    except Exception:  # noqa: BLE001
        with pytest.raises(TQLSyntaxError):
            parse(text)
        return
    got = parse(text)
    assert got == expected
    first = got.select[0].expr
    if hasattr(first, "values"):
        assert [type(v) for v in first.values] == [type(v) for v in expected.select[0].expr.values]


def _float_body() -> str:
    q = np.random.default_rng(1).standard_normal(40)
    return ",\n".join(repr(float(x)) for x in q) + ", 5., -.5, 1.e5 , 2.5E-3,\t-0.0"


@pytest.mark.parametrize("tail", ["", ", 1.5.5", ", -.", ", 1.e", ", +1.5", ", 1.5e+3", ", \u0663.\u0665",
                                  ", 1e999.0", ", 1.5 2.5", ", .", ", 1.5\v"])
def test_float_only_lists_parse_like_the_grammar(tail):
    _assert_parses_like_the_grammar(f"select ARRAY[{_float_body()}{tail}] as a")


def test_queries_differing_only_in_their_vectors_share_one_template():
    from query_lang.parser import _parse_template

    rng = np.random.default_rng(5)
    texts = [("select * where g == 1 order by cosine_similarity(embedding, ARRAY["
              + ", ".join(repr(float(x)) for x in rng.standard_normal(n)) + "]) desc limit 3")
             for n in (40, 40, 57)]
    _parse_template.cache_clear()
    for text in texts:
        assert parse(text) == _parser().parse(text)
    assert _parse_template.cache_info().currsize == 1 and _parse_template.cache_info().hits == 2


def test_error_positions_after_a_long_literal_are_unchanged():
    bad = f"select * order by dot(e, ARRAY[{_body()}]) desc limit 3 limit"
    with pytest.raises(TQLSyntaxError) as err:
        parse(bad)
    assert err.value.line == 2
    assert err.value.column == len(bad.split("\n")[1]) - len("limit") + 1


def test_execute_many_matches_execute():
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((500, 6)).astype(np.float32)
    emb[7] = 0
    src = MemorySource({"embedding": emb, "g": np.arange(500) % 4, "name": [f"n{i}" for i in range(500)]},
                       htypes={"embedding": "embedding", "name": "text"}, batch_size=64)
    arr = lambda q: "ARRAY[" + ", ".join(repr(float(x)) for x in q) + "]"  # noqa: E731
    texts = []
    for _ in range(4):
        q = arr(rng.standard_normal(6))
        texts += [f"select * order by cosine_similarity(embedding, {q}) desc limit 5 offset 2",
                  f"select name where g == 1 order by dot(embedding, {q}) asc limit 7",
                  f"select * order by cosine_similarity({q}, embedding) desc limit 3"]
    texts += ["select name where g == 2 limit 3", f"select * order by dot(embedding, {arr(np.zeros(6))}) limit 4"]
    for text, got in zip(texts, execute_many(texts, src), strict=True):
        want = execute(text, src)
        assert np.array_equal(got.rows, want.rows), text
        assert got.columns == want.columns
        for k, v in want.virtual.items():
            np.testing.assert_allclose(np.asarray(got.virtual[k], dtype=float), np.asarray(v, dtype=float),
                                       rtol=1e-5, equal_nan=True)


_LONG_TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=0, max_size=60)


@settings(max_examples=150, deadline=None)
@given(first=_LONG_TEXT, second=_LONG_TEXT, name=st.text("ab\"' ", min_size=1, max_size=6))
def test_long_string_literals_parse_like_the_grammar(first, second, name):
    quoted = name.replace('"', '""')
    a, b = (x.replace("'", "''") for x in (first, second))
    text = (f"select \"{quoted}\", '{a}' as s where t['{b}'] == 'x' "
            f"order by bm25_similarity(text, '{b}') desc limit 3")
    _assert_parses_like_the_grammar(text)


def test_queries_differing_only_in_long_strings_share_one_template():
    from query_lang.parser import _parse_template

    texts = [f"select id order by bm25_similarity(text, '{q}') desc limit 10"
             for q in ("how do writers share a lock", "what does vacuum keep o''clock", "connect my own storage")]
    _parse_template.cache_clear()
    for text in texts:
        assert parse(text) == _parser().parse(text)
    assert _parse_template.cache_info().currsize == 1 and _parse_template.cache_info().hits == 2
    assert parse(texts[1]).order_by[0].expr.args[1].value == "what does vacuum keep o'clock"
