"""Core layer: tensors, datasets, views and versions, on top of the format and storage layers."""

from .dataset import Dataset
from .ingest import from_arrow
from .lifecycle import dataset, deepcopy, empty, exists, load, verify
from .table import DatasetView, Table, VirtualColumn
from .tensor import Tensor

__all__ = [
    "Dataset",
    "DatasetView",
    "Table",
    "Tensor",
    "VirtualColumn",
    "dataset",
    "deepcopy",
    "empty",
    "exists",
    "load",
    "verify",
]
__all__ += ["from_arrow"]
