"""LlamaIndex embedding models the integration tests share (offline, no model hub)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from llama_index.core import Settings
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.embeddings import BaseEmbedding

from tensordb.vectorstore import HashingEmbedding


class HashEmbedding(BaseEmbedding):
    """A LlamaIndex embedding model around tensordb's offline HashingEmbedding."""

    _inner: HashingEmbedding = PrivateAttr(default_factory=HashingEmbedding)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._inner.embed_query(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._inner.embed_query(text)

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._inner.embed_documents(texts)


@contextmanager
def global_embed_model(model: BaseEmbedding) -> Iterator[BaseEmbedding]:
    """LlamaIndex's global Settings with ``model`` and no LLM (retrieval only), restored afterwards."""
    saved = Settings._llm, Settings._embed_model
    Settings.llm = None
    Settings.embed_model = model
    try:
        yield model
    finally:
        Settings._llm, Settings._embed_model = saved
