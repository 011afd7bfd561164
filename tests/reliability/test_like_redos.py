"""Hostile LIKE patterns: many ``%`` over long texts finish instead of backtracking for minutes.

A backtracking regex translation of ``'%e%e%e%e%q'`` takes more than 30 s on one
2,000-character text of ``e``. Each query here runs under a ``SIGALRM`` watchdog,
so a regression fails with a clear message instead of hanging the suite. The
limit is a hang guard, not a timing assertion: it is orders of magnitude above the
time a linear matcher needs.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from query_lang import MemorySource, execute

HANG_LIMIT_S = 20


class LikeHang(Exception):
    pass


@contextmanager
def watchdog(what: str) -> Iterator[None]:
    def on_alarm(signum, frame):
        raise LikeHang(f"{what} still running after {HANG_LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(HANG_LIMIT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def matching_rows(texts: list[str | None], condition: str) -> list[int]:
    src = MemorySource({"t": texts}, {"t": "text"})
    query = f"select * where {condition}"
    with watchdog(query[:80]):
        return execute(query, src).rows.tolist()


HOSTILE = ["%e%e%e%e%q", "%e%e%e%e%e%e%e%e%q", "%_e%_e%_e%_e%q", "%e_%e_%e_%e_%q", "%%%%%%%%%%%%q",
           "%e%e%e%e%q%", "%_e%_e%_e%_e%q_%", "e%e%e%e%e%q%e"]


@pytest.mark.parametrize("length", [2_000, 100_000])
@pytest.mark.parametrize("pattern", HOSTILE)
def test_hostile_like_pattern_finishes_and_matches_nothing(pattern: str, length: int) -> None:
    texts = ["e" * length, "E" * length, None, "e" * (length - 1) + "x"]
    assert matching_rows(texts, f"t LIKE '{pattern}'") == []
    assert matching_rows(texts, f"t ILIKE '{pattern}'") == []
    assert matching_rows(texts, f"t NOT LIKE '{pattern}'") == [0, 1, 2, 3]


@pytest.mark.parametrize("length", [2_000, 100_000])
def test_hostile_like_pattern_still_finds_the_real_match(length: int) -> None:
    texts = ["e" * length, "e" * length + "q", "E" * (length // 2) + "Q", "q" + "e" * length]
    assert matching_rows(texts, "t LIKE '%e%e%e%e%q'") == [1]
    assert matching_rows(texts, "t ILIKE '%e%e%e%e%q'") == [1, 2]
    assert matching_rows(texts, "t LIKE 'q%e%e%e%e'") == [3]
    assert matching_rows(texts, "t LIKE '%e_e_e_e%q'") == [1]
