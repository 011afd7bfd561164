"""Core layer: tensors, datasets, views and versions, on top of the format and storage layers."""

from .dataset import Dataset
from .engines import register_ray_entry_point
from .ingest import from_arrow, from_ray
from .lifecycle import dataset, deepcopy, empty, exists, load, verify
from .ray_data import read_table
from .ray_engine import run_queries_on_ray
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
__all__ += ["from_arrow", "from_ray"]

register_ray_entry_point("queries", run_queries_on_ray)
register_ray_entry_point("ray_data", read_table)
