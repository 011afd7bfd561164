"""What datasets and views share: a snapshot, a row selection, and read access to tensors."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ReadOnlyError, TensorNotFoundError
from ..format.manifest import DatasetState, TensorState
from .chunk_io import ChunkReader
from .engines import check_engine, ray_entry_point
from .indexing import normalize_index, take_values
from .scan import Selection, run_queries, run_query
from .tensor import Tensor

if TYPE_CHECKING:
    from .dataset import Dataset


def unknown_tensor(name: str, known: list[str]) -> TensorNotFoundError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return TensorNotFoundError(f"unknown tensor {name!r}; tensors are {known}{hint}")


class VirtualColumn:
    """A computed column of a query result, such as ``score``."""

    def __init__(self, name: str, values: Any):
        self.name = name
        self._values = values

    def __len__(self) -> int:
        return len(self._values)

    def numpy(self, aslist: bool = False) -> Any:
        if aslist:
            return list(self._values)
        return self._values if isinstance(self._values, np.ndarray) else np.asarray(self._values, dtype=object)

    def data(self, aslist: bool = False) -> dict[str, Any]:
        return {"value": self.numpy(aslist)}

    def __getitem__(self, index: Any) -> Any:
        return self._values[index]

    def __repr__(self) -> str:
        return f"VirtualColumn(name={self.name!r}, rows={len(self)})"


class Table:
    """Read access shared by :class:`Dataset` and :class:`DatasetView`."""

    _state: DatasetState
    _reader: ChunkReader
    _root: Dataset  # the dataset a view was taken from (itself for a dataset)

    # -- hooks for Tensor -----------------------------------------------------------------------
    def _tensor_state(self, name: str) -> TensorState:
        try:
            return self._state.tensors[name]
        except KeyError:
            raise unknown_tensor(name, list(self._state.tensors)) from None

    def _tensor_len(self, name: str) -> int:
        return self._tensor_state(name).nrows

    def _base_rows_of(self, rows: np.ndarray | None, name: str) -> np.ndarray:
        return np.arange(self._tensor_len(name), dtype=np.int64) if rows is None else rows

    def _is_base_order(self) -> bool:
        return True

    def _as_writable(self, operation: str) -> Dataset:
        raise ReadOnlyError(f"cannot {operation}: views are read-only")

    # -- the selection --------------------------------------------------------------------------
    def _selected_rows(self) -> np.ndarray | None:
        """Base row numbers of this table, or ``None`` for all rows."""
        return None

    def _scanned_rows(self) -> np.ndarray | None:
        """Like ``_selected_rows``, but None too for a view of every row in order (a snapshot): a query
        may then scan it, and use its indexes, as it would the dataset."""
        return self._selected_rows()

    @property
    def _virtual(self) -> dict[str, Any]:
        return {}

    def __len__(self) -> int:
        rows = self._selected_rows()
        if rows is not None:
            return len(rows)
        return self._state.nrows

    @property
    def num_samples(self) -> int:
        return len(self)

    @property
    def tensors(self) -> dict[str, Tensor]:
        """All tensors by name (a view's tensors are restricted to its rows)."""
        return {name: self._tensor(name) for name in self._state.tensors}

    def _tensor(self, name: str) -> Tensor:
        self._tensor_state(name)
        return Tensor(self, name, self._selected_rows())

    def column_names(self) -> list[str]:
        """Tensor names, then computed columns (such as a query's ``score``), in order."""
        return list(self._state.tensors) + [v for v in self._virtual if v not in self._state.tensors]

    @property
    def row_positions(self) -> np.ndarray:
        """The dataset row number of each row of this table, in order."""
        rows = self._selected_rows()
        return np.arange(len(self), dtype=np.int64) if rows is None else rows

    @property
    def virtual_columns(self) -> dict[str, Any]:
        """Computed columns (such as a query's ``score``) by name: ndarrays or lists, one value per row."""
        return dict(self._virtual)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._virtual:
            return VirtualColumn(name, self._virtual[name])
        if name in self._state.tensors:
            return self._tensor(name)
        raise AttributeError(f"{type(self).__name__} has no attribute or tensor {name!r}")

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, str):
            if index in self._virtual:
                return VirtualColumn(index, self._virtual[index])
            return self._tensor(index)
        rows, single = normalize_index(index, len(self), "dataset")
        base = self._selected_rows()
        virtual = {k: take_values(v, rows) for k, v in self._virtual.items()}
        return DatasetView(self, rows if base is None else base[rows], single, virtual)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def summary(self, show: bool = True) -> str:
        """A table of every tensor's htype, shape, dtype and compression; printed unless ``show=False``."""
        header = ("tensor", "htype", "shape", "dtype", "compression")
        lines = [header]
        for name in self._state.tensors:
            t = self._tensor(name)
            m = t.meta
            lines.append((name, m.htype, str(t.shape), str(m.dtype if m.dtype is None else np.dtype(m.dtype)),
                          str(m.compression)))
        for name, values in self._virtual.items():
            lines.append((name, "virtual", str((len(values),)), "-", "-"))
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        rule = "  ".join("-" * w for w in widths)
        rendered = [rule] + ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines] + [rule]
        rendered.insert(2, rule)
        text = f"{self!r}\n" + "\n".join(rendered)
        if show:
            print(text)
        return text

    def query(self, text: Any, exact: bool = False, search_params: Mapping[str, Any] | None = None,
              engine: str = "local", num_workers: int | None = None) -> DatasetView:
        """Run a TQL query; the result is a view of the matching rows, in result order.

        A fitting index serves ``ORDER BY <similarity> LIMIT k`` and the WHERE; ``exact=True`` forces the
        exact vector scan, and ``search_params`` (``ef_search``, ``nprobe``, ``refine``, ``index``) tune it.
        ``engine="ray"`` divides the scan over ``num_workers`` Ray tasks (default: the cluster's CPUs),
        which read the snapshot themselves; the answer is the local one (see ``core/ray_engine.py``).
        """
        check_engine(engine, num_workers)
        if engine == "ray":
            return self.query_batch([text], exact, search_params, engine, num_workers)[0]
        return self._view_of(run_query(self, text, exact, search_params))

    def query_batch(self, texts: Sequence[Any], exact: bool = False, search_params: Mapping[str, Any] | None = None,
                    engine: str = "local", num_workers: int | None = None) -> list[DatasetView]:
        """Run several TQL queries; top-k vector searches differing only in their vector share one scan.
        ``engine`` and ``num_workers`` as in :meth:`query`."""
        check_engine(engine, num_workers)
        if engine == "ray":
            selections = ray_entry_point("queries")(self, texts, exact, search_params, num_workers)
        else:
            selections = run_queries(self, texts, exact, search_params)
        return [self._view_of(selection) for selection in selections]

    def with_columns(self, columns: Mapping[str, Any]) -> DatasetView:
        """These rows with computed columns added (each one value per row), such as a fused search score."""
        for name, values in columns.items():
            if len(values) != len(self):
                raise ValueError(f"with_columns: column {name!r} has {len(values)} values for {len(self)} rows")
        return DatasetView(self, self.row_positions, virtual={**self.virtual_columns, **columns}, state=self._state)

    def _view_of(self, selection: Selection) -> DatasetView:
        return DatasetView(self, selection.rows, virtual=selection.virtual, state=selection.state)

    # -- interchange (torch, pyarrow and pandas are imported only when used) ---------------------
    def pytorch(self, tensors: Any = None, batch_size: int | None = 1, shuffle: bool = False, num_workers: int = 0,
                transform: Any = None, collate_fn: Any = None, drop_last: bool = False,
                shuffle_buffer: int = 16_384, seed: int | None = None, **loader_kwargs: Any) -> Any:
        """A ``torch.utils.data.DataLoader`` streaming these rows chunk by chunk; see ``core/torch_loader.py``."""
        from .torch_loader import make_dataloader

        return make_dataloader(self, tensors, batch_size, shuffle, num_workers, transform, collate_fn, drop_last,
                               shuffle_buffer, seed, **loader_kwargs)

    def to_arrow(self, tensors: Any = None) -> Any:
        """These rows as a ``pyarrow.Table`` (one column per tensor; see ``core/arrow_export.py``)."""
        from .arrow_export import to_arrow

        return to_arrow(self, tensors)

    def ray(self, tensors: Any = None) -> Any:
        """These rows as a ``ray.data.Dataset`` of Arrow blocks laid out as ``to_arrow``'s, one per run of
        whole chunks, which Ray tasks read from the store themselves (see ``core/ray_data.py``)."""
        return ray_entry_point("ray_data")(self, tensors)

    def to_pandas(self, tensors: Any = None) -> Any:
        """These rows as a ``pandas.DataFrame``."""
        from .arrow_export import to_pandas

        return to_pandas(self, tensors)


class DatasetView(Table):
    """Some rows of a dataset snapshot, in a given order, plus computed columns. Read-only."""

    def __init__(
        self,
        parent: Table,
        rows: np.ndarray,
        single: bool = False,
        virtual: dict[str, Any] | None = None,
        state: DatasetState | None = None,
        every_row: bool = False,
    ):
        self._state = parent._state if state is None else state
        self._every_row = every_row
        self._reader = parent._reader
        self._rows = rows
        self._single = single
        self._virtual_columns = virtual or {}
        self._root = parent._root
        # The table the rows came from, for repr (computed only when shown: a query makes a view every time).
        self._source = parent if not isinstance(parent, DatasetView) else parent._source

    @property
    def _virtual(self) -> dict[str, Any]:
        return self._virtual_columns

    def _selected_rows(self) -> np.ndarray:
        return self._rows

    def _scanned_rows(self) -> np.ndarray | None:
        return None if self._every_row and not self._virtual_columns else self._rows

    def _tensor(self, name: str) -> Tensor:
        self._tensor_state(name)
        return Tensor(self, name, self._rows, self._single)

    def _is_base_order(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"DatasetView(of {self._source!r}, rows={len(self._rows)})"
