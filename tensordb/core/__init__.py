"""Core layer: tensors, datasets, views and versions, on top of the format and storage layers."""

from .dataset import Dataset
from .lifecycle import dataset, deepcopy, empty, exists, load
from .table import DatasetView, VirtualColumn
from .tensor import Tensor

__all__ = ["Dataset", "DatasetView", "Tensor", "VirtualColumn", "dataset", "deepcopy", "empty", "exists", "load"]
