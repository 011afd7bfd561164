"""A tensor (column) of a dataset or view: reading, indexing and single-tensor writes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import IndexNotFoundError, ReadOnlyError, SampleError
from ..format.manifest import TensorMeta, TensorState
from .chunk_io import read_all_fixed, read_rows
from .htypes import OBJECT_HTYPES
from .indexing import normalize_index

if TYPE_CHECKING:
    from .table import Table


#: Deep Lake v3's names of hnsw parameters, and tensordb's.
DEEPLAKE_HNSW_PARAMS = {"efConstruction": "ef_construction", "efSearch": "ef_search"}


class Tensor:
    """One column of a :class:`Dataset` or view, optionally restricted to some rows."""

    def __init__(self, table: Table, name: str, rows: np.ndarray | None = None, single: bool = False):
        self._table = table
        self.name = name
        self._rows = rows
        self._single = single

    # -- schema -------------------------------------------------------------------------------
    @property
    def _state(self) -> TensorState:
        return self._table._tensor_state(self.name)

    @property
    def meta(self) -> TensorMeta:
        """The tensor's stored schema."""
        return self._state.meta

    @property
    def revision(self) -> tuple[str, ...]:
        """Identifies the tensor's stored contents: it changes whenever a write changes them.

        Chunks are immutable and every write gives the chunks it makes new keys, so the
        chunk list names one exact content. Derived data (an id index) can be keyed by it.
        """
        return self._state.chunk_keys

    @property
    def htype(self) -> str:
        return self.meta.htype

    @property
    def dtype(self) -> np.dtype | None:
        return None if self.meta.dtype is None else np.dtype(self.meta.dtype)

    @property
    def shape(self) -> tuple[int | None, ...]:
        """``(rows, *row_shape)``, with ``None`` where rows differ."""
        row = self.meta.shape if self.meta.shape is not None else (None,) if self.htype in ("generic",) else ()
        if self._single:
            return tuple(row)
        return (len(self), *row)

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.class_names)

    def _positions(self) -> np.ndarray:
        return self._table._base_rows_of(self._rows, self.name)

    def __len__(self) -> int:
        if self._rows is not None:
            return len(self._rows)
        return self._table._tensor_len(self.name)

    def __repr__(self) -> str:
        return f"Tensor(name={self.name!r}, htype={self.htype!r}, shape={self.shape}, dtype={self.meta.dtype})"

    # -- reading ------------------------------------------------------------------------------
    def __getitem__(self, index: Any) -> Tensor:
        rows, single = normalize_index(index, len(self), f"tensor {self.name!r}")
        if self._rows is not None:
            rows = self._rows[rows]
        return Tensor(self._table, self.name, rows, single)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def numpy(self, aslist: bool = False) -> Any:
        """The values as one ndarray (object ndarray for text and JSON), or a list with ``aslist``."""
        state = self._state
        meta = state.meta
        fixed = meta.htype not in OBJECT_HTYPES and meta.shape is not None and None not in meta.shape
        if self._rows is None and self._table._is_base_order() and fixed and not aslist:
            values: Any = read_all_fixed(self._table._reader, state)
        else:
            values = read_rows(self._table._reader, state, self._positions())
        if self._single:
            return values[0]
        if aslist:
            return list(values) if isinstance(values, np.ndarray) else values
        if isinstance(values, np.ndarray):
            return values
        if meta.htype in OBJECT_HTYPES:
            out = np.empty(len(values), dtype=object)
            out[:] = values
            return out
        if not values:  # no rows, so no shape known yet
            return np.empty((0,), dtype=self.dtype or np.float32)
        raise SampleError(
            f"tensor {self.name!r} has rows of different shapes ({meta.shape}); use numpy(aslist=True)"
        )

    def data(self, aslist: bool = False) -> dict[str, Any]:
        """``{"value": ...}`` as Deep Lake returns it; class labels also get ``"text"``."""
        value = self.numpy(aslist=aslist or self.htype in OBJECT_HTYPES)
        out = {"value": value}
        if self.htype == "class_label":
            names = self.meta.class_names
            rows = [value] if self._single else value
            text = [[names[i] if i < len(names) else str(i) for i in np.asarray(r).reshape(-1)] for r in rows]
            out["text"] = text[0] if self._single else text
        return out

    def text(self) -> Any:
        """The value(s) of a text tensor as str (or list of str)."""
        return self.numpy(aslist=True)

    def tolist(self) -> Any:
        value = self.numpy(aslist=True)
        if isinstance(value, np.ndarray):
            return value.tolist()
        return [v.tolist() if isinstance(v, np.ndarray) else v for v in value] if isinstance(value, list) else value

    # -- writing ------------------------------------------------------------------------------
    def _writable_dataset(self):
        dataset = self._table._as_writable(f"write to tensor {self.name!r}")
        if self._rows is not None and self._table is not dataset:
            raise ReadOnlyError(f"tensor {self.name!r}: views are read-only; write through the dataset")
        return dataset

    def append(self, value: Any) -> None:
        """Add one row to this tensor only."""
        self._writable_dataset()._extend_tensors({self.name: [value]}, require_all=False)

    def extend(self, values: Any) -> None:
        """Add rows to this tensor only."""
        self._writable_dataset()._extend_tensors({self.name: values}, require_all=False)

    def __setitem__(self, index: Any, value: Any) -> None:
        dataset = self._writable_dataset()
        rows, single = normalize_index(index, len(self), f"tensor {self.name!r}")
        if self._rows is not None:
            rows = self._rows[rows]
        dataset._update_tensor(self.name, rows, [value] if single else value)

    # -- indexes ------------------------------------------------------------------------------
    def create_index(self, name: str, kind: str, **params: Any) -> None:
        """Build an index of this tensor, as derived data of the current version (one atomic write).

        Vector kinds (``flat``, ``hnsw``, ``ivf_pq``, ``ivf_sq``; need ``tensordb[faiss]``) take
        ``metric="cosine"`` (or ``"l2"``, ``"dot"``) and their build parameters (hnsw: ``M``,
        ``ef_construction``, ``ef_search``; ivf: ``nlist``, ``nprobe``, ivf_pq ``m``, ``nbits``, ivf_sq
        ``qtype``). ``kind="json"`` takes ``paths=[...]`` (key names, or lists of nested key names);
        ``kind="scalar"`` indexes a numeric, label or text tensor. Queries use a fitting index by themselves.
        """
        self._writable_dataset().create_index(self.name, name, kind, **params)

    def drop_index(self, name: str) -> None:
        """Remove index ``name`` of this tensor from the current version."""
        self._writable_dataset().drop_index(self._own_index(name))

    def rebuild_index(self, name: str) -> None:
        """Build index ``name`` again over the rows as they are now."""
        self._writable_dataset().rebuild_index(self._own_index(name))

    @property
    def indexes(self) -> dict[str, dict[str, Any]]:
        """This tensor's indexes: ``{name: {"kind", "metric", "rows", "fresh_rows", "deleted_rows", "params"}}``."""
        everything = self._table._root.indexes
        return {name: {k: v for k, v in info.items() if k != "tensor"}
                for name, info in everything.items() if info["tensor"] == self.name}

    def _own_index(self, name: str) -> str:
        indexes = self._table._root._state.indexes
        if name not in indexes or indexes[name].tensor != self.name:
            own = sorted(n for n, ref in indexes.items() if ref.tensor == self.name)
            raise IndexNotFoundError(f"tensor {self.name!r} has no index named {name!r}; its indexes are {own}")
        return name

    # Deep Lake v3's names for the same operations.
    def create_vdb_index(self, id: str, distance: str = "cosine_similarity",
                         additional_params: dict[str, Any] | None = None) -> None:
        """Deep Lake v3: an hnsw index; ``additional_params`` may hold ``M``, ``efConstruction``, ``efSearch``."""
        params = {DEEPLAKE_HNSW_PARAMS.get(k, k): v for k, v in (additional_params or {}).items()}
        self.create_index(id, kind="hnsw", metric=distance, **params)

    def get_vdb_indexes(self) -> list[dict[str, Any]]:
        """Deep Lake v3: this tensor's vector indexes as ``[{"id", "type", "distance", "additional_params"}]``."""
        return [{"id": name, "type": info["kind"], "distance": info["metric"],
                 "additional_params": {k: v for k, v in info["params"].items() if k != "dim"}}
                for name, info in self.indexes.items() if "metric" in info]

    def delete_vdb_index(self, id: str) -> None:
        """Deep Lake v3: drop the index named ``id``."""
        self.drop_index(id)
