"""LlamaIndex vector store backed by a tensordb VectorStore, with Deep Memory.

>>> store = TensorDBVectorStore("./my_store")
>>> index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store))
>>> retriever = index.as_retriever(similarity_top_k=5, vector_store_kwargs={"deep_memory": True})

Each node is one row: its text, its id as the row ``id``, and metadata holding the
node's own metadata plus its serialized content (LlamaIndex's ``node_to_metadata_dict``),
so ``VectorStoreIndex.from_vector_store(store)`` rebuilds nodes after a reopen.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

try:
    import llama_index.core  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised by simulating a missing package
    from ._common import missing_dependency

    raise missing_dependency("llama-index-core", "llama-index", e) from e

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode, TextNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from query_lang import ast
from query_lang.printer import expr_to_sql

from ..deep_memory.fusion import RRF_K
from ..errors import SampleError
from ..vectorstore.vector_store import VectorStore
from ._common import all_of, field, open_store
from .mmr import maximal_marginal_relevance

__all__ = [
    "SUPPORTED_MODES",
    "LlamaIndexEmbeddingFunction",
    "TensorDBVectorStore",
    "metadata_filters_to_expr",
    "metadata_filters_to_tql",
    "relevance_from_qa_dataset",
]

#: LlamaIndex query modes this store serves; TEXT_SEARCH and SPARSE are both BM25 of the query text.
_TEXT_MODES = (VectorStoreQueryMode.TEXT_SEARCH, VectorStoreQueryMode.SPARSE)
SUPPORTED_MODES = (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.HYBRID, *_TEXT_MODES, VectorStoreQueryMode.MMR)
#: MMR defaults: candidates fetched per result, and the weight of relevance against diversity (LlamaIndex's).
_MMR_PREFETCH_FACTOR = 4
_MMR_THRESHOLD = 0.5

_COMPARE = {
    FilterOperator.EQ: "==",
    FilterOperator.GT: ">",
    FilterOperator.GTE: ">=",
    FilterOperator.LT: "<",
    FilterOperator.LTE: "<=",
}


class LlamaIndexEmbeddingFunction:
    """A LlamaIndex ``BaseEmbedding`` seen as a tensordb embedding function (``embed_documents``/``embed_query``)."""

    def __init__(self, embed_model: BaseEmbedding):
        self.embed_model = embed_model

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return self.embed_model.get_text_embedding_batch(list(texts))

    def embed_query(self, text: str) -> list[float]:
        return self.embed_model.get_query_embedding(text)


def _query_mode(mode: Any) -> VectorStoreQueryMode:
    """``mode`` as a supported :class:`VectorStoreQueryMode`, else NotImplementedError naming the supported ones."""
    try:
        mode = VectorStoreQueryMode(mode)
    except ValueError:
        pass
    if mode not in SUPPORTED_MODES:
        supported = ", ".join(m.value for m in SUPPORTED_MODES)
        raise NotImplementedError(f"TensorDBVectorStore does not support query mode {mode!r}; it supports {supported}")
    return mode


# -- Deep Memory training data ------------------------------------------------------------------
def relevance_from_qa_dataset(qa_dataset: Any) -> tuple[list[str], list[list[tuple[str, float]]]]:
    """A LlamaIndex ``EmbeddingQAFinetuneDataset`` as ``(queries, relevance)`` for ``vs.deep_memory.train``.

    ``qa_dataset`` is the dataset object (``queries: {qid: text}``, ``relevant_docs:
    {qid: [node_id, ...]}``, as ``generate_qa_embedding_pairs`` makes), the dict of its
    ``model_dump()``, or the path of the JSON file its ``save_json`` writes. Each relevant
    node id gets score 1.0; they match the store's ids when the nodes were added through
    :class:`TensorDBVectorStore` (a node's id is its row ``id``). Queries keep the dataset's order.
    """
    data = _qa_fields(qa_dataset)
    queries, relevance = [], []
    for qid, text in data["queries"].items():
        docs = data["relevant_docs"].get(qid)
        if not isinstance(text, str) or not docs or isinstance(docs, str) or not all(isinstance(d, str) for d in docs):
            raise SampleError(f"QA dataset query {qid!r}: expected a text with a list of relevant node ids, "
                              f"got {text!r} with {docs!r}")
        queries.append(text)
        relevance.append([(doc_id, 1.0) for doc_id in dict.fromkeys(docs)])
    if not queries:
        raise SampleError("the QA dataset has no queries")
    return queries, relevance


def _qa_fields(qa_dataset: Any) -> dict[str, Any]:
    """``queries`` and ``relevant_docs`` of a QA dataset given as an object, a dict or a JSON file path."""
    if isinstance(qa_dataset, (str, os.PathLike)):
        with open(qa_dataset, encoding="utf-8") as f:
            qa_dataset = json.load(f)
    fields = {}
    for name in ("queries", "relevant_docs"):
        value = qa_dataset.get(name) if isinstance(qa_dataset, dict) else getattr(qa_dataset, name, None)
        if not isinstance(value, dict):
            raise SampleError(f"a QA dataset needs {name!r} as a dict (like LlamaIndex's EmbeddingQAFinetuneDataset), "
                              f"got {type(value).__name__} in {type(qa_dataset).__name__}")
        fields[name] = value
    return fields


# -- metadata filters ---------------------------------------------------------------------------
class _NeedsPython(Exception):
    """A filter TQL cannot express exactly; it is evaluated in Python instead."""


def _literal(value: Any) -> ast.Literal:
    if value is not None and not isinstance(value, (str, int, float, bool)):
        raise _NeedsPython
    return ast.Literal(value)


def _filter_expr(f: MetadataFilter) -> ast.Expr:
    target, op, value = field(f.key), f.operator, f.value
    if op in _COMPARE:
        return ast.Binary(_COMPARE[op], target, _literal(value))
    if op == FilterOperator.NE:  # LlamaIndex: a missing field is "not equal"
        return ast.BoolOp("OR", (ast.Binary("!=", target, _literal(value)), ast.IsNull(target)))
    if op in (FilterOperator.IN, FilterOperator.NIN):
        values = value if isinstance(value, list) else [value]
        if not values:
            return ast.Literal(op == FilterOperator.NIN)
        return ast.InList(target, tuple(_literal(v) for v in values), negated=op == FilterOperator.NIN)
    if op in (FilterOperator.CONTAINS, FilterOperator.TEXT_MATCH):
        return ast.Call("contains", (target, _literal(value)))
    if op in (FilterOperator.ANY, FilterOperator.ALL) and isinstance(value, list) and value:
        terms = tuple(ast.Call("contains", (target, _literal(v))) for v in value)
        return terms[0] if len(terms) == 1 else ast.BoolOp("OR" if op == FilterOperator.ANY else "AND", terms)
    raise _NeedsPython  # IS_EMPTY, TEXT_MATCH_INSENSITIVE, empty ANY/ALL, ...


def _filters_expr(filters: MetadataFilters) -> ast.Expr:
    terms = [_filters_expr(f) if isinstance(f, MetadataFilters) else _filter_expr(f) for f in filters.filters]
    if not terms:
        return ast.Literal(True)
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.NOT:  # none of the filters matches
        inner = terms[0] if len(terms) == 1 else ast.BoolOp("OR", tuple(terms))
        return ast.Unary("NOT", inner)
    if len(terms) == 1:
        return terms[0]
    return ast.BoolOp("OR" if condition == FilterCondition.OR else "AND", tuple(terms))


def metadata_filters_to_expr(filters: MetadataFilters) -> ast.Expr | None:
    """``filters`` as a TQL WHERE expression (what ``VectorStore`` filters by), or ``None`` if one operator
    has no exact TQL form."""
    try:
        return _filters_expr(filters)
    except _NeedsPython:
        return None


def metadata_filters_to_tql(filters: MetadataFilters) -> str | None:
    """``filters`` as TQL WHERE text, for display (the store takes :func:`metadata_filters_to_expr`)."""
    expr = metadata_filters_to_expr(filters)
    return None if expr is None else expr_to_sql(expr)


def _matches(f: MetadataFilter, metadata: dict[str, Any]) -> bool:
    actual, op, value = metadata.get(f.key), f.operator, f.value
    if op == FilterOperator.IS_EMPTY:
        return actual is None or actual == "" or actual == []
    if actual is None:
        return op in (FilterOperator.NE, FilterOperator.NIN)
    try:
        if op == FilterOperator.EQ:
            return actual == value
        if op == FilterOperator.NE:
            return actual != value
        if op == FilterOperator.GT:
            return actual > value
        if op == FilterOperator.GTE:
            return actual >= value
        if op == FilterOperator.LT:
            return actual < value
        if op == FilterOperator.LTE:
            return actual <= value
        if op == FilterOperator.IN:
            return actual in value
        if op == FilterOperator.NIN:
            return actual not in value
        if op in (FilterOperator.CONTAINS, FilterOperator.TEXT_MATCH):
            return value in actual
        if op == FilterOperator.TEXT_MATCH_INSENSITIVE:
            return str(value).lower() in str(actual).lower()
        if op == FilterOperator.ANY:
            return any(v in actual for v in value)
        if op == FilterOperator.ALL:
            return all(v in actual for v in value)
    except TypeError:
        return False
    raise ValueError(f"unsupported metadata filter operator {op!r}")


def _python_filter(filters: MetadataFilters) -> Callable[[dict[str, Any]], bool]:
    def check(fs: MetadataFilters, metadata: dict[str, Any]) -> bool:
        results = [check(f, metadata) if isinstance(f, MetadataFilters) else _matches(f, metadata)
                   for f in fs.filters]
        condition = fs.condition or FilterCondition.AND
        if condition == FilterCondition.OR:
            return any(results)
        if condition == FilterCondition.NOT:
            return not any(results)
        return all(results)

    return lambda metadata: check(filters, metadata)


# -- the vector store ----------------------------------------------------------------------------
class TensorDBVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store on a tensordb VectorStore.

    ``path`` is a directory, ``mem://name``, an open VectorStore (or pass ``vector_store=``),
    or None for a fresh in-memory store.

    ``embed_model`` (optional) lets ``store.deep_memory.train(...)`` embed training
    questions without an explicit ``embedding_function``; use the index's embed model.
    ``query(..., deep_memory=True)`` (``as_retriever(vector_store_kwargs={"deep_memory": True})``)
    ranks with the latest trained Deep Memory model.

    ``text_index`` (a language such as ``"english"``, or the bm25 index's parameters) keeps a
    BM25 index of the nodes' text, for the ``HYBRID``, ``TEXT_SEARCH`` and ``SPARSE`` query modes.
    """

    stores_text: bool = True
    flat_metadata: bool = False
    path: str | None = None
    distance_metric: str = "cos"

    _vs: VectorStore = PrivateAttr()

    def __init__(
        self,
        path: str | VectorStore | None = None,
        *,
        vector_store: VectorStore | None = None,
        overwrite: bool = False,
        read_only: bool = False,
        embed_model: BaseEmbedding | None = None,
        distance_metric: str = "cos",
        text_index: str | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        source = vector_store if vector_store is not None else path
        embedding_function = LlamaIndexEmbeddingFunction(embed_model) if embed_model is not None else None
        options = {} if text_index is None else {"text_index": text_index}
        vs = open_store(source, embedding_function, overwrite=overwrite, read_only=read_only, **options)
        super().__init__(path=str(vs.dataset.path), distance_metric=distance_metric, **kwargs)
        self._vs = vs

    @classmethod
    def class_name(cls) -> str:
        return "TensorDBVectorStore"

    @property
    def client(self) -> VectorStore:
        """The underlying tensordb VectorStore."""
        return self._vs

    @property
    def deep_memory(self) -> Any:
        """The underlying store's Deep Memory (``train``, ``wait``, ``status``, ``evaluate``)."""
        return self._vs.deep_memory

    def close(self) -> None:
        """Close the underlying dataset (releases its write lock)."""
        self._vs.close()

    # -- writes --------------------------------------------------------------------------------
    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Add nodes (they must carry embeddings); nodes whose id is already stored are replaced.

        One atomic step: if any node fails (NaN or wrong-dimension embedding, metadata that is
        not JSON, an id given twice), nothing is written and the stored nodes stay as they were.
        """
        if not nodes:
            return []
        ids, texts, metadata, embeddings = [], [], [], []
        for node in nodes:
            embedding = node.get_embedding()  # raises when the node has none
            ids.append(node.node_id)
            texts.append(node.get_content(metadata_mode=MetadataMode.NONE))
            metadata.append(node_to_metadata_dict(node, remove_text=True, flat_metadata=self.flat_metadata))
            embeddings.append(embedding)
        self._vs.upsert(text=texts, metadata=metadata, embedding=embeddings, id=ids)
        return ids

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the document ``ref_doc_id``."""
        if len(self._vs):
            self._vs.delete(filter={"ref_doc_id": ref_doc_id})

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes with these ids and/or matching these filters (both must hold); unknown ids are skipped."""
        if node_ids is None and filters is None:
            raise ValueError("delete_nodes: give node_ids and/or filters (clear() deletes everything)")
        ids = list(node_ids) if node_ids else None
        where = self._filter(None, filters)
        if len(self._vs) and (ids is not None or where is not None):
            self._vs.delete(ids=ids, filter=where, missing="skip")

    def clear(self) -> None:
        """Delete every node."""
        self._vs.delete(delete_all=True)

    # -- reads ---------------------------------------------------------------------------------
    def get_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None) -> list[BaseNode]:
        """Stored nodes with these ids and/or matching these filters (all nodes when given neither).

        With ``node_ids``: in the order asked, each id once, unknown ids skipped; otherwise in row order.
        """
        if not len(self._vs):
            return []
        found = self._vs.get(ids=list(node_ids) if node_ids else None, filter=self._filter(None, filters))
        return [self._to_node(t, m, i) for t, m, i in zip(found["text"], found["metadata"], found["id"], strict=True)]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Top ``similarity_top_k`` nodes for the query, in its ``mode``.

        ``DEFAULT`` ranks by ``query.query_embedding``; ``HYBRID`` fuses that ranking with BM25 of
        ``query.query_str`` (convex fusion with ``query.alpha``: 1 vector only, 0 text only; without
        alpha the store's default, or with ``deep_memory`` the fusion it learned; ``fusion="rrf"``
        as a keyword; ``sparse_top_k`` text candidates; ``hybrid_top_k`` results when given);
        ``TEXT_SEARCH`` and ``SPARSE`` rank by BM25 alone (``sparse_top_k`` results, else
        ``similarity_top_k``); ``MMR`` picks by maximal marginal relevance among
        ``mmr_prefetch_factor`` (default 4) × ``similarity_top_k`` vector candidates, with
        ``mmr_threshold`` (query or keyword, default 0.5) as the relevance weight.
        Text and hybrid need a bm25 index on the store's text (``TensorDBVectorStore(..., text_index="english")``).

        Every mode honours ``filters``, ``node_ids`` and ``doc_ids``. Keyword arguments:
        ``deep_memory`` (rank with the trained Deep Memory model; in hybrid mode it also fuses as
        training chose unless ``alpha`` is given), ``distance_metric`` (``cos``, ``dot``, ``l2``,
        ``l1``, ``max``), ``fusion`` and ``rrf_k`` (hybrid), ``mmr_threshold``, ``mmr_prefetch_factor``.
        """
        mode = _query_mode(query.mode)
        if mode in _TEXT_MODES or mode == VectorStoreQueryMode.HYBRID:
            if not isinstance(query.query_str, str) or not query.query_str.strip():
                raise SampleError(f"TensorDBVectorStore.query: mode {mode.value!r} ranks by the query text, "
                                  f"so query.query_str must be a non-empty string, got {query.query_str!r}")
        if mode not in _TEXT_MODES and query.query_embedding is None:
            raise SampleError(f"TensorDBVectorStore.query: mode {mode.value!r} needs query.query_embedding")
        k = query.similarity_top_k
        if mode in _TEXT_MODES:
            k = query.sparse_top_k or k
        elif mode == VectorStoreQueryMode.HYBRID:
            k = query.hybrid_top_k or k
        if not len(self._vs) or k < 1:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        search: dict[str, Any] = {
            "filter": self._filter(query.doc_ids, query.filters),
            # Empty id lists mean "no restriction": VectorStoreIndex.as_retriever passes node_ids=[] to stores
            # that keep the text themselves.
            "ids": list(query.node_ids) if query.node_ids else None,
            "return_tensors": ["text", "metadata", "id"],
        }
        if mode in _TEXT_MODES:
            # deep_memory goes along so that the store refuses it: BM25 alone has no vector side to transform.
            result = self._vs.search(embedding_data=query.query_str, k=k, mode="text",
                                     deep_memory=bool(kwargs.get("deep_memory", False)), **search)
            return self._result(result)
        search.update(embedding=query.query_embedding, distance_metric=kwargs.get("distance_metric",
                      self.distance_metric), deep_memory=bool(kwargs.get("deep_memory", False)))
        if mode == VectorStoreQueryMode.HYBRID:
            fusion = kwargs.get("fusion")
            if query.alpha is not None and fusion is None:
                fusion = "convex"  # LlamaIndex's alpha weighs dense against sparse, as convex fusion does
            result = self._vs.search(embedding_data=query.query_str, k=k, mode="hybrid", fusion=fusion,
                                     alpha=query.alpha, rrf_k=kwargs.get("rrf_k", RRF_K),
                                     sparse_top_k=query.sparse_top_k, **search)
            return self._result(result)
        if mode == VectorStoreQueryMode.MMR:
            return self._mmr(query, k, kwargs, search)
        return self._result(self._vs.search(k=k, **search))

    def _mmr(self, query: VectorStoreQuery, k: int, kwargs: dict[str, Any], search: dict[str, Any]
             ) -> VectorStoreQueryResult:
        """``k`` of the ``mmr_prefetch_factor × k`` closest nodes, picked by maximal marginal relevance."""
        factor = kwargs.get("mmr_prefetch_factor", _MMR_PREFETCH_FACTOR)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 1:
            raise SampleError(f"TensorDBVectorStore.query: mmr_prefetch_factor must be a number >= 1, got {factor!r}")
        threshold = query.mmr_threshold if query.mmr_threshold is not None else kwargs.get("mmr_threshold")
        threshold = _MMR_THRESHOLD if threshold is None else threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise SampleError(f"TensorDBVectorStore.query: mmr_threshold must be a number in [0, 1], got {threshold!r}")
        search["return_tensors"] = [*search["return_tensors"], "embedding"]
        found = self._vs.search(k=max(k, math.ceil(factor * k)), **search)
        picked = maximal_marginal_relevance(query.query_embedding, found["embedding"], k=k, lambda_mult=threshold)
        # Each pick keeps its search score (its similarity to the query), not the MMR trade-off score.
        return self._result({name: [found[name][i] for i in picked] for name in ("text", "metadata", "id", "score")})

    def _result(self, found: dict[str, list]) -> VectorStoreQueryResult:
        nodes = [self._to_node(t, m, i) for t, m, i in zip(found["text"], found["metadata"], found["id"], strict=True)]
        return VectorStoreQueryResult(nodes=nodes, similarities=list(found["score"]), ids=list(found["id"]))

    # -- helpers -------------------------------------------------------------------------------
    def _filter(
        self,
        doc_ids: Sequence[str] | None,
        filters: MetadataFilters | None,
    ) -> ast.Expr | Callable[[dict[str, Any]], bool] | None:
        """A TQL WHERE expression for document ids and filters, or a Python row predicate if TQL cannot express them."""
        doc_ids = list(doc_ids) if doc_ids else None  # empty: no restriction, as for node ids
        terms: list[ast.Expr] = []
        if doc_ids is not None:
            terms.append(ast.InList(field("ref_doc_id"), tuple(ast.Literal(str(d)) for d in doc_ids)))
        if filters is not None and filters.filters:
            try:
                terms.append(_filters_expr(filters))
            except _NeedsPython:
                return self._python_predicate(doc_ids, filters)
        return all_of(terms)

    @staticmethod
    def _python_predicate(
        doc_ids: Sequence[str] | None,
        filters: MetadataFilters,
    ) -> Callable[[dict[str, Any]], bool]:
        docs = None if doc_ids is None else set(doc_ids)
        matches = _python_filter(filters)

        def predicate(row: dict[str, Any]) -> bool:
            meta = row["metadata"] or {}
            return (docs is None or meta.get("ref_doc_id") in docs) and matches(meta)

        return predicate

    @staticmethod
    def _to_node(text: str | None, metadata: dict[str, Any] | None, node_id: str) -> BaseNode:
        metadata = metadata or {}
        try:
            node = metadata_dict_to_node(metadata, text=text)
        except (ValueError, KeyError, TypeError):  # a row not written through LlamaIndex
            return TextNode(text=text or "", id_=node_id, metadata=metadata)
        node.id_ = node_id
        return node

