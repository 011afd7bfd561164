"""Creating, opening and copying datasets."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed

from tqdm.auto import tqdm

from ..errors import (
    DatasetExistsError,
    DatasetNotFoundError,
    ForeignFilesError,
    InvalidNameError,
    KeyNotFoundError,
    PreconditionFailedError,
    TensorDBError,
)
from ..format import envelope
from ..format import manifest as mf
from ..storage import Store, open_store
from . import attachments, maintenance
from .dataset import Dataset
from .maintenance import VerifyReport
from .versions import DEFAULT_BRANCH, Checkout, VersionStore

#: Object-storage credentials (see ``empty``); ``None`` reads them from the environment.
Creds = Mapping[str, str] | None

#: The top-level entries a dataset is made of; anything else in its folder belongs to someone else.
OWN_ENTRIES = frozenset(
    name.rstrip("/")
    for name in (
        mf.DATASET_KEY,
        mf.REFS_KEY,
        mf.CHUNK_PREFIX,
        mf.STATE_PREFIX,
        mf.INDEX_PREFIX,
        mf.COMMIT_PREFIX,
        attachments.PREFIX,
    )
)


def _split_address(path: str | Store) -> tuple[str | Store, str | None]:
    """``"./db@abc123"`` → ``("./db", "abc123")``; the ``@`` must be in the last path component."""
    if isinstance(path, Store):
        return path, None
    head, sep, tail = path.rpartition("@")
    if sep and tail and "/" not in tail and os.sep not in tail:
        return head, tail
    return path, None


def _open(location: str | Store, creds: Creds) -> Store:
    """The store at ``location``; on object storage, the dataset's immutable files are cached locally."""
    return open_store(location, creds, immutable_prefixes=mf.IMMUTABLE_PREFIXES)


def exists(path: str | Store, creds: Creds = None) -> bool:
    """Whether a dataset lives at ``path``."""
    store = _open(_split_address(path)[0], creds)
    return store.exists(mf.DATASET_KEY)


def empty(path: str | Store, overwrite: bool = False, lock_timeout: float = 0.0, creds: Creds = None) -> Dataset:
    """Create a new, empty dataset at ``path``: a directory, ``s3://bucket/prefix`` or ``mem://name``.

    ``overwrite=True`` replaces a tensordb dataset; a folder holding anything else is never touched.
    ``creds`` (``s3://`` only): ``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``,
    ``endpoint_url``, ``aws_region``; without it the AWS environment variables and profile files are used.
    Credentials are never written into the dataset.
    """
    store = _store_to_create(path, creds)
    _check_replaceable(store, overwrite)  # before locking: a folder that is not ours gets no LOCK file
    lock = store.acquire_writer_lock(lock_timeout)
    try:
        _check_replaceable(store, overwrite)  # again under the lock: another creator may have been first
        if store.list():
            store.clear()
        _initialise(store)
        versions = VersionStore(store)
        ref = versions.refs()[DEFAULT_BRANCH]
        return Dataset(store, Checkout(DEFAULT_BRANCH, ref.head, ref.state), lock)
    except BaseException:
        lock.release()
        raise


def _store_to_create(path: str | Store, creds: Creds) -> Store:
    """The store for a new dataset; refuses a path that ``load`` would read as ``path@version``."""
    location, address = _split_address(path)
    if address is not None:
        raise InvalidNameError(
            f"cannot create a dataset at {path!r}: its last part holds '@', so opening it again would read "
            f"{location!r} at version {address!r}; choose a path without '@' in its last part"
        )
    return _open(path, creds)


def _check_replaceable(store: Store, overwrite: bool) -> None:
    """Allow a new dataset only in an empty folder, over an interrupted creation, or over a dataset (``overwrite``)."""
    found = store.entries()
    foreign = [name for name in found if name not in OWN_ENTRIES]
    if foreign:
        shown = ", ".join(repr(name) for name in foreign[:5])
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise ForeignFilesError(
            f"{store.url} holds {shown}{more}, which are not part of a tensordb dataset; a dataset is "
            f"created only in an empty folder, and overwrite=True replaces only a tensordb dataset. "
            f"Nothing was created or deleted: choose another path"
        )
    if found and store.list() and not overwrite and not _interrupted_creation(store):
        kind = "a dataset" if store.exists(mf.DATASET_KEY) else "the files of a damaged or unfinished dataset"
        raise DatasetExistsError(f"{store.url} already holds {kind}; pass overwrite=True to replace it")


def _interrupted_creation(store: Store) -> bool:
    """Whether ``store`` holds only what an ``empty()`` that failed or crashed before its marker left.

    That is: no marker, and at most an empty first snapshot plus refs naming only it.
    Such leftovers hold no data, so creating the dataset again may replace them.
    """
    keys = store.list()
    states = [k for k in keys if k.startswith(mf.STATE_PREFIX)]
    if store.exists(mf.DATASET_KEY) or len(states) > 1 or set(keys) - set(states) - {mf.REFS_KEY}:
        return False
    try:
        if states and mf.decode_state(store.get(states[0], max_bytes=envelope.MAX_RECORD_BYTES), states[0]).tensors:
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
    try:
        # Created only if absent: of two processes creating one dataset on object storage, one wins.
        versions.swap_refs({DEFAULT_BRANCH: mf.BranchRef(None, state_key)}, None)
    except PreconditionFailedError:
        raise DatasetExistsError(f"{store.url}: another process created a dataset here at the same time") from None
    # The marker goes last: a dataset whose creation was interrupted does not exist.
    store.publish(mf.DATASET_KEY, mf.encode_dataset_marker(time.time()))


def load(path: str | Store, read_only: bool = False, lock_timeout: float = 0.0, creds: Creds = None) -> Dataset:
    """Open an existing dataset. ``path@branch`` or ``path@commit_id`` opens that version.

    On object storage several processes may write at once: each commit is a compare-and-swap,
    rebased onto the other writers' commits where it does not conflict with them.
    """
    location, address = _split_address(path)
    store = _open(location, creds)
    try:
        marker = store.get(mf.DATASET_KEY, max_bytes=envelope.MAX_RECORD_BYTES)
    except KeyNotFoundError:
        raise DatasetNotFoundError(f"no tensordb dataset at {store.url!r}") from None
    mf.decode_dataset_marker(marker, f"{store.url}/{mf.DATASET_KEY}")
    versions = VersionStore(store)
    # An old commit is read-only by nature: opening it takes no lock, even without read_only.
    checkout = versions.resolve(address or DEFAULT_BRANCH)
    if read_only or checkout.detached:
        return Dataset(store, checkout, None)
    lock = store.acquire_writer_lock(lock_timeout, create=False)
    try:
        # Resolved again under the lock: another writer may have moved the branch meanwhile.
        checkout = versions.resolve(address or DEFAULT_BRANCH)
        return Dataset(store, checkout, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def dataset(
    path: str | Store, read_only: bool = False, overwrite: bool = False, lock_timeout: float = 0.0, creds: Creds = None
) -> Dataset:
    """Open the dataset at ``path``, creating it when there is none."""
    location, address = _split_address(path)
    if address is None:  # one store for the look and the open (on S3 each store is a client and a cache)
        path, creds = _open(location, creds), None
    if overwrite or not exists(path, creds):
        return empty(path, overwrite=overwrite, lock_timeout=lock_timeout, creds=creds)
    return load(path, read_only=read_only, lock_timeout=lock_timeout, creds=creds)


def deepcopy(
    src: str | Store,
    dest: str | Store,
    overwrite: bool = False,
    progress: bool = True,
    src_creds: Creds = None,
    dest_creds: Creds = None,
) -> Dataset:
    """Copy a dataset with its whole history, between any two stores; returns the copy, open for writing."""
    source = _open(_split_address(src)[0], src_creds)
    if not source.exists(mf.DATASET_KEY):
        raise DatasetNotFoundError(f"no tensordb dataset at {source.url!r}")
    target = _store_to_create(dest, dest_creds)
    _refuse_overlap(source, target)
    _check_replaceable(target, overwrite)
    lock = target.acquire_writer_lock()
    try:
        _check_replaceable(target, overwrite)
        if target.list():
            target.clear()
        # Refs are read first and written last, so the copy is one consistent version of the source.
        refs = source.get(mf.REFS_KEY)
        keys = [k for k in source.list() if k not in (mf.REFS_KEY, mf.DATASET_KEY)]
        _copy_files(source, target, keys, progress)
        target.publish(mf.REFS_KEY, refs)
        target.publish(mf.DATASET_KEY, source.get(mf.DATASET_KEY))
        ref = VersionStore(target).refs()[DEFAULT_BRANCH]
        return Dataset(target, Checkout(DEFAULT_BRANCH, ref.head, ref.state), lock)
    except BaseException:
        lock.release()
        raise


#: Files copied at once by ``deepcopy``: object stores answer each request after a round trip.
COPY_IN_FLIGHT = 8


def _copy_files(source: Store, target: Store, keys: list[str], progress: bool) -> None:
    """Copy ``keys`` from ``source`` to ``target``, several at a time, with a progress bar."""
    with ThreadPoolExecutor(COPY_IN_FLIGHT, thread_name_prefix="tensordb-copy") as pool, tqdm(
        total=len(keys), desc="deepcopy", unit="file", disable=not progress
    ) as bar:
        for done in as_completed([pool.submit(lambda k=key: target.put(k, source.get(k))) for key in keys]):
            done.result()
            bar.update(1)


def _refuse_overlap(source: Store, target: Store) -> None:
    """A copy onto its source, or into or around it, would clear the source before reading it."""
    a, b = _location(source), _location(target)
    if a == b or b.startswith(a + "/") or a.startswith(b + "/"):
        relation = "is" if a == b else "lies inside" if b.startswith(a + "/") else "contains"
        raise InvalidNameError(
            f"cannot deepcopy {source.url!r} to {target.url!r}: the target {relation} the source; "
            f"copy to a path outside it"
        )


def _location(store: Store) -> str:
    """Where a store's objects live, with symbolic links resolved for local paths."""
    return store.url if "://" in store.url else os.path.realpath(store.url)


def verify(path: str | Store, creds: Creds = None) -> VerifyReport:
    """Check every checksum of the dataset at ``path``, even one too damaged to open."""
    store = _open(_split_address(path)[0], creds)
    if not store.list():
        raise DatasetNotFoundError(f"no tensordb dataset at {store.url!r}")
    return maintenance.verify(store)
