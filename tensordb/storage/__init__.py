"""Storage layer: bytes by key, in a local directory, in memory, or on S3-protocol object storage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .base import Store, WriterLock
from .local import LocalStore
from .memory import MemoryStore

MEMORY_SCHEME = "mem://"
S3_SCHEME = "s3://"


def open_store(
    path: str | Store, creds: Mapping[str, object] | None = None, immutable_prefixes: Sequence[str] = ()
) -> Store:
    """The store for a dataset path: ``s3://bucket/prefix``, ``mem://name``, a local directory, or a ``Store`` as is.

    ``creds`` (S3 only) holds ``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``,
    ``endpoint_url`` and ``aws_region``; without it the AWS environment and profile files are used.
    Objects under ``immutable_prefixes`` of an S3 store are read through the local object cache.
    """
    if isinstance(path, Store):
        _no_creds(creds, path.url)
        return path
    if path.startswith(S3_SCHEME):
        return _s3_store_class()(path, creds, immutable_prefixes=immutable_prefixes)
    _no_creds(creds, path)
    if path.startswith(MEMORY_SCHEME):
        return MemoryStore.named(path[len(MEMORY_SCHEME) :])
    if "://" in path:
        from ..errors import StorageError

        raise StorageError(f"unsupported storage scheme in {path!r}: expected a local path, mem://name or s3://bucket")
    return LocalStore(path)


def _no_creds(creds: Mapping[str, object] | None, where: str) -> None:
    if creds is not None:
        raise TypeError(f"creds= applies to s3:// paths only; {where!r} takes none")


def _s3_store_class() -> type[Store]:
    """``S3Store``, imported on first use: ``import tensordb`` does not need obstore."""
    try:
        from .object_store import S3Store
    except ImportError as e:
        if getattr(e, "name", None) and not str(e.name).startswith("obstore"):
            raise
        from ..errors import MissingExtraError

        raise MissingExtraError(
            f's3:// paths need obstore, which is not installed ({e}); pip install "tensordb[s3]"'
        ) from None
    return S3Store


__all__ = ["Store", "WriterLock", "LocalStore", "MemoryStore", "open_store"]
