"""One exception hierarchy for tensordb: catch :class:`TensorDBError` to catch them all."""

from __future__ import annotations


class TensorDBError(Exception):
    """Base class of every error tensordb raises on purpose."""


class StorageError(TensorDBError):
    """Reading or writing the underlying store failed (disk full, I/O error, ...)."""


class KeyNotFoundError(StorageError, KeyError):
    """A key that should exist is absent from the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PreconditionFailedError(StorageError):
    """A conditional write found the object changed since it was read (another writer was first)."""


class BucketNotFoundError(StorageError):
    """The bucket (or container) of an object-store path does not exist."""


class AccessDeniedError(StorageError, PermissionError):
    """The store refused the request: missing or wrong credentials, or no permission for the path."""


class NetworkError(StorageError, ConnectionError):
    """The store could not be reached, even after retries with backoff; nothing half-written is visible."""


class DataCorruptionError(TensorDBError):
    """A file failed its checksum or could not be decoded."""


class FormatVersionError(DataCorruptionError):
    """A file was written by a newer, unknown format version."""


class LockedError(TensorDBError):
    """Another writer holds the dataset's lock."""


class ConflictError(TensorDBError):
    """A commit lost a race with another writer's change to the same rows, tensors or indexes.

    The other writer's change stands; this handle still holds its own change, unpublished:
    ``ds.checkout(name, create=True)`` keeps it as a branch, ``ds.reset()`` drops it.
    """


class ReadOnlyError(TensorDBError):
    """A write was attempted on a read-only dataset or an old commit."""


class DatasetNotFoundError(TensorDBError):
    """No dataset exists at the given path."""


class DatasetExistsError(TensorDBError):
    """A dataset already exists where a new one was requested."""


class ForeignFilesError(DatasetExistsError):
    """The path holds files that are not part of a tensordb dataset: tensordb neither replaces nor deletes them."""


class TensorNotFoundError(TensorDBError, KeyError):
    """An unknown tensor name was used."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TensorExistsError(TensorDBError):
    """``create_tensor`` was called with a name already in use."""


class SampleError(TensorDBError, ValueError):
    """A row does not fit its tensor: wrong type, shape, dtype or value."""


class InvalidNameError(TensorDBError, ValueError):
    """A tensor, branch, attachment or path name that tensordb cannot store or find again."""


class IndexOutOfRangeError(TensorDBError, IndexError):
    """A row index lies outside the tensor or view."""


class VersionError(TensorDBError):
    """An unknown branch or commit, or an invalid version operation."""


class MissingExtraError(TensorDBError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


class ModelLoadError(TensorDBError):
    """An embedding model could not be loaded; the message says what was tried."""


class IndexDefinitionError(TensorDBError, ValueError):
    """An index cannot be made or used as asked: unknown kind or parameter, wrong htype, unfit metric,
    or search parameters that do not apply to the index kind."""


class IndexExistsError(IndexDefinitionError):
    """``create_index`` was called with a name already in use."""


class IndexNotFoundError(TensorDBError, KeyError):
    """An unknown index name was used."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WorkerFailedError(TensorDBError):
    """A distributed task's worker died, and its retries too; no partial answer is returned."""
