"""Helpers of the Ray tests: the check that two answers are the same, and TQL functions that end
the Ray worker evaluating them (a module of its own, which the ``ray_cluster`` workers can import).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from query_lang import Arg, CallContext, Function, ValueType


def assert_same(local: Any, ray: Any, where: str) -> None:
    """Equal rows in equal order, equal computed columns (NaN equal to NaN), equal tensors read back."""
    assert np.array_equal(local.row_positions, ray.row_positions), where
    local_virtual, ray_virtual = local.virtual_columns, ray.virtual_columns
    assert list(local_virtual) == list(ray_virtual), where
    for name, values in local_virtual.items():
        a, b = np.asarray(values), np.asarray(ray_virtual[name])
        assert a.dtype == b.dtype, (where, name)
        if a.dtype.kind == "f":
            assert np.array_equal(a, b, equal_nan=True), (where, name)
        else:
            assert a.tolist() == b.tolist(), (where, name)
    assert list(local.tensors) == list(ray.tensors), where


class Predicate(Function):
    """A function of one column that is true or false per row (the check every helper below shares)."""

    min_args = max_args = 1

    def check(self, args: Sequence[Arg]) -> ValueType:
        return ValueType("bool")


class CrashOnce(Predicate):
    """``crash_once(x)``: the first process to evaluate it (marked by creating ``marker``) dies at once."""

    name = "crash_once"
    pure = False

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def evaluate(self, args: list[Any], ctx: CallContext) -> np.ndarray:
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return np.ones(ctx.n, dtype=bool)
        os._exit(1)


class CrashAlways(Predicate):
    """``crash_always(x)``: every process evaluating it dies (never evaluate it in the test process)."""

    name = "crash_always"
    pure = False

    def evaluate(self, args: list[Any], ctx: CallContext) -> np.ndarray:
        os._exit(1)


class Above(Predicate):
    """``above(x)``: x > ``bar``; the same name registered again with another bar computes differently."""

    name = "above"
    pure = False  # not cached by its text: registered again, it is computed again

    def __init__(self, bar: int) -> None:
        self.bar = bar

    def evaluate(self, args: list[Any], ctx: CallContext) -> np.ndarray:
        return np.asarray(args[0]) > self.bar
