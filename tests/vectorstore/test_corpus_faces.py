"""A VectorStore is the corpus Deep Memory trains on and asks questions about."""

from __future__ import annotations

import numpy as np

from tensordb import VectorStore
from tensordb.deep_memory.corpus import DocumentCorpus, TextCorpus


def test_a_vector_store_is_a_document_and_text_corpus():
    vs = VectorStore("mem://corpus-faces", overwrite=True)
    vs.add(text=["a", "b"], embedding=np.eye(2, dtype=np.float32), id=["x", "y"])
    assert isinstance(vs, DocumentCorpus) and isinstance(vs, TextCorpus)
    assert vs.ids_and_texts() == (["x", "y"], ["a", "b"])
    ids, embeddings = vs.ids_and_embeddings()
    assert ids == ["x", "y"] and np.array_equal(embeddings, np.eye(2, dtype=np.float32))
