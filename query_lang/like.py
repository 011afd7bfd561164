"""``LIKE`` / ``ILIKE`` matching without backtracking.

``%`` matches any run of characters (newlines too), ``_`` exactly one character;
there is no escape character. ``ILIKE`` compares characters the way Python's
``re.IGNORECASE`` does.

Translating each ``%`` to ``.*`` gives a backtracking regex that is exponential in
the number of ``%`` (``'%e%e%e%e%q'`` on 2,000 characters runs for minutes).
Instead the pattern is split on ``%`` into segments, each of fixed width: the
first is anchored at the start of the text, the last at its end, and each middle
one is taken at its leftmost place after the previous one. Leftmost is always
safe: it leaves the most text for the segments after it. A segment is found by
``str.find`` or, when it holds ``_`` or the match ignores case, by a regex made
only of literal characters and ``.``, which cannot backtrack beyond its own width.
So one text costs at most O(len(text) * len(pattern)).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

LikeMatcher = Callable[[str], bool]


@dataclass(frozen=True)
class _Literal:
    """A segment without ``_``, compared case-sensitively."""

    text: str

    @property
    def width(self) -> int:
        return len(self.text)

    def matches_at(self, s: str, pos: int) -> bool:
        return s.startswith(self.text, pos)

    def find(self, s: str, start: int, end: int) -> int:
        return s.find(self.text, start, end)


@dataclass(frozen=True)
class _Wildcards:
    """A segment with ``_`` (any one character) or compared ignoring case."""

    regex: re.Pattern[str]
    width: int

    def matches_at(self, s: str, pos: int) -> bool:
        return self.regex.match(s, pos) is not None

    def find(self, s: str, start: int, end: int) -> int:
        m = self.regex.search(s, start, end)
        return -1 if m is None else m.start()


_Segment = _Literal | _Wildcards


def _segment(text: str, case_insensitive: bool) -> _Segment:
    if "_" not in text and not case_insensitive:
        return _Literal(text)
    body = "".join("." if ch == "_" else re.escape(ch) for ch in text)
    flags = re.DOTALL | (re.IGNORECASE if case_insensitive else 0)
    return _Wildcards(re.compile(body, flags), len(text))


def literal_pieces(pattern: str) -> list[str]:
    """The runs of plain characters in a pattern: a text that matches holds every one of them."""
    return [piece for segment in pattern.split("%") for piece in segment.split("_") if piece]


def like_matcher(pattern: str, case_insensitive: bool = False) -> LikeMatcher:
    """A function telling whether a whole text matches the LIKE ``pattern``."""
    segments = [_segment(part, case_insensitive) for part in pattern.split("%")]
    if len(segments) == 1:
        return _exact_matcher(segments[0])
    fast = _fast_path(segments)
    if fast is not None:
        return fast
    first, *middle, last = segments
    return lambda s: _matches(s, first, middle, last)


def _exact_matcher(only: _Segment) -> LikeMatcher:
    if isinstance(only, _Literal):
        return only.text.__eq__
    return lambda s: len(s) == only.width and only.matches_at(s, 0)


def _fast_path(segments: list[_Segment]) -> LikeMatcher | None:
    """``'abc%'``, ``'%abc'``, ``'a%c'`` and ``'%abc%'``: one or two direct calls per text."""
    if len(segments) == 2:
        head, tail = segments
        if isinstance(head, _Literal) and isinstance(tail, _Literal):
            h, t, need = head.text, tail.text, head.width + tail.width
            return lambda s: len(s) >= need and s.startswith(h) and s.endswith(t)
        need = head.width + tail.width
        return lambda s: len(s) >= need and head.matches_at(s, 0) and tail.matches_at(s, len(s) - tail.width)
    if len(segments) == 3 and segments[0].width == segments[2].width == 0:
        middle = segments[1]
        if isinstance(middle, _Literal):
            m = middle.text
            return lambda s: m in s
        search = middle.regex.search
        return lambda s: search(s) is not None
    return None


def _matches(s: str, first: _Segment, middle: list[_Segment], last: _Segment) -> bool:
    start, end = first.width, len(s) - last.width
    if end < start or not first.matches_at(s, 0) or not last.matches_at(s, end):
        return False
    for seg in middle:
        at = seg.find(s, start, end)
        if at < 0:
            return False
        start = at + seg.width
    return True
