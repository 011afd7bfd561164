"""The VectorStore layer: document chunks over a dataset, searched with TQL and Deep Memory."""

from .embeddings import HashingEmbedding
from .ingest import ingest_jsonl
from .sentence_embedding import SentenceTransformerEmbedding
from .vector_store import VectorStore

__all__ = [
    "HashingEmbedding",
    "SentenceTransformerEmbedding",
    "VectorStore",
    "ingest_jsonl",
]
