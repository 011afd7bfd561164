"""LIKE / ILIKE / NOT LIKE: the linear matcher agrees with plain references on random patterns."""

from __future__ import annotations

import itertools
import re
from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from query_lang import MemorySource, execute
from query_lang.like import like_matcher

# '.', '*', '\\' and '(' would be regex syntax if escaping were lost; 'ß', 'K' and the Kelvin
# sign exercise case-insensitive comparison; '\n' must be matched by '%' and '_'.
TEXT_ALPHABET = "abAB.*\\(\nßkK\u212a"
patterns = st.text(alphabet=TEXT_ALPHABET + "%%__", max_size=8)
texts = st.text(alphabet=TEXT_ALPHABET, max_size=10)


def dp_like(pattern: str, text: str) -> bool:
    """Case-sensitive LIKE by dynamic programming over (pattern position, text position)."""

    @cache
    def match(i: int, j: int) -> bool:
        if i == len(pattern):
            return j == len(text)
        ch = pattern[i]
        if ch == "%":
            return match(i + 1, j) or (j < len(text) and match(i, j + 1))
        if j == len(text):
            return False
        return (ch == "_" or ch == text[j]) and match(i + 1, j + 1)

    return match(0, 0)


def regex_like(pattern: str, text: str, case_insensitive: bool) -> bool:
    """The former translation: '%' → '.*', '_' → '.', everything else literal."""
    body = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    flags = re.DOTALL | (re.IGNORECASE if case_insensitive else 0)
    return re.fullmatch(body, text, flags) is not None


@settings(max_examples=600, deadline=None)
@given(patterns, texts)
def test_like_matches_the_dynamic_programming_reference(pattern: str, text: str) -> None:
    assert like_matcher(pattern)(text) == dp_like(pattern, text)


@settings(max_examples=600, deadline=None)
@given(patterns, texts, st.booleans())
def test_like_and_ilike_match_the_regex_translation(pattern: str, text: str, ci: bool) -> None:
    assert like_matcher(pattern, ci)(text) == regex_like(pattern, text, ci)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from("ab_%"), max_size=6).map("".join),
       st.text(alphabet="ab", max_size=12))
def test_like_on_a_two_letter_alphabet_matches_the_reference(pattern: str, text: str) -> None:
    # A small alphabet makes segments recur, so leftmost placement is tested against real choices.
    assert like_matcher(pattern)(text) == dp_like(pattern, text)


def test_every_short_pattern_matches_the_reference() -> None:
    """Exhaustive over 'a', '_', '%' patterns up to 5 long and 'a'/'b' texts up to 5 long."""
    all_patterns = ["".join(p) for n in range(6) for p in itertools.product("a_%", repeat=n)]
    all_texts = ["".join(t) for n in range(6) for t in itertools.product("ab", repeat=n)]
    for pattern in all_patterns:
        matches = like_matcher(pattern)
        wrong = [t for t in all_texts if matches(t) != dp_like(pattern, t)]
        assert not wrong, f"LIKE '{pattern}' is wrong on {wrong[:5]}"


SQL_PATTERNS = st.text(alphabet="abAB.*\n%_", max_size=6)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.none() | st.text(alphabet="abAB.*\n", max_size=6), max_size=12), SQL_PATTERNS,
       st.booleans(), st.booleans())
def test_queries_select_the_reference_rows(values, pattern, ci, negated) -> None:
    src = MemorySource({"t": values}, {"t": "text"}, batch_size=5)
    op = ("NOT " if negated else "") + ("ILIKE" if ci else "LIKE")
    result = execute(f"select * where t {op} '{pattern}'", src)
    # NULL matches no pattern, so NOT LIKE selects it.
    expected = [i for i, v in enumerate(values)
                if (v is not None and regex_like(pattern, v, ci)) != negated]
    assert result.rows.tolist() == expected


def test_known_cases() -> None:
    assert like_matcher("abc%")("abcdef") and not like_matcher("abc%")("xabc")
    assert like_matcher("%abc")("xxabc") and not like_matcher("%abc")("abcx")
    assert like_matcher("%abc%")("xabcx") and not like_matcher("%abc%")("ab")
    assert like_matcher("a%a")("aa") and not like_matcher("a%a")("a")
    assert not like_matcher("a%_")("a") and not like_matcher("_%_")("a") and like_matcher("_%_")("ab")
    assert like_matcher("a_c")("a\nc") and not like_matcher("a_c")("ac")
    assert like_matcher("%")("") and like_matcher("")("") and not like_matcher("")("x")
    assert like_matcher("AB%", case_insensitive=True)("abc")
    assert not like_matcher("a.c")("abc")
