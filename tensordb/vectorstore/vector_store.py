"""VectorStore: document chunks with text, metadata, embedding and id, searchable with Deep Memory.

The API follows Deep Lake v3's ``VectorStore`` so its tutorials port over by
changing the import. Everything is a thin layer over a :class:`Dataset` and TQL.
"""

from __future__ import annotations

import dataclasses
import numbers
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from query_lang import ast

from ..core import Dataset, Table, dataset, empty, load
from ..core.arguments import refuse_unknown_keywords
from ..core.engines import check_engine
from ..deep_memory.api import DeepMemory
from ..deep_memory.fusion import RRF_K, Ranking
from ..errors import IndexNotFoundError, SampleError, TensorDBError
from . import filters
from .embeddings import embed_documents, embed_queries
from .hybrid import CANDIDATES, HybridRequest, check_text_index, fused_rows, has_text_index, ranking, text_query
from .index_params import IndexPolicy, TextIndexPolicy

#: The vector store's tensors, in order: name → ``create_tensor`` arguments (the one schema definition).
SCHEMA: dict[str, dict[str, str]] = {
    "text": {"htype": "text"},
    "metadata": {"htype": "json"},
    "embedding": {"htype": "embedding", "dtype": "float32"},
    "id": {"htype": "id"},
}
TENSORS = tuple(SCHEMA)
DEFAULT_RETURN = ("text", "metadata", "id")
#: the tensors upsert rewrites in place for an id already stored (the id stays)
_REPLACED = ("text", "metadata", "embedding")
#: NumPy dtype kinds an embedding may arrive in: bool, ints, floats
_NUMERIC = "biuf"
#: distance_metric → (TQL function, is it a similarity (higher is closer)?, does it take a difference?)
METRICS: dict[str, tuple[str, bool, bool]] = {
    "cos": ("cosine_similarity", True, False),
    "dot": ("dot", True, False),
    "l2": ("l2_norm", False, True),
    "l1": ("l1_norm", False, True),
    "max": ("linf_norm", False, True),
}
#: Deep Lake v3 ``VectorStore(...)`` arguments accepted, and ignored, so its tutorials run unchanged:
#: they choose credentials, a compute backend, parallelism or logging, which an embedded store has no use for.
IGNORED_INIT_ARGUMENTS = (
    "token", "org_id", "exec_option", "runtime", "num_workers", "ingestion_batch_size", "verbose", "logger",
)
#: Deep Lake v3 ``search(...)`` arguments accepted, and ignored (the search always runs here, in process).
IGNORED_SEARCH_ARGUMENTS = ("exec_option", "token")


class VectorStore:
    """A store of document chunks at ``path``: a directory, ``s3://bucket/prefix`` or ``mem://name``.

    ``creds`` are the object-storage credentials of ``s3://`` paths (see ``tensordb.empty``);
    without them the AWS environment variables and profile files are used.

    ``embedding_function`` embeds text for ``add`` and ``search``: a callable from a
    list of strings to vectors, or an object with ``embed_documents``/``embed_query``.
    Without one, ``add`` and ``search`` need explicit embeddings.

    For Deep Lake v3 compatibility these keyword arguments are accepted and ignored:
    ``token``, ``org_id``, ``exec_option``, ``runtime``, ``num_workers``,
    ``ingestion_batch_size``, ``verbose``, ``logger``. Any other unknown keyword
    argument is a :class:`TypeError` naming it.
    """

    def __init__(
        self,
        path: str,
        embedding_function: Any = None,
        read_only: bool = False,
        overwrite: bool = False,
        index_params: Mapping[str, Any] | None = None,
        text_index: str | Mapping[str, Any] | None = None,
        creds: Mapping[str, str] | None = None,
        **deeplake_v3_arguments: Any,
    ):
        refuse_unknown_keywords(VectorStore.__init__, deeplake_v3_arguments, IGNORED_INIT_ARGUMENTS)
        self.index_policy = IndexPolicy.parse(index_params)
        self.text_index_policy = TextIndexPolicy.parse(text_index)
        self.embedding_function = embedding_function
        if overwrite:
            self.dataset: Dataset = empty(path, overwrite=True, creds=creds)
        elif read_only:
            self.dataset = load(path, read_only=True, creds=creds)
        else:
            self.dataset = dataset(path, creds=creds)
        if not read_only:
            self._ensure_tensors()
            self._maintain_index()
        self._id_rows: tuple[tuple[str, ...], dict[str, int]] | None = None
        self._deep_memory: DeepMemory | None = None

    def _ensure_tensors(self) -> None:
        ds = self.dataset
        existing = set(ds.tensors)
        if existing and not set(TENSORS) <= existing:
            raise TensorDBError(f"{ds.path} is not a vector store: it lacks tensors {sorted(set(TENSORS) - existing)}")
        if not existing:
            with ds:
                create_tensors(ds, TENSORS)

    # -- properties ------------------------------------------------------------------------------
    @property
    def deep_memory(self) -> DeepMemory:
        """Train, watch and evaluate Deep Memory models of this store."""
        if self._deep_memory is None:
            self._deep_memory = DeepMemory(self)
        return self._deep_memory

    def __len__(self) -> int:
        return len(self.dataset)

    def summary(self) -> str:
        """Print and return the dataset summary."""
        return self.dataset.summary()

    def close(self) -> None:
        self.dataset.close()

    # -- embeddings ------------------------------------------------------------------------------
    def _function(self, override: Any) -> Any:
        fn = override or self.embedding_function
        if fn is None:
            raise TensorDBError(
                "no embedding_function: pass one to VectorStore(...) or to this call, or give embeddings"
            )
        return fn

    def _dim(self) -> int | None:
        return self.dataset.embedding.meta.dim

    def embed_queries(self, texts: Sequence[str], embedding_function: Any = None) -> np.ndarray:
        """Query texts as a ``(len(texts), dim)`` float32 matrix, with ``embedding_function`` or the store's own."""
        return embed_queries(self._function(embedding_function), list(texts), self._dim())

    def ids_and_embeddings(self) -> tuple[list[str], np.ndarray]:
        """All ids and embeddings, in row order (the corpus Deep Memory trains on)."""
        if len(self.dataset) == 0:
            raise TensorDBError("the vector store is empty: add documents first")
        return self.dataset.id.numpy(aslist=True), self.dataset.embedding.numpy()

    def ids_and_texts(self) -> tuple[list[str], list[str]]:
        """All ids and texts, in row order (what ``deep_memory.generate_queries`` asks questions about)."""
        return self.dataset.id.numpy(aslist=True), self.dataset.text.numpy(aslist=True)

    def lexical_rankings(self, texts: Sequence[str], depth: int) -> list[Ranking] | None:
        """Each text's BM25 ranking (ids, best first, chunks with no query term left out), or None without
        a bm25 index on ``text`` (what Deep Memory fits its hybrid fusion with)."""
        if not has_text_index(self.dataset):
            return None
        snapshot = self.dataset.snapshot()
        blank = Ranking([], np.empty(0))  # a blank question matches nothing
        return [ranking(snapshot.query(text_query(text, None, depth)), drop_zero=True, by_id=True)
                if isinstance(text, str) and text.strip() else blank for text in texts]

    # -- writes ----------------------------------------------------------------------------------
    def add(
        self,
        text: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        embedding_data: Sequence[str] | None = None,
        embedding: Any = None,
        id: Sequence[str] | None = None,
        embedding_function: Any = None,
        return_ids: bool = True,
    ) -> list[str] | None:
        """Add chunks in one atomic step; embeds ``embedding_data`` (or ``text``) unless ``embedding`` is given.

        Ids must be new: an id already stored is a :class:`SampleError` (use :meth:`upsert` to replace).
        """
        columns = self._new_rows("add", text, metadata, embedding_data, embedding, id, embedding_function)
        ids = columns["id"]
        # The id check and the write are one step, so two threads adding one new id cannot both pass it.
        with self.dataset:
            self._check_new_ids("add", ids)
            self.dataset.extend(columns)
        self._maintain_index()
        return ids if return_ids else None

    def upsert(
        self,
        text: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        embedding_data: Sequence[str] | None = None,
        embedding: Any = None,
        id: Sequence[str] | None = None,
        embedding_function: Any = None,
        return_ids: bool = True,
    ) -> list[str] | None:
        """Add chunks, replacing those whose id is already stored; one atomic step.

        Takes the arguments of :meth:`add`, with ``id`` required. A replaced chunk keeps
        its row (text, metadata and embedding are updated in place); new ids are appended
        in the order given. If anything is wrong with any chunk, nothing changes.
        """
        if id is None:
            raise SampleError("upsert: give id, the ids of the chunks to add or replace")
        columns = self._new_rows("upsert", text, metadata, embedding_data, embedding, id, embedding_function)
        ids = columns["id"]
        with self.dataset:  # the id lookup and both writes are one step
            index = self._id_index()
            old = [position for position, doc_id in enumerate(ids) if doc_id in index]
            new = [position for position, doc_id in enumerate(ids) if doc_id not in index]
            if old:
                rows = [index[ids[position]] for position in old]
                self.dataset.update(rows, {name: _take(columns[name], old) for name in _REPLACED})
            if new:
                self.dataset.extend({name: _take(values, new) for name, values in columns.items()})
        self._maintain_index()
        return ids if return_ids else None

    def _new_rows(self, what, text, metadata, embedding_data, embedding, id, embedding_function) -> dict[str, Any]:
        """The columns ``add``/``upsert`` write: checked for lengths and types, embedded when needed."""
        columns = {"text": text, "metadata": metadata, "embedding_data": embedding_data, "embedding": embedding,
                   "id": id}
        for name, values in columns.items():
            if isinstance(values, (str, bytes, Mapping)):
                got = type(values).__name__
                raise SampleError(f"{what}: {name} must be a list with one value per chunk, got {got}")
        lengths = {k: len(v) for k, v in columns.items() if v is not None}
        if not lengths:
            raise SampleError(f"{what}: nothing to add; give text, embedding_data or embedding")
        if len(set(lengths.values())) > 1:
            raise SampleError(f"{what}: arguments have different lengths {lengths}; expected one value per chunk")
        n = next(iter(lengths.values()))
        if embedding is None:
            source = embedding_data if embedding_data is not None else text
            if source is None:
                raise SampleError(f"{what}: give embedding, or embedding_data/text to embed")
            embedding = embed_documents(self._function(embedding_function), source, self._dim())
        ids = [str(uuid.uuid4()) for _ in range(n)] if id is None else list(id)
        self._check_ids(what, ids)
        return {
            "text": list(text) if text is not None else [None] * n,
            "metadata": list(metadata) if metadata is not None else [{} for _ in range(n)],
            "embedding": _embedding_rows(what, embedding),
            "id": ids,
        }

    @staticmethod
    def _check_ids(what: str, ids: list[str]) -> None:
        bad = [i for i in ids if not isinstance(i, str) or not i]
        if bad:
            raise SampleError(f"{what}: ids must be non-empty strings, got {bad[0]!r}")
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            twice = next(i for i in ids if i in seen or seen.add(i))
            raise SampleError(f"{what}: ids contain duplicates, e.g. {twice!r}; give each chunk once")

    def _check_new_ids(self, what: str, ids: list[str]) -> None:
        index = self._id_index()
        taken = [i for i in ids if i in index]
        if taken:
            raise SampleError(f"{what}: ids already in the store: {taken[:5]}; use upsert to replace them")

    def _id_index(self, table: Table | None = None) -> dict[str, int]:
        """id → row of ``table`` (a snapshot; by default the dataset as this thread sees it), cached per revision."""
        id_tensor = (self.dataset if table is None else table).id
        keys = id_tensor.revision
        cached = self._id_rows
        if cached is None or cached[0] != keys:
            ids = id_tensor.numpy(aslist=True)
            cached = (keys, {doc_id: row for row, doc_id in enumerate(ids)})
            self._id_rows = cached
        return cached[1]

    def delete(
        self,
        ids: Sequence[str] | None = None,
        filter: Any = None,
        delete_all: bool = False,
        missing: str = "error",
    ) -> bool:
        """Delete chunks by id, by filter (both: those matching both), or all of them; one atomic step.

        ``missing="skip"`` ignores ids not in the store; by default they are a :class:`SampleError`.
        """
        with self.dataset:
            if delete_all:
                rows = np.arange(len(self.dataset))
            else:
                rows = self._rows_for(ids, filter, "delete", missing)
            if len(rows):
                self.dataset.pop(rows.tolist())
        self._maintain_index()
        return True

    def update_embedding(
        self,
        ids: Sequence[str] | None = None,
        filter: Any = None,
        embedding_function: Any = None,
        embedding_source_tensor: str = "text",
    ) -> None:
        """Recompute the embeddings of some chunks from ``embedding_source_tensor``; one atomic step.

        The rows are found, embedded and written under the store's write lock, so a delete on
        another thread cannot shift them in between (other writers wait while the texts embed).
        """
        with self.dataset:
            rows = self._rows_for(ids, filter, "update_embedding")
            if not len(rows):
                return
            texts = self.dataset[embedding_source_tensor][rows].numpy(aslist=True)
            vectors = embed_documents(self._function(embedding_function), texts, self._dim())
            self.dataset.embedding[rows] = vectors
        self._maintain_index()

    def _maintain_index(self) -> None:
        """Build or renew the vector and text indexes as ``index_params`` and ``text_index`` ask (after a batch)."""
        if not self.dataset.in_batch:
            self.index_policy.maintain(self.dataset)
            self.text_index_policy.maintain(self.dataset)

    # -- reads by id and filter ------------------------------------------------------------------
    def rows_for_ids(self, ids: Sequence[str], missing: str = "error", table: Table | None = None) -> np.ndarray:
        """The rows of ``ids``, in the order given, each id once (first occurrence).

        Uses the id index, so it costs O(len(ids)) after the index is built.
        ``missing="error"`` raises :class:`SampleError` for ids not in the store; ``"skip"`` leaves them out.
        ``table`` (a ``dataset.snapshot()``) pins the rows to one snapshot while other threads write.
        """
        if missing not in ("error", "skip"):
            raise SampleError(f"missing must be 'error' or 'skip', got {missing!r}")
        if isinstance(ids, (str, bytes)):
            raise SampleError(f"ids must be a list of ids, got {type(ids).__name__}")
        index = self._id_index(table)
        wanted = list(dict.fromkeys(ids))
        if missing == "error":
            unknown = [i for i in wanted if i not in index]
            if unknown:
                raise SampleError(f"ids not in the store: {unknown[:5]}" + (" ..." if len(unknown) > 5 else ""))
        return np.array([index[i] for i in wanted if i in index], dtype=np.int64)

    def rows_where(
        self, filter: Mapping[str, Any] | str | ast.Expr | Callable[[dict], bool], table: Table | None = None
    ) -> np.ndarray:
        """The rows matching ``filter`` (a metadata dict, a TQL WHERE string or expression, a callable), ascending.

        ``table`` (a ``dataset.snapshot()``) pins the rows to one snapshot while other threads write.
        """
        table = self.dataset if table is None else table
        if callable(filter):
            rows = [i for i, row in enumerate(_rows_as_dicts(table)) if filter(row)]
            return np.array(rows, dtype=np.int64)
        where = filters.where_expression(filter)
        if where is None:
            return np.arange(len(table), dtype=np.int64)
        view = table.query(ast.Query(select=(ast.Star(),), where=where))
        return np.sort(np.asarray(view.row_positions, dtype=np.int64))

    def get(
        self,
        ids: Sequence[str] | None = None,
        filter: Mapping[str, Any] | str | ast.Expr | Callable[[dict], bool] | None = None,
        return_tensors: Sequence[str] | None = None,
        missing: str = "skip",
    ) -> dict[str, list]:
        """Stored chunks by id and/or filter, as ``{"text": [...], "metadata": [...], "id": [...]}``.

        With ``ids``: in the order of ``ids``, each once, unknown ids skipped (``missing="error"``
        to refuse them); with ``filter`` too, only those that also match it. With only
        ``filter``: matching chunks in row order. With neither: every chunk.
        """
        snapshot = self.dataset.snapshot()  # rows and values from one snapshot, whatever other threads write
        rows = self._select(snapshot, ids, filter, missing)
        names = list(return_tensors) if return_tensors is not None else list(DEFAULT_RETURN)
        view = snapshot[rows.tolist()]
        out = {name: view[name].numpy(aslist=True) for name in names}
        return {k: (v.tolist() if isinstance(v, np.ndarray) else list(v)) for k, v in out.items()}

    def _select(self, table: Table, ids: Sequence[str] | None, filter: Any, missing: str) -> np.ndarray:
        """Rows of ``table`` for ``ids`` (in their order) and/or ``filter`` (ascending); both: rows matching both."""
        if ids is None:
            return self.rows_where(filter, table)
        rows = self.rows_for_ids(ids, missing, table)
        if filter is not None:
            rows = rows[np.isin(rows, self.rows_where(filter, table))]
        return rows

    def _rows_for(self, ids: Sequence[str] | None, filter: Any, what: str, missing: str = "error") -> np.ndarray:
        """Ascending rows for ``ids`` and/or ``filter`` (both given: rows matching both), for a write."""
        if ids is None and filter is None:
            raise SampleError(f"{what}: give ids or a filter")
        try:
            return np.sort(self._select(self.dataset, ids, filter, missing))
        except SampleError as e:
            raise SampleError(f"{what}: {e}") from None

    # -- search ----------------------------------------------------------------------------------
    def search(
        self,
        embedding_data: str | None = None,
        embedding_function: Any = None,
        embedding: Any = None,
        k: int = 4,
        distance_metric: str = "cos",
        query: str | None = None,
        filter: Mapping[str, Any] | str | ast.Expr | Callable[[dict], bool] | None = None,
        return_tensors: Sequence[str] | None = None,
        return_view: bool = False,
        deep_memory: bool = False,
        ids: Sequence[str] | None = None,
        exact: bool = False,
        search_params: Mapping[str, Any] | None = None,
        mode: str = "vector",
        fusion: str | None = None,
        alpha: float | None = None,
        rrf_k: int = RRF_K,
        sparse_top_k: int | None = None,
        engine: str = "local",
        num_workers: int | None = None,
        **deeplake_v3_arguments: Any,
    ) -> dict[str, list] | Any:
        """Top-``k`` chunks for a query text, a query vector, or a whole TQL ``query``.

        ``mode="vector"`` (the default) ranks by embedding; ``"text"`` by BM25 of the query text
        (``embedding_data``) alone, leaving out chunks with no query term; ``"hybrid"`` fuses both
        rankings, each filtered first: ``fusion="convex"`` with ``alpha`` (1: dense only, 0: text
        only; the default, at 0.5) or ``"rrf"`` (reciprocal rank fusion, ``rrf_k`` its constant).
        Text and hybrid need a bm25 index on ``text`` (``VectorStore(..., text_index="english")``).
        With ``deep_memory=True`` a hybrid search uses the model's transform and, unless
        ``fusion``/``alpha`` are given, the fusion its training chose. ``sparse_top_k`` sets how
        many text candidates are fused.

        ``ids`` restricts a vector search to those chunks (unknown ids are skipped), ``filter``
        to the matching ones; with both, to chunks in ``ids`` that match ``filter``.
        Returns ``{"text": [...], "metadata": [...], "id": [...], "score": [...]}``
        (``return_tensors`` picks the columns) or the result view with ``return_view``.
        ``filter`` may also be a WHERE expression of query_lang's AST (``query_lang.ast.Expr``).
        A vector index serves the search when there is one (``exact=True`` scans instead;
        ``search_params`` tune the index, see ``Dataset.query``). ``engine="ray"`` runs each query
        divided over ``num_workers`` Ray tasks, with the local answer (see ``Dataset.query``).
        Deep Lake v3's ``exec_option`` and ``token`` are accepted and ignored; any other unknown
        keyword argument is a :class:`TypeError` naming it.
        """
        refuse_unknown_keywords(VectorStore.search, deeplake_v3_arguments, IGNORED_SEARCH_ARGUMENTS)
        request = HybridRequest.parse(mode, fusion, alpha, rrf_k, sparse_top_k)
        check_engine(engine, num_workers)
        run = {"exact": exact, "search_params": search_params, "engine": engine, "num_workers": num_workers}
        if len(self.dataset) == 0:
            raise TensorDBError("search on an empty vector store: add documents first")
        if query is not None:
            if embedding_data is not None or embedding is not None or filter is not None or ids is not None:
                raise SampleError(
                    "search: a TQL query cannot be combined with embedding_data, embedding, filter or ids"
                )
            if request.mode != "vector":
                raise SampleError(f"search: a TQL query ranks itself; mode={request.mode!r} does not apply")
            view = self.dataset.query(query, **run)
        elif request.mode == "vector":
            found = self._vector_search(
                embedding_data, embedding_function, embedding, k, distance_metric, filter, deep_memory, ids
            )
            view = found[0].query(found[1], **run)
        else:
            view = self._text_or_hybrid_search(
                request, embedding_data, embedding_function, embedding, k, distance_metric, filter, deep_memory, ids,
                run)
        if return_view:
            return view
        names = list(return_tensors) if return_tensors is not None else [t for t in DEFAULT_RETURN if t in view.tensors]
        out = {name: view[name].numpy(aslist=True) for name in names}
        score = getattr(view, "score", None)  # the computed column of a search or a TQL query
        if score is not None:
            out["score"] = [float(s) for s in score.numpy()]
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in out.items()}

    def _text_or_hybrid_search(self, request: HybridRequest, embedding_data, embedding_function, embedding, k,
                               distance_metric, filter, deep_memory, ids, run: dict[str, Any]) -> Table:
        """The rows of a text or hybrid search, as a view of one snapshot with their (fused) ``score``."""
        k = self._check_text_or_hybrid(request, embedding_function, embedding, k, deep_memory)
        text = embedding_data if isinstance(embedding_data, str) or embedding_data is None else embedding_data[0]
        snapshot = self.dataset.snapshot()  # both sides and the rows returned come from one snapshot
        target, where = self._search_target(filter, ids, snapshot)
        depth = k if request.mode == "text" else request.sparse_top_k or max(k, CANDIDATES)
        lexical_query = text_query(text, where, depth)
        if request.mode == "text":
            lexical = ranking(target.query(lexical_query, **run), drop_zero=True)
            chosen = Ranking(lexical.keys[:k], lexical.scores[:k])
        else:
            _, dense_query = self._vector_search(embedding_data, embedding_function, embedding, max(k, CANDIDATES),
                                                 distance_metric, None, deep_memory, None)
            # One call for both sides: on Ray, one dispatch. They share no scan, so each is computed as alone
            # (and ``exact`` keeps only vector indexes out, never the bm25 index the text side needs).
            lexical_view, dense_view = target.query_batch(
                [lexical_query, dataclasses.replace(dense_query, where=where)], **run)
            lexical, dense = ranking(lexical_view, drop_zero=True), ranking(dense_view)
            if distance_metric in ("l2", "l1", "max"):  # distances: nearer is better, so negate for fusion
                dense = Ranking(dense.keys, -dense.scores)
            chosen = fused_rows(dense, lexical, request.choice(self._learned_fusion() if deep_memory else None), k)
        rows = snapshot[np.asarray(chosen.keys, dtype=np.int64)]
        return rows.with_columns({"score": np.asarray(chosen.scores, dtype=np.float64)})

    def _check_text_or_hybrid(self, request: HybridRequest, embedding_function: Any, embedding: Any, k: Any,
                              deep_memory: bool) -> int:
        """``k`` as an int, once the store and the arguments can serve a text or hybrid search."""
        if request.mode == "text" and (embedding is not None or deep_memory):
            raise SampleError("search: mode='text' ranks by the query text alone; it takes no embedding or "
                              "deep_memory (use mode='hybrid')")
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise SampleError(f"search: k must be a positive integer, got {k!r} ({type(k).__name__})")
        if request.mode == "hybrid" and embedding is None and (embedding_function or self.embedding_function) is None:
            try:
                check_text_index(self.dataset, "hybrid")
            except IndexNotFoundError as e:
                raise IndexNotFoundError(f"{e}; it also has no embedding_function to embed the query text for the "
                                         f"dense side: pass one (or the query's embedding= beside its text)") from None
        check_text_index(self.dataset, request.mode)
        return int(k)

    def _learned_fusion(self) -> dict[str, Any] | None:
        """The fusion the latest Deep Memory model learned (None: no model, or trained without a text index)."""
        model = self.deep_memory.model()
        return None if model is None else model.metadata.get("fusion")

    def _vector_search(
        self, embedding_data, embedding_function, embedding, k, distance_metric, filter, deep_memory, ids
    ) -> tuple[Table, ast.Query]:
        """The table a vector search runs on, and its query."""
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise SampleError(f"search: k must be a positive integer, got {k!r} ({type(k).__name__})")
        k = int(k)
        if distance_metric not in METRICS:
            raise SampleError(f"search: distance_metric must be one of {list(METRICS)}, got {distance_metric!r}")
        if deep_memory and distance_metric != "cos":
            raise SampleError("search: deep_memory=True ranks by cosine; use distance_metric='cos'")
        if embedding is None:
            if embedding_data is None:
                raise SampleError("search: give embedding_data (text to embed), embedding, or query")
            text = embedding_data if isinstance(embedding_data, str) else embedding_data[0]
            vector = self.embed_queries([text], embedding_function)[0]
        else:
            vector = _query_vector(embedding, self._dim())
        if distance_metric == "cos" and not vector.any():
            # cosine similarity with a zero vector is 0/0: every score would be NaN and the ranking arbitrary
            raise SampleError(
                "search: the query embedding is all zeros, so its cosine similarity with every chunk is undefined; "
                "use distance_metric='dot' or 'l2', or a non-zero query"
            )
        if deep_memory:
            function, similar, difference = "deepmemory_distance", True, False
        else:
            function, similar, difference = METRICS[distance_metric]
        array = ast.ArrayLiteral(ast.Float32Vector(vector))  # stays one float32 array up to the kernel
        column = ast.Column("embedding")
        args = (ast.Binary("-", column, array),) if difference else (column, array)
        score = ast.OrderKey(ast.Call(function, args), descending=similar)
        target, where = self._search_target(filter, ids)
        return target, ast.Query(select=(ast.Star(),), where=where, order_by=(score,), limit=k)

    def _search_target(self, filter: Any, ids: Sequence[str] | None,
                       snapshot: Table | None = None) -> tuple[Any, ast.Expr | None]:
        """The table a search scans and the WHERE it applies there (on ``snapshot`` when given)."""
        if ids is None and not callable(filter):
            return self.dataset if snapshot is None else snapshot, filters.where_expression(filter)
        if snapshot is None:  # the rows found and the rows searched come from one snapshot
            snapshot = self.dataset.snapshot()
        if callable(filter):  # evaluated in Python: select the rows first, search only them
            return snapshot[np.sort(self._select(snapshot, ids, filter, "skip"))], None
        rows = np.sort(self.rows_for_ids(ids, "skip", snapshot))
        return snapshot[rows], filters.where_expression(filter)


def _rows_as_dicts(table: Table):
    """Each row of ``table`` as ``{"text", "metadata", "id"}``, for callable filters."""
    columns = (table.text.numpy(aslist=True), table.metadata.numpy(aslist=True), table.id.numpy(aslist=True))
    for text, meta, doc_id in zip(*columns, strict=True):
        yield {"text": text, "metadata": meta, "id": doc_id}


def create_tensors(ds: Dataset, names: Sequence[str]) -> None:
    """Create the vector store's tensors ``names`` in ``ds``, as :data:`SCHEMA` defines them."""
    for name in names:
        ds.create_tensor(name, **SCHEMA[name])


def _take(values: Any, positions: list[int]) -> Any:
    """``values`` at ``positions`` (a NumPy array stays one)."""
    if isinstance(values, np.ndarray):
        return values[positions]
    return [values[p] for p in positions]


def _embedding_rows(what: str, embedding: Any) -> Any:
    """Embeddings as a float32 matrix when they convert to one; the dataset checks dimension and finiteness."""
    if isinstance(embedding, np.ndarray) and embedding.dtype.kind == "f":
        return embedding
    try:
        matrix = np.asarray(embedding)
    except (TypeError, ValueError):  # ragged rows: the dataset names the row whose dimension is wrong
        matrix = None
    if matrix is not None and matrix.dtype.kind in _NUMERIC:
        return matrix.astype(np.float32)
    rows = list(embedding)
    vectors = []
    for row, vector in enumerate(rows):
        if isinstance(vector, (str, bytes)):
            raise SampleError(f"{what}: embedding {row}: expected a vector of floats, got {type(vector).__name__}")
        try:
            values = np.asarray(vector)
        except (TypeError, ValueError):
            values = None
        if values is None or values.dtype.kind not in _NUMERIC:
            raise SampleError(
                f"{what}: embedding {row}: expected one vector of floats per chunk, got {_describe(vector)}"
            )
        vectors.append(values.astype(np.float32))
    return vectors


def _describe(value: Any) -> str:
    """A value's type, with the element type of a sequence: ``list of str``."""
    if isinstance(value, (list, tuple)) and value:
        kinds = sorted({type(v).__name__ for v in value})
        return f"{type(value).__name__} of {', '.join(kinds)}"
    return type(value).__name__


def _query_vector(embedding: Any, dim: int | None) -> np.ndarray:
    """A search's query ``embedding`` as one float32 vector of the store's dimension."""
    if isinstance(embedding, (str, bytes)):
        raise SampleError(f"search: embedding: expected a vector of floats, got {type(embedding).__name__}")
    try:
        vector = np.asarray(embedding)
    except (TypeError, ValueError):
        vector = None
    if vector is None or vector.dtype.kind not in _NUMERIC:
        raise SampleError(f"search: embedding: expected a vector of floats, got {_describe(embedding)}")
    vector = vector.astype(np.float32)
    one_vector = vector.ndim == 1 or (vector.ndim == 2 and vector.shape[0] == 1)
    if not one_vector or vector.shape[-1] != dim:
        got = f"dimension {vector.shape[0]} (shape {vector.shape})" if vector.ndim == 1 else f"shape {vector.shape}"
        raise SampleError(
            f"search: embedding: expected one vector of dimension {dim} (shape ({dim},) or (1, {dim})), got {got}"
        )
    vector = vector.reshape(-1)
    if not np.isfinite(vector).all():
        raise SampleError("search: query embedding contains NaN or Inf")
    return vector
