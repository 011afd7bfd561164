"""Helpers shared by the framework integrations."""

from __future__ import annotations

import uuid
from typing import Any

from query_lang import ast

from ..vectorstore.vector_store import VectorStore


def missing_dependency(framework: str, extra: str, error: ImportError) -> ImportError:
    """The ImportError raised when an integration's framework is not installed."""
    return ImportError(
        f"tensordb's {framework} integration needs {framework}, which is not installed ({error}). "
        f'Install it with: pip install "tensordb[{extra}]"'
    )


def open_store(
    path: str | VectorStore | None,
    embedding_function: Any = None,
    overwrite: bool = False,
    read_only: bool = False,
    **kwargs: Any,
) -> VectorStore:
    """``path`` opened as a VectorStore, ``path`` itself when it already is one, a fresh ``mem://`` store for None."""
    if path is None:
        path = f"mem://tensordb-{uuid.uuid4().hex}"
    if isinstance(path, VectorStore):
        if overwrite:
            raise ValueError("overwrite=True needs a path, not an open VectorStore")
        if embedding_function is not None and path.embedding_function is None:
            path.embedding_function = embedding_function
        return path
    if not isinstance(path, str):
        raise TypeError(f"path must be a str (a directory or mem://name) or a VectorStore, got {type(path).__name__}")
    return VectorStore(path, embedding_function=embedding_function, overwrite=overwrite, read_only=read_only,
                       **kwargs)


def field(key: str) -> ast.Expr:
    """``metadata['key']``."""
    return ast.Index(ast.Column("metadata"), (key,))


def all_of(terms: list[ast.Expr]) -> ast.Expr | None:
    """The AND of ``terms`` (``None`` when there are none)."""
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else ast.BoolOp("AND", tuple(terms))

