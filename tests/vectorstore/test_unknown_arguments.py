"""VectorStore refuses keyword arguments it does not know, naming them; Deep Lake v3's extras are accepted."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from tensordb import HashingEmbedding, VectorStore
from tensordb.vectorstore.vector_store import IGNORED_INIT_ARGUMENTS, IGNORED_SEARCH_ARGUMENTS


def _path() -> str:
    return f"mem://{uuid.uuid4().hex}"


def _store() -> VectorStore:
    vs = VectorStore(_path(), embedding_function=HashingEmbedding(16), overwrite=True)
    vs.add(text=["alpha", "beta"], id=["a", "b"])
    return vs


def test_a_misspelt_init_argument_is_a_type_error_with_a_suggestion() -> None:
    with pytest.raises(TypeError, match=r"read_onyl.*did you mean 'read_only'"):
        VectorStore(_path(), read_onyl=True)


def test_a_misspelt_search_argument_is_a_type_error_with_a_suggestion() -> None:
    vs = _store()
    with pytest.raises(TypeError, match=r"deep_memroy.*did you mean 'deep_memory'"):
        vs.search(embedding_data="alpha", deep_memroy=True)


def test_every_unknown_name_is_listed() -> None:
    with pytest.raises(TypeError) as info:
        _store().search(embedding_data="alpha", zzz=1, qqq=2)
    assert "qqq" in str(info.value) and "zzz" in str(info.value)


def test_deep_lake_v3_arguments_are_accepted_and_ignored() -> None:
    extras = {name: None for name in IGNORED_INIT_ARGUMENTS}
    vs = VectorStore(_path(), embedding_function=HashingEmbedding(16), overwrite=True, **extras)
    vs.add(text=["alpha", "beta"], id=["a", "b"])
    plain = vs.search(embedding_data="alpha", k=2)
    compat = vs.search(embedding_data="alpha", k=2, **{name: "python" for name in IGNORED_SEARCH_ARGUMENTS})
    assert compat["id"] == plain["id"]
    np.testing.assert_array_equal(compat["score"], plain["score"])


def test_the_ignored_arguments_are_documented() -> None:
    for name in IGNORED_INIT_ARGUMENTS:
        assert name in VectorStore.__doc__
    for name in IGNORED_SEARCH_ARGUMENTS:
        assert name in VectorStore.search.__doc__
