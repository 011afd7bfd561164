"""Keyword arguments a method does not know: a TypeError that names them, never silence."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Collection, Mapping
from typing import Any


def refuse_unknown_keywords(method: Callable[..., Any], given: Mapping[str, Any], ignored: Collection[str]) -> None:
    """Raise ``TypeError`` naming each of ``given`` that is not in ``ignored``, with the closest known name.

    ``ignored`` lists the arguments another API (Deep Lake v3) passes that tensordb accepts and ignores.
    """
    unknown = sorted(set(given) - set(ignored))
    if not unknown:
        return
    parameters = inspect.signature(method).parameters.values()
    known = [p.name for p in parameters if p.name != "self" and p.kind is not p.VAR_KEYWORD] + sorted(ignored)
    described = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        described.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    raise TypeError(f"{method.__qualname__}() got unexpected keyword arguments: {', '.join(described)}")
