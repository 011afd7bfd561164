"""TQL: the tensordb query language (parser, planner, vectorized executor).

query_lang never imports tensordb; it runs against any :class:`ScanSource`.
"""

from .ast import Query
from .errors import (
    TQLError,
    TQLExecutionError,
    TQLNameError,
    TQLSyntaxError,
    TQLTypeError,
)
from .executor import QueryResult, execute, execute_many
from .functions import (
    Arg,
    CallContext,
    Function,
    function_names,
    get_function,
    register_function,
    unregister_function,
)
from .memory_source import MemorySource
from .parser import parse
from .planner import Plan, plan_query
from .printer import to_sql
from .source import Batch, ColumnInfo, ScanSource
from .vtypes import ValueType

__all__ = [
    "Arg",
    "Batch",
    "CallContext",
    "ColumnInfo",
    "Function",
    "MemorySource",
    "Plan",
    "Query",
    "QueryResult",
    "ScanSource",
    "TQLError",
    "TQLExecutionError",
    "TQLNameError",
    "TQLSyntaxError",
    "TQLTypeError",
    "ValueType",
    "execute",
    "execute_many",
    "function_names",
    "get_function",
    "parse",
    "plan_query",
    "register_function",
    "to_sql",
    "unregister_function",
]
