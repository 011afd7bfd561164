"""TQL functions that end the Ray worker evaluating them, for the worker-failure tests.

They live in a module of their own, which the workers of the ``ray_cluster`` fixture can import.
Each takes an int column and returns true for every row, unless it ends the process first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from query_lang import Arg, CallContext, Function, ValueType


class CrashOnce(Function):
    """``crash_once(x)``: the first process to evaluate it (marked by creating ``marker``) dies at once."""

    name = "crash_once"
    min_args = max_args = 1
    pure = False

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def check(self, args: Sequence[Arg]) -> ValueType:
        return ValueType("bool")

    def evaluate(self, args: list[Any], ctx: CallContext) -> np.ndarray:
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return np.ones(ctx.n, dtype=bool)
        os._exit(1)


class CrashAlways(Function):
    """``crash_always(x)``: every process evaluating it dies (never evaluate it in the test process)."""

    name = "crash_always"
    min_args = max_args = 1
    pure = False

    def check(self, args: Sequence[Arg]) -> ValueType:
        return ValueType("bool")

    def evaluate(self, args: list[Any], ctx: CallContext) -> np.ndarray:
        os._exit(1)
