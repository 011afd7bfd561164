"""The VectorStore layer: document chunks over a dataset, searched with TQL and Deep Memory."""

from .embeddings import HashingEmbedding
from .vector_store import VectorStore

__all__ = ["HashingEmbedding", "VectorStore"]
