from __future__ import annotations

import numpy as np
import pytest

from query_lang import MemorySource


@pytest.fixture
def src() -> MemorySource:
    rng = np.random.default_rng(7)
    n = 50
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    emb[3] = 0.0  # a zero vector: its cosine similarity is NaN
    return MemorySource(
        {
            "id": [f"id{i}" for i in range(n)],
            "text": [f"doc {i} about {'cats' if i % 3 else 'dogs'}" for i in range(n)],
            "metadata": [{"group": i % 4, "tags": ["a", "b"][: i % 3]} for i in range(n)],
            "embedding": emb,
            "labels": np.arange(n) % 5,
            "image": [np.ones((i % 3 + 1, 2)) for i in range(n)],
        },
        {"id": "id", "text": "text", "metadata": "json", "embedding": "embedding",
         "labels": "class_label", "image": "generic"},
        batch_size=7,
    )
