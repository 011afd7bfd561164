"""vs.deep_memory.evaluate(..., plot=path): recall@1..100 with and without Deep Memory, on a log k axis."""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tensordb
from tensordb.deep_memory import plotting
from tensordb.deep_memory.api import DeepMemory
from tensordb.deep_memory.metrics import recall_at_k, recall_curve
from tensordb.errors import TensorDBError

DIM = 16
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class CountingCorpus:
    """Arrays beside a dataset; counts how often its documents were read (to prove no work was done)."""

    dataset: tensordb.Dataset
    ids: list[str]
    embeddings: np.ndarray
    queries: dict[str, np.ndarray]
    reads: list[str] = field(default_factory=list)

    def ids_and_embeddings(self) -> tuple[list[str], np.ndarray]:
        self.reads.append("ids_and_embeddings")
        return list(self.ids), self.embeddings

    def embed_queries(self, texts: list[str], embedding_function: Any = None) -> np.ndarray:
        return np.stack([self.queries[t] for t in texts])


def _corpus(n_docs: int = 150) -> CountingCorpus:
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((n_docs, DIM)).astype(np.float32)
    queries = {f"q{i}": docs[i] + 0.8 * rng.standard_normal(DIM).astype(np.float32) for i in range(30)}
    ds = tensordb.empty(f"mem://{uuid.uuid4().hex}", overwrite=True)
    return CountingCorpus(ds, [f"d{i}" for i in range(n_docs)], docs, queries)


@pytest.fixture(scope="module")
def trained() -> tuple[DeepMemory, CountingCorpus, list[str], list[list[tuple[str, float]]]]:
    corpus = _corpus()
    dm = DeepMemory(corpus)
    queries = [f"q{i}" for i in range(30)]
    relevance = [[(f"d{i}", 1.0)] for i in range(30)]
    assert dm.wait(dm.train(queries, relevance, max_seconds=3), timeout=60)["status"] == "completed"
    return dm, corpus, queries, relevance


def test_evaluate_writes_a_png_of_both_curves_for_every_k_1_to_100(trained, tmp_path, monkeypatch) -> None:
    dm, _, queries, relevance = trained
    drawn: dict[str, dict[int, float]] = {}
    real = plotting.plot_recall_at_k

    def spy(curves, path, **kw):
        drawn.update(curves)
        return real(curves, path, **kw)

    monkeypatch.setattr("tensordb.deep_memory.api.plot_recall_at_k", spy)
    path = tmp_path / "recall.png"
    out = dm.evaluate(queries, relevance, top_k=(1, 5, 100), show=False, plot=str(path))
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert set(drawn) == {"without Deep Memory", "with Deep Memory"}
    for label, metrics_label in (("without Deep Memory", "without model"), ("with Deep Memory", "with model")):
        curve = drawn[label]
        assert sorted(curve) == list(range(1, 101))
        assert all(curve[k] <= curve[k + 1] for k in range(1, 100))  # recall only grows with k
        for k in (1, 5, 10, 100):
            assert curve[k] == out[metrics_label][f"recall@{k}"]
    assert drawn["without Deep Memory"][1] < 1.0  # the noisy queries leave room on the curve


def test_evaluate_prints_where_the_plot_went(trained, tmp_path, capsys) -> None:
    dm, _, queries, relevance = trained
    dm.evaluate(queries, relevance, top_k=(1,), plot=tmp_path / "r.png")
    assert f"plot written to {tmp_path / 'r.png'}" in capsys.readouterr().out


def test_a_plot_in_a_missing_folder_is_refused_before_any_work(trained, tmp_path) -> None:
    dm, corpus, queries, relevance = trained
    attachments, reads = corpus.dataset.list_attachments(""), len(corpus.reads)
    with pytest.raises(plotting.PlotPathError, match="does not exist"):
        dm.evaluate(queries, relevance, show=False, plot=str(tmp_path / "no" / "such" / "r.png"))
    assert len(corpus.reads) == reads  # nothing was ranked
    assert corpus.dataset.list_attachments("") == attachments
    assert not (tmp_path / "no").exists()


def test_a_plot_with_an_unknown_extension_is_refused(trained, tmp_path) -> None:
    dm, _, queries, relevance = trained
    with pytest.raises(plotting.PlotPathError, match=r"\.png"):
        dm.evaluate(queries, relevance, show=False, plot=str(tmp_path / "r.unknownformat"))


def test_missing_matplotlib_names_the_extra(trained, tmp_path, monkeypatch) -> None:
    dm, corpus, queries, relevance = trained
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    reads = len(corpus.reads)
    with pytest.raises(plotting.MissingExtraError, match=r'pip install "tensordb\[models\]"') as e:
        dm.evaluate(queries, relevance, show=False, plot=str(tmp_path / "r.png"))
    assert isinstance(e.value, TensorDBError) and isinstance(e.value, ImportError)
    assert len(corpus.reads) == reads and not (tmp_path / "r.png").exists()


def test_plot_recall_at_k_draws_any_curves(tmp_path) -> None:
    path = plotting.plot_recall_at_k({"a": {1: 0.1, 10: 0.5, 100: 0.9}}, tmp_path / "a.svg")
    assert open(path).read().lstrip().startswith("<?xml")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from([f"d{i}" for i in range(12)]), max_size=15),
            st.dictionaries(st.sampled_from([f"d{i}" for i in range(14)]), st.sampled_from([0.0, 0.5, 1.0]),
                            max_size=5),
        ),
        min_size=1, max_size=6,
    ),
    st.integers(1, 20),
)
def test_recall_curve_equals_recall_at_k_at_every_k(cases, max_k) -> None:
    ranked, relevance = [c[0] for c in cases], [c[1] for c in cases]
    curve = recall_curve(ranked, relevance, max_k)
    assert sorted(curve) == list(range(1, max_k + 1))
    for k in range(1, max_k + 1):
        assert curve[k] == recall_at_k(ranked, relevance, k)
