"""Branches, commits and snapshots, as stored in ``refs``, ``commits/`` and ``states/``."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from ..errors import DataCorruptionError, KeyNotFoundError, VersionError
from ..format import envelope
from ..format import manifest as mf
from ..storage import Store

DEFAULT_BRANCH = "main"


@dataclass(frozen=True)
class Checkout:
    """What a dataset handle looks at: a branch's working state, or one commit (read-only)."""

    branch: str | None
    commit: str | None  # for a branch: its head commit; else the commit checked out
    state_key: str

    @property
    def detached(self) -> bool:
        return self.branch is None


class VersionStore:
    """Reads and writes the version records of one dataset."""

    def __init__(self, store: Store):
        self.store = store

    def _get(self, key: str, what: str) -> bytes:
        """A record's bytes; a file larger than any record can be is damage, refused before it is read."""
        try:
            return self.store.get(key, max_bytes=envelope.MAX_RECORD_BYTES)
        except KeyNotFoundError:
            raise DataCorruptionError(f"{self.store.url}: {what} is missing (file {key!r})") from None

    def refs(self) -> dict[str, mf.BranchRef]:
        return self.refs_versioned()[0]

    def refs_versioned(self) -> tuple[dict[str, mf.BranchRef], str]:
        """The branches and the version of the refs file they were read from (for :meth:`swap_refs`)."""
        try:
            data, version = self.store.get_versioned(mf.REFS_KEY, max_bytes=envelope.MAX_RECORD_BYTES)
        except KeyNotFoundError:
            raise DataCorruptionError(f"{self.store.url}: the refs file is missing (file {mf.REFS_KEY!r})") from None
        return mf.decode_refs(data, f"{self.store.url}/{mf.REFS_KEY}"), version

    def state(self, key: str) -> mf.DatasetState:
        return mf.decode_state(self._get(key, f"snapshot {key!r}"), f"{self.store.url}/{key}")

    def commit_record(self, commit_id: str, named_by: str | None = None) -> mf.CommitRecord:
        """The record of ``commit_id``; ``named_by`` says which record points at it (then a missing one is damage)."""
        key = mf.COMMIT_PREFIX + commit_id
        if not _is_hex(commit_id) or not self.store.exists(key):
            if named_by is not None:
                raise DataCorruptionError(
                    f"{self.store.url}: commit {commit_id!r} named by {named_by} is missing (file {key!r})"
                )
            raise VersionError(f"{self.store.url}: no branch or commit named {commit_id!r}")
        return mf.decode_commit(self._get(key, f"commit {commit_id!r}"), f"{self.store.url}/{key}")

    def put_state(self, state: mf.DatasetState) -> str:
        key = f"{mf.STATE_PREFIX}{uuid.uuid4().hex}"
        self.store.put(key, mf.encode_state(state))
        return key

    def publish_refs(self, refs: dict[str, mf.BranchRef]) -> None:
        self.store.publish(mf.REFS_KEY, mf.encode_refs(refs))

    def swap_refs(self, refs: dict[str, mf.BranchRef], expected: str | None) -> None:
        """Replace the refs file only if it is still at version ``expected``; else ``PreconditionFailedError``."""
        self.store.swap(mf.REFS_KEY, mf.encode_refs(refs), expected)

    def resolve(self, address: str) -> Checkout:
        """A branch name or a commit id (or a unique prefix of one) to a checkout."""
        refs = self.refs()
        if address in refs:
            ref = refs[address]
            return Checkout(address, ref.head, ref.state)
        commit_id = self._expand(address)
        record = self.commit_record(commit_id)
        return Checkout(None, record.id, record.state)

    def _expand(self, prefix: str) -> str:
        if not _is_hex(prefix) or len(prefix) < 4:
            raise VersionError(
                f"{self.store.url}: no branch or commit named {prefix!r}; branches: {sorted(self.refs())}"
            )
        matches = [k[len(mf.COMMIT_PREFIX) :] for k in self.store.list(mf.COMMIT_PREFIX + prefix)]
        if len(matches) != 1:
            kind = "no" if not matches else "an ambiguous"
            raise VersionError(f"{self.store.url}: {kind} commit id {prefix!r}; branches: {sorted(self.refs())}")
        return matches[0]

    def new_commit(self, parent: str | None, branch: str, message: str, state_key: str) -> mf.CommitRecord:
        record = mf.CommitRecord(uuid.uuid4().hex, parent, branch, message, time.time(), state_key)
        self.store.put(mf.COMMIT_PREFIX + record.id, mf.encode_commit(record))
        return record

    def history(self, commit_id: str | None) -> list[mf.CommitRecord]:
        """Commits from ``commit_id`` back to the first, newest first."""
        out, seen = [], set()
        named_by = "the checked-out version"
        while commit_id is not None and commit_id not in seen:
            seen.add(commit_id)
            record = self.commit_record(commit_id, named_by)
            out.append(record)
            commit_id, named_by = record.parent, f"the parent link of commit {record.id!r}"
        return out


def _is_hex(text: str) -> bool:
    return bool(text) and len(text) <= 64 and all(c in "0123456789abcdef" for c in text)
