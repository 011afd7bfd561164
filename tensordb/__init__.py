"""tensordb: an embedded, versioned, columnar tensor database for AI retrieval."""

from .core import Dataset, DatasetView, Tensor, dataset, deepcopy, empty, exists, from_arrow, from_ray, load, verify
from .deep_memory.tql import register as _register_tql_functions
from .errors import (
    DataCorruptionError,
    DatasetExistsError,
    DatasetNotFoundError,
    ForeignFilesError,
    InvalidNameError,
    LockedError,
    MissingExtraError,
    ModelLoadError,
    ReadOnlyError,
    SampleError,
    TensorDBError,
    TensorNotFoundError,
    VersionError,
)
from .vectorstore import HashingEmbedding, SentenceTransformerEmbedding, VectorStore, ingest_jsonl
from .version import __version__

_register_tql_functions()

__all__ = [
    "__version__",
    "Dataset",
    "DatasetView",
    "Tensor",
    "VectorStore",
    "HashingEmbedding",
    "SentenceTransformerEmbedding",
    "dataset",
    "deepcopy",
    "empty",
    "exists",
    "from_arrow",
    "from_ray",
    "ingest_jsonl",
    "load",
    "verify",
    "TensorDBError",
    "DataCorruptionError",
    "DatasetExistsError",
    "DatasetNotFoundError",
    "LockedError",
    "ForeignFilesError",
    "InvalidNameError",
    "MissingExtraError",
    "ModelLoadError",
    "ReadOnlyError",
    "SampleError",
    "TensorNotFoundError",
    "VersionError",
]
