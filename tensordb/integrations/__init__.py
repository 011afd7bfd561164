"""Framework integrations: LlamaIndex and LangChain vector stores backed by tensordb.

Both are imported lazily, so ``import tensordb.integrations`` never needs either
framework. ``from tensordb.integrations import TensorDBVectorStore`` (LlamaIndex)
needs ``pip install "tensordb[llama-index]"``; ``from tensordb.integrations import
TensorDB`` (LangChain) needs ``pip install "tensordb[langchain]"``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .langchain import TensorDB
    from .llama_index import TensorDBVectorStore

__all__ = ["TensorDB", "TensorDBVectorStore"]

_LAZY = {"TensorDBVectorStore": "llama_index", "TensorDB": "langchain"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

