"""Creating, opening and copying datasets."""

from __future__ import annotations

import os
import time

from tqdm.auto import tqdm

from ..errors import DatasetExistsError, DatasetNotFoundError, KeyNotFoundError
from ..format import manifest as mf
from ..storage import Store, open_store
from . import maintenance
from .dataset import Dataset
from .maintenance import VerifyReport
from .versions import DEFAULT_BRANCH, Checkout, VersionStore


def _split_address(path: str | Store) -> tuple[str | Store, str | None]:
    """``"./db@abc123"`` → ``("./db", "abc123")``; the ``@`` must be in the last path component."""
    if isinstance(path, Store):
        return path, None
    head, sep, tail = path.rpartition("@")
    if sep and tail and "/" not in tail and os.sep not in tail:
        return head, tail
    return path, None


def exists(path: str | Store) -> bool:
    """Whether a dataset lives at ``path``."""
    store = open_store(_split_address(path)[0])
    return store.exists(mf.DATASET_KEY)


def empty(path: str | Store, overwrite: bool = False, lock_timeout: float = 0.0) -> Dataset:
    """Create a new, empty dataset at ``path`` (a directory or ``mem://name``)."""
    store = open_store(path)
    lock = store.acquire_writer_lock(lock_timeout)
    try:
        if store.list():
            if not overwrite and not _interrupted_creation(store):
                kind = "a dataset" if store.exists(mf.DATASET_KEY) else "files"
                raise DatasetExistsError(f"{store.url} already holds {kind}; pass overwrite=True to replace it")
            store.clear()
        _initialise(store)
        versions = VersionStore(store)
        ref = versions.refs()[DEFAULT_BRANCH]
        return Dataset(store, Checkout(DEFAULT_BRANCH, ref.head, ref.state), lock)
    except BaseException:
        lock.release()
        raise


def _interrupted_creation(store: Store) -> bool:
    """Whether ``store`` holds only what an ``empty()`` that failed or crashed before its marker left.

    That is: no marker, and at most an empty first snapshot plus refs naming only it.
    Such leftovers hold no data, so creating the dataset again may replace them.
    """
    from ..errors import TensorDBError

    keys = store.list()
    states = [k for k in keys if k.startswith(mf.STATE_PREFIX)]
    if store.exists(mf.DATASET_KEY) or len(states) > 1 or set(keys) - set(states) - {mf.REFS_KEY}:
        return False
    try:
        if states and mf.decode_state(store.get(states[0]), states[0]).tensors:
            return False
        if mf.REFS_KEY in keys:
            refs = VersionStore(store).refs()
            if refs != {DEFAULT_BRANCH: mf.BranchRef(None, states[0] if states else "")}:
                return False
    except TensorDBError:
        return False
    return True


def _initialise(store: Store) -> None:
    versions = VersionStore(store)
    state_key = versions.put_state(mf.DatasetState())
    versions.publish_refs({DEFAULT_BRANCH: mf.BranchRef(None, state_key)})
    # The marker goes last: a dataset whose creation was interrupted does not exist.
    store.publish(mf.DATASET_KEY, mf.encode_dataset_marker(time.time()))


def load(path: str | Store, read_only: bool = False, lock_timeout: float = 0.0) -> Dataset:
    """Open an existing dataset. ``path@branch`` or ``path@commit_id`` opens that version."""
    location, address = _split_address(path)
    store = open_store(location)
    try:
        mf.decode_dataset_marker(store.get(mf.DATASET_KEY), f"{store.url}/{mf.DATASET_KEY}")
    except KeyNotFoundError:
        raise DatasetNotFoundError(f"no tensordb dataset at {store.url!r}") from None
    versions = VersionStore(store)
    # An old commit is read-only by nature: opening it takes no lock, even without read_only.
    checkout = versions.resolve(address or DEFAULT_BRANCH)
    if read_only or checkout.detached:
        return Dataset(store, checkout, None)
    lock = store.acquire_writer_lock(lock_timeout)
    try:
        # Resolved again under the lock: another writer may have moved the branch meanwhile.
        checkout = versions.resolve(address or DEFAULT_BRANCH)
        return Dataset(store, checkout, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def dataset(path: str | Store, read_only: bool = False, overwrite: bool = False, lock_timeout: float = 0.0) -> Dataset:
    """Open the dataset at ``path``, creating it when there is none."""
    if overwrite or not exists(path):
        return empty(path, overwrite=overwrite, lock_timeout=lock_timeout)
    return load(path, read_only=read_only, lock_timeout=lock_timeout)


def deepcopy(src: str, dest: str, overwrite: bool = False, progress: bool = True) -> Dataset:
    """Copy a dataset with its whole history; returns the copy, open for writing."""
    source = open_store(_split_address(src)[0])
    if not source.exists(mf.DATASET_KEY):
        raise DatasetNotFoundError(f"no tensordb dataset at {src!r}")
    target = open_store(dest)
    lock = target.acquire_writer_lock()
    try:
        if target.list():
            if not overwrite:
                raise DatasetExistsError(f"{target.url} is not empty; pass overwrite=True to replace it")
            target.clear()
        # Refs are read first and written last, so the copy is one consistent version of the source.
        refs = source.get(mf.REFS_KEY)
        keys = [k for k in source.list() if k not in (mf.REFS_KEY, mf.DATASET_KEY)]
        for key in tqdm(keys, desc="deepcopy", unit="file", disable=not progress):
            target.put(key, source.get(key))
        target.publish(mf.REFS_KEY, refs)
        target.publish(mf.DATASET_KEY, source.get(mf.DATASET_KEY))
        ref = VersionStore(target).refs()[DEFAULT_BRANCH]
        return Dataset(target, Checkout(DEFAULT_BRANCH, ref.head, ref.state), lock)
    except BaseException:
        lock.release()
        raise


def verify(path: str | Store) -> VerifyReport:
    """Check every checksum of the dataset at ``path``, even one too damaged to open."""
    store = open_store(_split_address(path)[0])
    if not store.list():
        raise DatasetNotFoundError(f"no tensordb dataset at {store.url!r}")
    return maintenance.verify(store)
