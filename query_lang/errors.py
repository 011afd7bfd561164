"""Errors raised by query_lang. Every failure surfaces as a :class:`TQLError`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TQLError(ValueError):
    """Base class of all query errors."""


class TQLSyntaxError(TQLError):
    """The query text does not parse; carries ``line``/``column`` (1-based) and ``expected``."""

    def __init__(
        self,
        message: str,
        text: str = "",
        line: int | None = None,
        column: int | None = None,
        expected: Iterable[str] = (),
    ) -> None:
        self.reason = message
        self.text = text
        self.line = line
        self.column = column
        self.expected = sorted(set(expected))
        super().__init__(self._render())

    def _render(self) -> str:
        if self.line is None or self.column is None:
            return self.reason
        msg = f"Syntax error at line {self.line}, column {self.column}: {self.reason}"
        if self.expected:
            shown = self.expected[:12]
            more = "" if len(self.expected) <= 12 else ", ..."
            msg += f"; expected one of: {', '.join(shown)}{more}"
        lines = self.text.split("\n")
        if 1 <= self.line <= len(lines):
            src = lines[self.line - 1].replace("\t", " ")
            # Keep the caret line readable for very long queries.
            start = max(0, self.column - 60)
            snippet = src[start : start + 120]
            msg += f"\n  {snippet}\n  {' ' * (self.column - 1 - start)}^"
        return msg


class TQLNameError(TQLError):
    """An unknown tensor, alias or function name."""

    def __init__(self, kind: str, name: str, valid: Iterable[str], hint: str = "") -> None:
        self.kind = kind
        self.name = name
        self.valid = sorted(set(valid))
        self.suggestion = suggest(name, self.valid)
        msg = f"Unknown {kind} '{name}'."
        if self.suggestion is not None:
            msg += f" Did you mean '{self.suggestion}'?"
        if hint:
            msg += f" {hint}"
        if self.valid:
            msg += f" Valid {kind} names: {', '.join(self.valid)}."
        super().__init__(msg)


class TQLTypeError(TQLError):
    """An expression is applied to values of the wrong type or shape (found at plan time)."""


class TQLExecutionError(TQLError):
    """A failure while scanning or evaluating."""


def suggest(name: str, valid: Iterable[str]) -> str | None:
    """The closest valid name to ``name`` (case-insensitive), or None."""
    valid = list(valid)
    lowered = {v.lower(): v for v in valid}
    if name.lower() in lowered:
        return lowered[name.lower()]
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None
