"""Attachments: named, atomically replaced side records of a dataset (models, job records).

They live beside the versioned tensors under ``attachments/`` and use the same
checksummed envelope: JSON-like metadata plus raw numpy buffers, never pickle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataCorruptionError, InvalidNameError
from ..format import arrays as arrays_format
from ..format import envelope
from ..storage import Store

PREFIX = "attachments/"
_NAME = re.compile(r"[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-.]+)*")


def _key(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidNameError(
            f"invalid attachment name {name!r}: expected letters, digits, '_', '-' and '/'-separated parts"
        )
    return PREFIX + name


@dataclass(frozen=True)
class Attachment:
    """One stored record: its metadata, its arrays, and the attachments it cannot be used without."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    requires: tuple[str, ...] = ()


def put(
    store: Store, name: str, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], requires: Sequence[str] = ()
) -> None:
    """Atomically write attachment ``name``; ``requires`` names attachments that ``verify`` must find beside it."""
    for needed in requires:
        _key(needed)
    header = {"meta": dict(meta), "requires": list(requires)}
    store.publish(_key(name), b"".join(arrays_format.pack_arrays(envelope.MAGIC_BLOB, header, arrays)))


def get(store: Store, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metadata and arrays of attachment ``name``."""
    record = read(store, name)
    return record.meta, record.arrays


def read(store: Store, name: str) -> Attachment:
    """Attachment ``name`` whole; records written before ``requires`` existed require nothing."""
    key = _key(name)
    what = f"{store.url}/{key}"
    header, arrays = arrays_format.unpack_arrays(store.get(key), what, envelope.MAGIC_BLOB)
    try:
        requires = header.get("requires", [])
        if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
            raise TypeError(f"'requires' must be a list of attachment names, got {requires!r:.80}")
        return Attachment(dict(header["meta"]), arrays, tuple(requires))
    except (KeyError, ValueError, TypeError, AttributeError) as e:  # a forged record of any shape
        raise DataCorruptionError(f"{what}: attachment is malformed: {e}") from e


def missing_requirements(store: Store, records: Mapping[str, Attachment]) -> list[str]:
    """Problems for ``verify``: attachments whose required attachments are absent."""
    present = set(names(store))
    return [
        f"{store.url}: attachment {name!r} requires {needed!r}, which is missing (file '{PREFIX}{needed}')"
        for name, record in sorted(records.items())
        for needed in record.requires
        if needed not in present
    ]


def names(store: Store, prefix: str = "") -> list[str]:
    return [k[len(PREFIX) :] for k in store.list(PREFIX + prefix)]


def delete(store: Store, name: str) -> None:
    store.delete(_key(name))
