"""tensordb: an embedded, versioned, columnar tensor database for AI retrieval."""

from .core import Dataset, DatasetView, Tensor, dataset, deepcopy, empty, exists, load
from .errors import (
    DatasetExistsError,
    DatasetNotFoundError,
    DataCorruptionError,
    LockedError,
    ReadOnlyError,
    SampleError,
    TensorDBError,
    TensorNotFoundError,
    VersionError,
)

__version__ = "0.1.0"

__all__ = [
    "Dataset",
    "DatasetView",
    "Tensor",
    "dataset",
    "deepcopy",
    "empty",
    "exists",
    "load",
    "TensorDBError",
    "DataCorruptionError",
    "DatasetExistsError",
    "DatasetNotFoundError",
    "LockedError",
    "ReadOnlyError",
    "SampleError",
    "TensorNotFoundError",
    "VersionError",
]
