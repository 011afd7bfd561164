"""Deep Memory: a small trained layer that re-ranks retrieval results (see model.py).

Inference (``model``, ``metrics``) is pure numpy; ``training`` imports torch lazily.
"""

from .generate import QueryGenerationError, generate_queries
from .metrics import evaluate_rankings, hit_rate_at_k, mrr_at_k, ndcg_at_k, recall_at_k
from .model import FORMAT_VERSION, DeepMemoryModel

__all__ = [
    "FORMAT_VERSION",
    "DeepMemoryModel",
    "QueryGenerationError",
    "evaluate_rankings",
    "generate_queries",
    "hit_rate_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "recall_at_k",
]
