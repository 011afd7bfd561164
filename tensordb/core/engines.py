"""Where a query runs: in this process (``"local"``), or divided over a Ray cluster (``"ray"``).

The Ray side opens snapshots as tables in its workers, so it sits above ``table.py`` in the
import order and cannot be imported by it. It registers its entry points here instead, when
``tensordb.core`` is imported (``core/__init__.py``), and ``Table`` finds them by name.
"""

from __future__ import annotations

import importlib
import numbers
from collections.abc import Callable
from typing import Any

from ..errors import MissingExtraError, SampleError

#: The engines a query may run on.
ENGINES = ("local", "ray")
_RAY_ENTRY_POINTS: dict[str, Callable[..., Any]] = {}


def check_engine(engine: Any, num_workers: Any) -> None:
    """Refuse an unknown engine, or a worker count that is not a positive int (or is given for local)."""
    if engine not in ENGINES:
        raise SampleError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    if num_workers is None:
        return
    if engine != "ray":
        raise SampleError(f"num_workers applies to engine='ray' only, got num_workers={num_workers!r} "
                          f"with engine={engine!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral) or num_workers < 1:
        raise SampleError(f"num_workers must be a positive integer, got {num_workers!r}")


def import_ray(feature: str, *parts: str) -> Any:
    """The ``ray`` module, once ``ray`` and ``ray.<part>`` for each of ``parts`` import; else a
    MissingExtraError saying that ``feature`` needs the ``ray`` extra."""
    try:
        ray = importlib.import_module("ray")
        for part in parts:
            importlib.import_module(f"ray.{part}")
    except ImportError as e:
        raise MissingExtraError(f'{feature} needs Ray, which is not installed ({e}): pip install "tensordb[ray]"'
                                ) from None
    return ray


def register_ray_entry_point(name: str, fn: Callable[..., Any]) -> None:
    """Make ``fn`` the Ray implementation of ``name`` (e.g. ``"queries"``)."""
    _RAY_ENTRY_POINTS[name] = fn


def ray_entry_point(name: str) -> Callable[..., Any]:
    """The Ray implementation of ``name``, registered when ``tensordb.core`` was imported."""
    return _RAY_ENTRY_POINTS[name]
