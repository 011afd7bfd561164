"""Plan-time description of expression values."""

from __future__ import annotations

from dataclasses import dataclass

from .source import ColumnInfo

#: Per-row value kinds. Runtime representation per batch of ``n`` rows:
#: number/bool -> 1-D ndarray; text/object/list -> list of Python values;
#: array -> ndarray ``(n, *shape)`` when ``shape`` is fixed, else list of ndarrays;
#: null -> only as a constant.
KINDS = ("number", "bool", "text", "object", "list", "array", "null")


@dataclass(frozen=True)
class ValueType:
    """The kind of a value plus what is known statically about it.

    ``shape`` (arrays only) is the per-row shape, ``None`` entries marking
    dimensions that vary; ``shape is None`` means the rank varies too.
    ``htype``/``column`` name the source tensor when the value is read directly
    from one, so error messages can point at it.
    """

    kind: str
    shape: tuple[int | None, ...] | None = None
    htype: str | None = None
    column: str | None = None

    @property
    def fixed_shape(self) -> bool:
        """True when every row has the same known shape (ndarray representation)."""
        return self.kind == "array" and self.shape is not None and None not in self.shape

    def describe(self) -> str:
        """Human wording for error messages."""
        if self.column is not None:
            return f"tensor '{self.column}' has htype {self.htype}"
        if self.kind == "array" and self.shape is not None:
            dims = ", ".join("?" if d is None else str(d) for d in self.shape)
            return f"the argument is an array of shape ({dims})"
        return f"the argument is a {self.kind} value"


NUMBER = ValueType("number")
BOOL = ValueType("bool")
TEXT = ValueType("text")
OBJECT = ValueType("object")
NULL = ValueType("null")


def column_type(info: ColumnInfo) -> ValueType:
    """The value type of a source column."""
    htype = info.htype
    if htype in ("text", "id"):
        return ValueType("text", htype=htype, column=info.name)
    if htype == "json":
        return ValueType("object", htype=htype, column=info.name)
    if htype == "list":
        return ValueType("list", htype=htype, column=info.name)
    shape = info.shape
    if shape == () or (htype == "class_label" and shape in (None, (1,))):
        kind = "bool" if info.dtype is not None and info.dtype.kind == "b" else "number"
        return ValueType(kind, htype=htype, column=info.name)
    return ValueType("array", shape=shape, htype=htype, column=info.name)


def unnamed(t: ValueType) -> ValueType:
    """``t`` with the source-tensor identity dropped (for derived values)."""
    return ValueType(t.kind, t.shape, None, None)
