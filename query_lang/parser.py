"""Text → AST. ``parse`` raises only :class:`TQLSyntaxError` on bad input."""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import threading
from importlib import resources
from typing import Any

from lark import Lark, Token, Transformer
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput
from lark.lexer import PatternStr

from . import ast
from .errors import TQLError, TQLSyntaxError, suggest

#: Deeper expressions are rejected so that every later (recursive) stage is safe.
MAX_DEPTH = 100
MAX_QUERY_CHARS = 1_000_000
_INT64_MAX = 2**63 - 1

_REGEX_NAMES = {
    "IDENT": "name",
    "QUOTED_IDENT": '"quoted name"',
    "NUMBER": "number",
    "STRING": "'string'",
    "COMP_OP": "comparison operator",
    "$END": "end of query",
}


class _LiteralError(Exception):
    def __init__(self, message: str, token: Token) -> None:
        super().__init__(message)
        self.token = token


def _kw(children: list[Any], name: str) -> bool:
    return any(isinstance(c, Token) and c.type == name for c in children)


def _exprs(children: list[Any]) -> list[Any]:
    return [c for c in children if not isinstance(c, Token)]


def _number(tok: Token, negative: bool = False) -> int | float:
    text = str(tok)
    try:
        if any(ch in text for ch in ".eE"):
            value: int | float = float(text)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
        else:
            if len(text) > 19:
                raise ValueError
            value = int(text)
            if value > _INT64_MAX + (1 if negative else 0):
                raise ValueError
    except ValueError:
        raise _LiteralError(f"numeric literal {text[:30]!r} is out of range", tok) from None
    return -value if negative else value


class _Build(Transformer):
    """Inline (per-reduction) transformer: no recursion regardless of nesting."""

    def start(self, c):
        return c[0]

    def query(self, c):
        parts: dict[str, Any] = {}
        select = None
        for item in c:
            if isinstance(item, tuple) and item and item[0] == "select":
                select = item[1]
            elif isinstance(item, tuple):
                parts[item[0]] = item[1]
        return ast.Query(
            select=select,
            source=parts.get("from"),
            where=parts.get("where"),
            order_by=parts.get("order", ()),
            limit=parts.get("limit"),
            offset=parts.get("offset"),
        )

    def select_list(self, c):
        return ("select", tuple(c))

    def star(self, c):
        return ast.Star()

    def select_expr(self, c):
        e = _exprs(c)
        return ast.SelectItem(e[0], e[1] if len(e) > 1 else None)

    def from_clause(self, c):
        return ("from", _exprs(c)[0])

    def where_clause(self, c):
        return ("where", _exprs(c)[0])

    def order_clause(self, c):
        return ("order", tuple(_exprs(c)))

    def order_key(self, c):
        return ast.OrderKey(_exprs(c)[0], _kw(c, "DESC"))

    def limit_clause(self, c):
        return ("limit", _count(c[1]))

    def offset_clause(self, c):
        return ("offset", _count(c[1]))

    def or_expr(self, c):
        return ast.BoolOp("OR", tuple(_exprs(c)))

    def and_expr(self, c):
        return ast.BoolOp("AND", tuple(_exprs(c)))

    def not_(self, c):
        return ast.Unary("NOT", c[1])

    def compare(self, c):
        op = {"=": "==", "<>": "!="}.get(str(c[1]), str(c[1]))
        return ast.Binary(op, c[0], c[2])

    def in_list(self, c):
        e = _exprs(c)
        return ast.InList(e[0], tuple(e[1:]), _kw(c, "NOT"))

    def between(self, c):
        e = _exprs(c)
        return ast.Between(e[0], e[1], e[2], _kw(c, "NOT"))

    def like(self, c):
        e = _exprs(c)
        return ast.Like(e[0], e[1], _kw(c, "ILIKE"), _kw(c, "NOT"))

    def is_null(self, c):
        return ast.IsNull(c[0], _kw(c, "NOT"))

    def binop(self, c):
        return ast.Binary(str(c[1]), c[0], c[2])

    def neg(self, c):
        operand = c[1]
        if (
            isinstance(operand, ast.Literal)
            and isinstance(operand.value, (int, float))
            and not isinstance(operand.value, bool)
        ):
            return ast.Literal(-operand.value)
        return ast.Unary("-", operand)

    def pos(self, c):
        return c[1]

    def index(self, c):
        return ast.Index(c[0], tuple(c[1:]))

    def index_int(self, c):
        return c[0]

    def index_str(self, c):
        return _string(c[0])

    def slice2(self, c):
        return ast.Slice(c[0], c[1])

    def slice3(self, c):
        return ast.Slice(c[0], c[1], c[2])

    def int_value(self, c):
        tok = c[-1]
        if any(ch in str(tok) for ch in ".eE"):
            raise _LiteralError("index must be an integer", tok)
        return _number(tok, negative=len(c) == 2)

    def number(self, c):
        return ast.Literal(_number(c[0]))

    def string(self, c):
        return ast.Literal(_string(c[0]))

    def true(self, c):
        return ast.Literal(True)

    def false(self, c):
        return ast.Literal(False)

    def null(self, c):
        return ast.Literal(None)

    def array(self, c):
        fast = getattr(_FAST_ARRAYS, "values", None)
        if fast:
            values = fast.get(c[0].start_pos)
            if values is not None:
                return ast.ArrayLiteral(values)
        return ast.ArrayLiteral(tuple(v for v in c[1:] if v is not None))

    def array_item(self, c):
        return _number(c[-1], negative=len(c) == 2)

    def call(self, c):
        name = c[0]
        return ast.Call(name.lower(), tuple(a for a in c[1:] if a is not None))

    def column(self, c):
        return ast.Column(c[0])

    def name(self, c):
        tok = c[0]
        if tok.type == "QUOTED_IDENT":
            return str(tok)[1:-1].replace('""', '"')
        return str(tok)


def _string(tok: Token) -> str:
    return str(tok)[1:-1].replace("''", "'")


def _count(tok: Token) -> int:
    if any(ch in str(tok) for ch in ".eE"):
        raise _LiteralError("LIMIT/OFFSET must be a non-negative integer", tok)
    return int(_number(tok))


#: ``ARRAY`` literals pre-parsed by :func:`_prescan_arrays`, by the ARRAY token's offset.
_FAST_ARRAYS = threading.local()

_NUM = r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
#: Skips strings and quoted names; group 1 is an ``ARRAY[`` keyword with its number list.
_ARRAY_SCAN = re.compile(
    r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")+\"|(?<![A-Za-z0-9_])(ARRAY[ \t\r\n\f]*\[)([^\]'\"]*)\]",
    re.IGNORECASE,
)
_WS = r"[ \t\r\n\f]*"  # exactly what the grammar ignores
_NUMBER_LIST = re.compile(rf"{_WS}-?{_NUM}{_WS}(?:,{_WS}-?{_NUM}{_WS})*")
_NOT_FLOAT_CHAR = re.compile(r"[^0-9eE.\-, \t\r\n\f]")
#: Lists shorter than this are left to the grammar: the shortcut only pays for long ones.
_FAST_ARRAY_MIN_CHARS = 64


def _number_list(body: str) -> tuple[int | float, ...] | None:
    """``body`` as numbers, exactly as the grammar reads them, or None to leave it to the grammar."""
    floats = _float_list(body)
    if floats is not None:
        return floats
    if _NUMBER_LIST.fullmatch(body) is None:
        return None
    items = body.split(",")
    try:
        values = [float(x) if ("." in x or "e" in x or "E" in x) else int(x) for x in items]
    except ValueError:
        return None
    for i, v in enumerate(values):
        if isinstance(v, float):
            if not math.isfinite(v):
                return None
        elif len(items[i]) > 18:
            x = items[i].strip()
            try:
                values[i] = _number(Token("NUMBER", x.lstrip("-")), negative=x.startswith("-"))
            except _LiteralError:
                return None
    return tuple(values)


def _float_list(body: str) -> tuple[float, ...] | None:
    """The common case fast: every item is a decimal with one point (as ``repr(float)`` writes).

    Restricted to those characters, ``float`` accepts exactly what the grammar accepts
    (an optional minus, digits with one point, an optional exponent, spaces around);
    anything else (``+``, integers, a stray token) is left to the exact path.
    """
    items = body.count(",") + 1
    if body.count(".") != items or "+" in body or _NOT_FLOAT_CHAR.search(body) is not None:
        return None
    try:
        values = tuple(map(float, body.split(",")))
    except ValueError:
        return None
    return values if all(map(math.isfinite, values)) else None


def _prescan_arrays(text: str, pad: bool = True) -> tuple[str, dict[int, tuple[int | float, ...]]]:
    """Parse long ``ARRAY[n, -n, ...]`` number lists without the LALR parser.

    Feeding hundreds of numbers token by token through lark costs milliseconds
    per query, which dominates a vector search. Each well-formed list is parsed
    here and replaced by a single ``0``; with ``pad`` the ``0`` keeps the list's
    whitespace layout, so every later token keeps its line, column and offset
    (error messages are unchanged). Returns the new text and the values by the
    offset of their ``ARRAY`` keyword in it. Anything unusual (an out-of-range
    number, a stray token) is left for the grammar to report.
    """
    found: dict[int, tuple[int | float, ...]] = {}
    pieces: list[str] = []
    last = shift = 0
    for m in _ARRAY_SCAN.finditer(text):
        body = m.group(2)
        if m.group(1) is None or len(body) < _FAST_ARRAY_MIN_CHARS:
            continue
        values = _number_list(body)
        if values is not None:
            found[m.start(1) - shift] = values
            pieces.append(text[last : m.start(2)])
            if pad:
                blank = "\n".join(" " * len(line) for line in body.split("\n"))
                first = len(blank) - len(blank.lstrip("\n"))
                pieces.append(f"{blank[:first]}0{blank[first + 1:]}")
            else:
                pieces.append("0")
                shift += len(body) - 1
            last = m.end(2)
    if not found:
        return text, found
    pieces.append(text[last:])
    return "".join(pieces), found


class _Slot:
    """Stands in a parsed template for the ``index``-th pre-parsed ARRAY list."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


@functools.lru_cache(maxsize=256)
def _parse_template(compact: str, offsets: tuple[int, ...]) -> tuple[ast.Query, int, frozenset[int]]:
    """The query of ``compact`` with each pre-parsed ARRAY list left as a :class:`_Slot`, its depth, and the
    nodes that hold a slot or a lifted string.

    Vector searches differ only in their numbers, so one template serves them all.
    """
    _FAST_ARRAYS.values = {off: _Slot(i) for i, off in enumerate(offsets)}
    try:
        template = _parser().parse(compact)
    finally:
        _FAST_ARRAYS.values = None
    return template, ast.depth(template), frozenset(_holders(template))


def _holders(node: Any) -> set[int]:
    """The ids of the nodes at or above a :class:`_Slot` or a lifted string's marker: all that ``_fill`` visits."""
    if isinstance(node, str):
        return {id(node)} if node.startswith(_LIFT_MARK) else set()
    if isinstance(node, _Slot):
        return {id(node)}
    children = node if isinstance(node, tuple) else [
        getattr(node, name) for name in getattr(node, "__dataclass_fields__", ())]
    found = set().union(*(_holders(child) for child in children)) if children else set()
    return found | {id(node)} if found else found


def _fill(node: Any, values: list[tuple[int | float, ...]], strings: dict[str, str], holders: frozenset[int]) -> Any:
    """``node`` with every :class:`_Slot` replaced by its values and every lifted string's marker by the string
    (untouched parts are shared; ``holders`` are the nodes that hold one, see :func:`_holders`)."""
    if id(node) not in holders:
        return node
    if isinstance(node, str):
        return strings.get(node, node)
    if isinstance(node, ast.ArrayLiteral):
        return ast.ArrayLiteral(values[node.values.index]) if isinstance(node.values, _Slot) else node
    if isinstance(node, tuple):
        filled = tuple(_fill(x, values, strings, holders) for x in node)
        return node if all(a is b for a, b in zip(filled, node, strict=True)) else filled
    fields = getattr(node, "__dataclass_fields__", None)
    if fields is not None:
        changes = {}
        for name in fields:
            old = getattr(node, name)
            new = _fill(old, values, strings, holders)
            if new is not old:
                changes[name] = new
        return dataclasses.replace(node, **changes) if changes else node
    return node


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = resources.files(__package__).joinpath("grammar.lark").read_text()
    return Lark(grammar, parser="lalr", lexer="basic", transformer=_Build(),
                maybe_placeholders=True)


@functools.lru_cache(maxsize=1)
def _terminal_names() -> dict[str, str]:
    names = dict(_REGEX_NAMES)
    for term in _parser().terminals:
        if term.name in names:
            continue
        if isinstance(term.pattern, PatternStr):
            value = term.pattern.value
            names[term.name] = value.upper() if value.isalpha() else f"'{value}'"
        else:
            names[term.name] = term.name.lower()
    return names


def _describe(expected: Any) -> list[str]:
    names = _terminal_names()
    return sorted({names.get(t, t) for t in expected or ()})


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, col


def parse(text: str) -> ast.Query:
    """Parse TQL text into a :class:`~query_lang.ast.Query`.

    Raises :class:`TQLSyntaxError` (with line, column and a caret) for any bad input.
    """
    if not isinstance(text, str):
        raise TQLSyntaxError(f"query must be a str, not {type(text).__name__}")
    if len(text) > MAX_QUERY_CHARS:
        raise TQLSyntaxError(f"query is longer than {MAX_QUERY_CHARS} characters")
    nul = text.find("\x00")
    if nul >= 0:
        line, col = _line_col(text, nul)
        raise TQLSyntaxError("NUL character in query", text, line, col)
    return _parse_cached(text)


@functools.lru_cache(maxsize=256)
def _parse_cached(text: str) -> ast.Query:
    # The AST is immutable, so repeated query texts share one parse.
    compact, strings = _prescan_strings(text)
    compact, found = _prescan_arrays(compact, pad=False)
    if found or strings:
        offsets = tuple(found)
        try:
            template, template_depth, holders = _parse_template(compact, offsets)
            query = _fill(template, [found[o] for o in offsets], strings, holders)
        except Exception:  # noqa: BLE001 - the exact parse below reports it with true positions
            pass
        else:
            # A lifted string is a leaf either way: the template's depth is the query's.
            if (template_depth if not found else ast.depth(query)) <= MAX_DEPTH:
                return query
    return _parse_exact(text)


#: A string literal at least this long is lifted out of the text before parsing, so queries that differ only
#: in such literals (e.g. full-text searches) share one parsed template.
_LIFTED_STRING_MIN_CHARS = 24
_STRING_SCAN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")+\"")
#: Marks where a lifted string was; a query holding this character keeps every literal in place.
_LIFT_MARK = "\x01"


def _prescan_strings(text: str) -> tuple[str, dict[str, str]]:
    """``text`` with each long string literal replaced by a short marker literal, and the values by marker."""
    if _LIFT_MARK in text or "'" not in text:
        return text, {}
    lifted: dict[str, str] = {}
    pieces: list[str] = []
    last = 0
    for m in _STRING_SCAN.finditer(text):
        literal = m.group()
        if literal[0] != "'" or len(literal) < _LIFTED_STRING_MIN_CHARS:
            continue
        marker = f"{_LIFT_MARK}{len(lifted)}{_LIFT_MARK}"
        lifted[marker] = literal[1:-1].replace("''", "'")
        pieces += [text[last : m.start()], f"'{marker}'"]
        last = m.end()
    if not lifted:
        return text, {}
    pieces.append(text[last:])
    return "".join(pieces), lifted


def _parse_exact(text: str) -> ast.Query:
    scanned, _FAST_ARRAYS.values = _prescan_arrays(text)
    try:
        query = _parser().parse(scanned)
    except _LiteralError as e:
        raise TQLSyntaxError(str(e), text, e.token.line, e.token.column) from None
    except UnexpectedInput as e:
        raise _syntax_error(text, e) from None
    except (LarkError, RecursionError, ValueError, TypeError, IndexError) as e:
        if isinstance(e, TQLError):
            raise
        raise TQLSyntaxError(f"could not parse query: {e}") from None
    finally:
        _FAST_ARRAYS.values = None
    if ast.depth(query) > MAX_DEPTH:
        raise TQLSyntaxError(f"query is nested more than {MAX_DEPTH} levels deep")
    return query


def _syntax_error(text: str, e: UnexpectedInput) -> TQLSyntaxError:
    if isinstance(e, UnexpectedCharacters):
        line, col = e.line, e.column
        ch = text[e.pos_in_stream] if 0 <= e.pos_in_stream < len(text) else ""
        return TQLSyntaxError(f"unexpected character {ch!r}", text, line, col, _describe(e.allowed))
    if isinstance(e, UnexpectedEOF):
        line, col = _line_col(text, len(text))
        return TQLSyntaxError("unexpected end of query", text, line, col, _describe(e.expected))
    token = getattr(e, "token", None)
    expected = _describe(getattr(e, "expected", None) or getattr(e, "accepts", None))
    if token is None or token.type == "$END" or getattr(token, "line", None) is None:
        line, col = _line_col(text, len(text))
        return TQLSyntaxError("unexpected end of query", text, line, col, expected)
    shown = str(token)
    if len(shown) > 30:
        shown = shown[:27] + "..."
    reason = f"unexpected {shown!r}"
    if token.type == "IDENT":
        keywords = [x for x in expected if x.isalpha() and x.isupper()]
        close = suggest(str(token), keywords)
        if close is not None:
            reason += f" (did you mean {close}?)"
    return TQLSyntaxError(reason, text, token.line, token.column, expected)
