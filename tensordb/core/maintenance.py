"""Checking a dataset's files (verify) and removing unreachable ones (vacuum)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from ..errors import TensorDBError
from ..format import chunk as chunkfmt
from ..format import envelope
from ..format import manifest as mf
from ..storage import LocalStore, Store
from . import attachments, index_catalog
from .chunk_io import check_reference, chunk_label
from .versions import VersionStore


@dataclass
class VerifyReport:
    """What ``verify`` checked and every problem it found."""

    files_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _reachable_states(versions: VersionStore, report: VerifyReport) -> dict[str, mf.DatasetState]:
    states: dict[str, mf.DatasetState] = {}
    keys: set[str] = set()
    try:
        refs = versions.refs()
        report.files_checked += 1
    except TensorDBError as e:
        report.problems.append(str(e))
        refs = {}
    keys.update(ref.state for ref in refs.values())
    stored = {k[len(mf.COMMIT_PREFIX) :] for k in versions.store.list(mf.COMMIT_PREFIX)}
    # Every commit a branch or another commit points at must exist.
    named = {ref.head: f"branch {name!r} in the refs file" for name, ref in refs.items() if ref.head is not None}
    for commit_id in sorted(stored):
        try:
            record = versions.commit_record(commit_id)
            keys.add(record.state)
            report.files_checked += 1
            if record.parent is not None:
                named.setdefault(record.parent, f"the parent link of commit {record.id!r}")
        except TensorDBError as e:
            report.problems.append(str(e))
    for commit_id, named_by in sorted(named.items()):
        if commit_id not in stored:
            report.problems.append(
                f"{versions.store.url}: commit {commit_id!r} named by {named_by} is missing "
                f"(file '{mf.COMMIT_PREFIX}{commit_id}')"
            )
    for key in sorted(keys):
        try:
            states[key] = versions.state(key)
            report.files_checked += 1
        except TensorDBError as e:
            report.problems.append(str(e))
    return states


def _chunk_facts(store: Store, t: mf.TensorState, key: str, report: VerifyReport) -> tuple[int, int, int] | None:
    """Check every checksum of chunk ``key``; its (rows, header checksum, file size), or None if damaged."""
    what = chunk_label(t.meta, key)
    try:
        data = memoryview(store.get(key))
        decoded = chunkfmt.decode_chunk(data, what)
        report.files_checked += 1
        return decoded.nrows, envelope.header_checksum(data), len(data)
    except TensorDBError as e:
        report.problems.append(f"{what}: {e}" if what not in str(e) else str(e))
        return None


def _verify_chunks(store: Store, states: list[mf.DatasetState], report: VerifyReport) -> None:
    """Each chunk file is read once; each distinct reference to it must name its content, rows and size."""
    facts: dict[str, tuple[int, int, int] | None] = {}
    checked: set[mf.ChunkRef] = set()
    for state in states:
        for t in state.tensors.values():
            for key in t.chunk_keys:
                ref = t.reference(key)
                if ref in checked:
                    continue
                checked.add(ref)
                if key not in facts:
                    facts[key] = _chunk_facts(store, t, key, report)
                if facts[key] is not None:
                    try:
                        check_reference(ref, chunk_label(t.meta, key), *facts[key])
                    except TensorDBError as e:
                        report.problems.append(str(e))


def _verify_indexes(store: Store, states: list[mf.DatasetState], report: VerifyReport) -> None:
    """Each index file any state lists is read and loaded once, as a query would: checksums, what the state
    says it holds, and the soundness of its contents."""
    checked: set[str] = set()
    for state in states:
        for ref in state.indexes.values():
            if ref.key in checked:
                continue
            checked.add(ref.key)
            try:
                index_catalog.open_index(store, ref)
                report.files_checked += 1
            except TensorDBError as e:
                report.problems.append(f"index {ref.name!r} on tensor {ref.tensor!r}: {e}")


def verify(store: Store) -> VerifyReport:
    """Check the checksum and structure of every file that any branch or commit uses."""
    report = VerifyReport()
    versions = VersionStore(store)
    try:
        mf.decode_dataset_marker(store.get(mf.DATASET_KEY), f"{store.url}/{mf.DATASET_KEY}")
        report.files_checked += 1
    except TensorDBError as e:
        report.problems.append(str(e))
    states = list(_reachable_states(versions, report).values())
    _verify_chunks(store, states, report)
    _verify_indexes(store, states, report)
    names = attachments.names(store)
    records = {}
    for name in names:
        try:
            records[name] = attachments.read(store, name)
            report.files_checked += 1
        except TensorDBError as e:
            report.problems.append(f"attachment {name!r}: {e}")
    report.problems += attachments.missing_requirements(store, records)
    return report


def vacuum(store: Store, grace_seconds: float = 3600.0) -> int:
    """Delete chunks, index files and snapshots that no branch or commit uses, once older than ``grace_seconds``.

    The grace period protects readers still holding an older working snapshot.
    Returns the number of files removed.
    """
    report = VerifyReport()
    states = _reachable_states(VersionStore(store), report)
    if report.problems:
        raise TensorDBError("vacuum refused: the dataset has damaged records: " + "; ".join(report.problems))
    live = set(states) | {k for s in states.values() for k in s.file_keys()}
    cutoff = time.time() - grace_seconds
    removed = 0
    for key in store.list(mf.CHUNK_PREFIX) + store.list(mf.INDEX_PREFIX) + store.list(mf.STATE_PREFIX):
        if key not in live and store.modified_time(key) <= cutoff:
            store.delete(key)
            removed += 1
    if isinstance(store, LocalStore):
        for path in store.temp_files():
            if os.stat(path).st_mtime <= cutoff:
                os.unlink(path)
                removed += 1
    return removed
