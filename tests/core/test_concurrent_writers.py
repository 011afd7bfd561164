"""Lock-free commits with several writers: rebase of writes that do not conflict, ConflictError for those that do.

Every test runs on two stores whose writer lock excludes nobody: a test-local
:class:`ConcurrentMemoryStore` (fast, deterministic) and S3 on moto (``s3_url``). Two handles
opened on one store stand for two writers; a handle that did not write since the other
published is stale, so its next write must be rebased (or refused) rather than published over
the other's.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tensordb
from tensordb.errors import ConflictError, PreconditionFailedError
from tensordb.storage.memory import MemoryStore

#: int64 rows of a 1024-byte chunk: rows 0..127 share chunk 0, 128..255 chunk 1, ...
ROWS_PER_CHUNK = 128
dataset_module = importlib.import_module("tensordb.core.dataset")  # `tensordb.core.dataset` is also a function


class _NoLock:
    def release(self) -> None:
        return None


class ConcurrentMemoryStore(MemoryStore):
    """A memory store that behaves like object storage: any number of writers, commits by ``swap`` only.

    ``fail_swaps`` makes the next that many swaps lose as if another writer had swapped first.
    """

    concurrent_writers = True

    def __init__(self, name: str = ""):
        super().__init__(name or uuid.uuid4().hex)
        self.fail_swaps = 0

    def acquire_writer_lock(self, timeout: float = 0.0, create: bool = True) -> _NoLock:
        return _NoLock()

    def swap(self, key: str, data: bytes, expected: str | None) -> None:
        if self.fail_swaps:
            self.fail_swaps -= 1
            raise PreconditionFailedError(f"{self.url}: {key!r} swap lost (injected)")
        super().swap(key, data, expected)


@pytest.fixture(params=["memory", "s3"])
def where(request):
    """Where the dataset lives: a shared ConcurrentMemoryStore, or an s3:// url (each load a new S3Store)."""
    if request.param == "memory":
        return ConcurrentMemoryStore()
    return request.getfixturevalue("s3_url")


def ids_of(ds) -> list[int]:
    return ds.x.numpy().astype(np.int64).tolist()


def fresh(where, address: str | None = None) -> list[int]:
    """The rows of the branch (or commit) as a newly opened reader sees them."""
    if address is not None and not isinstance(where, str):
        reader = tensordb.load(where, read_only=True)
        reader.checkout(address)
    else:
        reader = tensordb.load(where if address is None else f"{where}@{address}", read_only=True)
    return ids_of(reader)


def new_dataset(where, rows: int = 0) -> tensordb.Dataset:
    ds = tensordb.empty(where)
    ds.create_tensor("x", dtype="int64", max_chunk_size=1024)
    if rows:
        ds.extend({"x": np.arange(rows, dtype=np.int64)})
    return ds


# ------------------------------------------------------------------------------ rebased writes


def test_alternating_appends_keep_every_row_in_publish_order(where):
    a = new_dataset(where)
    b = tensordb.load(where)
    published = []
    for i in range(4):
        a.append({"x": i})
        published.append(i)
        b.extend({"x": [100 + i, 200 + i]})
        published += [100 + i, 200 + i]
    assert fresh(where) == published
    assert ids_of(b) == published  # the last writer's handle holds the head it published
    a.append({"x": 9})
    assert ids_of(a) == published + [9]
    assert tensordb.load(where).verify().ok


def test_the_second_writer_does_not_overwrite_the_first(where):
    """Two handles opened on the same head each append one row: both rows stay.

    At 3ebf642 (before lock-free commits) a write published its snapshot with an unconditional
    replace of ``refs``: the second writer's snapshot, computed from the head it opened, did not
    hold the first writer's row, so the final head was ``[0, 1, 2, 20]`` and the acknowledged
    row 10 was lost. This test fails there.
    """
    a = new_dataset(where, rows=3)
    b = tensordb.load(where)
    a.append({"x": 10})
    b.append({"x": 20})
    assert fresh(where) == [0, 1, 2, 10, 20]


def test_a_batch_is_rebased_whole(where):
    a = new_dataset(where, rows=3)
    b = tensordb.load(where)
    with a:
        a.append({"x": 10})
        b.extend({"x": [20, 21]})  # lands while a's batch is open
        a.extend({"x": [11, 12]})
        a.x[0] = -1  # an old row of a chunk b did not rewrite
    assert fresh(where) == [-1, 1, 2, 20, 21, 10, 11, 12]
    assert ids_of(a) == [-1, 1, 2, 20, 21, 10, 11, 12]


def test_updates_of_rows_in_different_chunks_both_land(where):
    a = new_dataset(where, rows=3 * ROWS_PER_CHUNK)
    b = tensordb.load(where)
    a.x[5] = -5  # chunk 0
    b.x[2 * ROWS_PER_CHUNK + 1] = -7  # chunk 2, from a head that has not seen a's update
    expected = list(range(3 * ROWS_PER_CHUNK))
    expected[5], expected[2 * ROWS_PER_CHUNK + 1] = -5, -7
    assert fresh(where) == expected
    b.update(ROWS_PER_CHUNK + 3, {"x": -3})  # Dataset.update, chunk 1
    expected[ROWS_PER_CHUNK + 3] = -3
    assert fresh(where) == expected


def test_commit_after_the_other_writers_writes_commits_both(where):
    a = new_dataset(where, rows=2)
    b = tensordb.load(where)
    b.append({"x": 20})
    a.append({"x": 10})
    b.append({"x": 21})
    commit = a.commit("both")  # a's handle had not seen b's second row: the commit follows the head
    assert fresh(where, commit) == [0, 1, 20, 10, 21]
    assert ids_of(a) == [0, 1, 20, 10, 21] and not a.has_head_changes
    b.append({"x": 22})  # b, behind a's commit, rebases onto it
    assert fresh(where) == [0, 1, 20, 10, 21, 22]
    assert fresh(where, commit) == [0, 1, 20, 10, 21]


def test_create_index_and_a_concurrent_append_both_land(where):
    a = tensordb.empty(where)
    a.create_tensor("x", dtype="int64")
    a.create_tensor("embedding", htype="embedding", dtype="float32")
    rng = np.random.default_rng(0)
    a.extend({"x": np.arange(40), "embedding": rng.standard_normal((40, 8)).astype(np.float32)})
    b = tensordb.load(where)
    b.extend({"x": [40, 41, 42], "embedding": rng.standard_normal((3, 8)).astype(np.float32)})
    a.embedding.create_index("v", kind="flat")  # built over a's 40 rows, published after b's append
    reader = tensordb.load(where)
    assert ids_of(reader) == list(range(43))
    info = reader.indexes["v"]
    assert (info["rows"], info["fresh_rows"], info["deleted_rows"]) == (40, 3, 0)
    assert reader.verify().ok


# ------------------------------------------------------------------------------ conflicts


def lose_an_update_race(where) -> tuple[tensordb.Dataset, tensordb.Dataset]:
    """b updates row 1, then a (not having seen it) updates row 2 of the same chunk: a must lose."""
    a = new_dataset(where, rows=ROWS_PER_CHUNK)
    b = tensordb.load(where)
    b.x[1] = -100
    with pytest.raises(ConflictError, match="update tensor 'x'"):
        a.x[2] = -200
    return a, b


def test_an_update_in_a_chunk_the_other_rewrote_conflicts_and_the_handle_keeps_it(where):
    a, _ = lose_an_update_race(where)
    assert ids_of(a)[:3] == [0, 1, -200]  # the loser still reads its own write
    main = fresh(where)
    assert main[:3] == [0, -100, 2]  # the winner's change stands, the loser's did not land
    a.checkout("rescue", create=True)
    assert a.branch == "rescue"
    assert fresh(where, "rescue")[:3] == [0, 1, -200]
    assert fresh(where) == main
    a.append({"x": 7})  # the rescued branch is writable
    assert fresh(where, "rescue")[-1] == 7 and fresh(where) == main


def test_reset_drops_the_conflicting_write_and_shows_the_winners(where):
    a, _ = lose_an_update_race(where)
    a.reset()
    assert ids_of(a)[:3] == [0, -100, 2]
    assert a.branches == ["main"]
    a.x[2] = -200  # on the new head it no longer conflicts
    assert fresh(where)[:3] == [0, -100, -200]


def test_a_handle_in_conflict_refuses_writes_until_resolved(where):
    a, _ = lose_an_update_race(where)
    before = fresh(where)
    for write in (
        lambda: a.append({"x": 1}),
        lambda: a.x.__setitem__(3, 1),
        lambda: a.pop(0),
        lambda: a.commit("no"),
        lambda: a.create_tensor("y"),
        lambda: a.checkout("main"),
    ):
        with pytest.raises(ConflictError, match="reset"):
            write()
    assert fresh(where) == before
    assert ids_of(a)[2] == -200  # still holding its write


def test_a_pop_by_the_other_writer_before_my_update_conflicts(where):
    a = new_dataset(where, rows=3 * ROWS_PER_CHUNK)
    b = tensordb.load(where)
    b.pop(10)  # every later row moves up by one
    with pytest.raises(ConflictError):
        a.x[2 * ROWS_PER_CHUNK] = -1  # row 256 of a's snapshot is row 255 of the head
    expected = [r for r in range(3 * ROWS_PER_CHUNK) if r != 10]
    assert fresh(where) == expected  # no update landed on the wrong row


def test_creating_the_same_tensor_twice_conflicts(where):
    a = new_dataset(where)
    b = tensordb.load(where)
    a.create_tensor("y", dtype="int32")
    with pytest.raises(ConflictError, match="create tensor 'y'"):
        b.create_tensor("y", dtype="float64")
    assert b.y.dtype == np.float64  # b holds its own tensor y
    assert tensordb.load(where).y.dtype == np.int32
    b.reset()
    assert b.y.dtype == np.int32


def test_a_whole_row_extend_conflicts_when_a_tensor_was_added(where):
    a = new_dataset(where, rows=2)
    b = tensordb.load(where)
    a.create_tensor("y", dtype="int64")
    with pytest.raises(ConflictError, match="tensors changed"):
        b.append({"x": 5})  # would leave y one row short
    assert fresh(where) == [0, 1]


# ------------------------------------------------------------------------------ races and lost swaps


def test_threads_appending_on_separate_handles_lose_no_row(where):
    writers, rows_each = 4, 8
    new_dataset(where)
    handles = [tensordb.load(where) for _ in range(writers)]
    acknowledged: list[list[int]] = [[] for _ in range(writers)]
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def write(w: int) -> None:
        start.wait()
        try:
            for k in range(rows_each):
                handles[w].append({"x": w * 1000 + k})
                acknowledged[w].append(w * 1000 + k)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    rows = fresh(where)
    assert len(rows) == writers * rows_each
    assert sorted(rows) == sorted(v for vs in acknowledged for v in vs)
    for w in range(writers):  # each writer's rows land in the order it wrote them
        assert [r for r in rows if r // 1000 == w] == acknowledged[w]


def test_a_write_that_gave_up_does_not_hide_the_other_writers_rows(monkeypatch):
    """After a publish gives up (every swap lost), the handle's next write must still build on the head.

    The give-up path leaves the handle's checkout at the head it rebased onto while its snapshot
    is still the one before: the next write then sees no need to rebase and publishes a snapshot
    without the other writer's rows (an acknowledged write lost).
    """
    monkeypatch.setattr(dataset_module, "MAX_PUBLISH_ATTEMPTS", 3)
    store = ConcurrentMemoryStore()
    a = new_dataset(store)
    b = tensordb.load(store)
    b.append({"x": 1})
    store.fail_swaps = 3
    with pytest.raises(ConflictError, match="gave up"):
        a.append({"x": 2})
    assert fresh(store) == [1]  # nothing of the given-up write was published
    a.append({"x": 3})
    assert fresh(store) == [1, 3]


# ------------------------------------------------------------------------------ random interleavings

Op = tuple  # ("append", who, n) | ("update", who, at) | ("pop", who, at) | ("batch", who, n, at) | ("commit", who)
who = st.integers(0, 1)
at = st.floats(0, 1, exclude_max=True)
operations = st.one_of(
    st.tuples(st.just("append"), who, st.integers(1, 3)),
    st.tuples(st.just("update"), who, at),
    st.tuples(st.just("pop"), who, at),
    st.tuples(st.just("batch"), who, st.integers(1, 2), at),
    st.tuples(st.just("commit"), who),
)


class Writer:
    """One handle of the random test, with its stream of unique values."""

    def __init__(self, ds: tensordb.Dataset, first_value: int):
        self.ds = ds
        self.next_value = first_value

    def value(self) -> int:
        self.next_value += 1
        return self.next_value


def apply_operation(op: Op, writer: Writer, expected: dict[int, int], store: ConcurrentMemoryStore) -> None:
    """Run ``op`` on ``writer``; on success apply it to ``expected`` (id → value, in row order).

    ``id`` rows are only appended; ``v`` rows are updated. Targets are chosen in the handle's
    own (possibly stale) view, so a rebase that landed a write on another row would show.
    """
    ds, kind = writer.ds, op[0]
    view = ds.id.numpy().astype(np.int64).tolist()
    if kind == "commit":
        ids, values = load_rows(store, ds.commit())
        assert dict(zip(ids.tolist(), values.tolist())) == expected  # the commit holds both writers' rows
        return
    if kind == "append":
        new = [writer.value() for _ in range(op[2])]
        ds.extend({"id": new, "v": new})  # appends always rebase: never a ConflictError
        expected.update({i: i for i in new})
        return
    if kind == "batch":
        new = [writer.value() for _ in range(op[2])]
        rows = view + new
        target, value = rows[int(op[3] * len(rows))], writer.value()
        try:
            with ds:
                ds.extend({"id": new, "v": new})
                ds.v[rows.index(target)] = value
        except ConflictError:
            ds.reset()
            return
        expected.update({i: i for i in new})
        expected[target] = value
        return
    if not view:
        return
    row = int(op[2] * len(view))
    try:
        if kind == "update":
            value = writer.value()
            ds.v[row] = value
            assert ds.v[row].numpy() == value  # the handle shows what it published
        else:
            ds.pop(row)
    except ConflictError:
        mine = ds.id.numpy().astype(np.int64).tolist()
        assert (mine == view[:row] + view[row + 1:]) if kind == "pop" else mine == view  # it holds its write
        ds.reset()
        return
    if kind == "update":
        expected[view[row]] = value
    else:
        del expected[view[row]]


def load_rows(where, address: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    reader = tensordb.load(where, read_only=True)
    if address is not None:
        reader.checkout(address)
    return reader.id.numpy().astype(np.int64), reader.v.numpy().astype(np.int64)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, min_size=1, max_size=14))
def test_random_interleavings_lose_no_acknowledged_write(ops):
    store = ConcurrentMemoryStore()
    first = tensordb.empty(store)
    first.create_tensor("id", dtype="int64", max_chunk_size=1024)
    first.create_tensor("v", dtype="int64", max_chunk_size=1024)
    seed = list(range(300))  # three chunks: writes to different chunks rebase, to the same one conflict
    first.extend({"id": seed, "v": seed})
    writers = [Writer(first, 10_000), Writer(tensordb.load(store), 20_000)]
    expected = {i: i for i in seed}
    for op in ops:
        apply_operation(op, writers[op[1]], expected, store)
        ids, values = load_rows(store)
        assert ids.tolist() == list(expected), f"after {op}"  # every acknowledged row once, in publish order
        assert dict(zip(ids.tolist(), values.tolist())) == expected, f"after {op}"


class AnswerLosingStore(ConcurrentMemoryStore):
    """Runs ``after_swap`` once right after a swap landed: it may write through another handle, then raise."""

    after_swap = None

    def swap(self, key: str, data: bytes, expected: str | None) -> None:
        super().swap(key, data, expected)
        hook, self.after_swap = self.after_swap, None
        if hook is not None:
            hook()


@pytest.mark.parametrize("in_batch", [False, True])
def test_a_landed_write_whose_answer_was_lost_keeps_its_chunks_when_another_writer_builds_on_it(in_batch):
    """Before: the failed call judged "not landed" (refs no longer named its snapshot) and deleted chunks
    that the live head, the other writer's, still used; the handle kept a head without the other's rows."""
    from tensordb.errors import NetworkError

    store = AnswerLosingStore()
    a = new_dataset(store, rows=2)
    b = tensordb.load(store)

    def lose_the_answer():
        b.append({"x": 20})  # reads refs holding A's snapshot and builds on it
        raise NetworkError(f"{store.url}: writing 'refs' failed (simulated lost answer)")

    store.after_swap = lose_the_answer
    with pytest.raises(NetworkError):
        if in_batch:
            with a:
                a.append({"x": 10})
        else:
            a.append({"x": 10})
    assert fresh(store) == [0, 1, 10, 20]
    assert tensordb.load(store, read_only=True).verify().ok
    assert ids_of(a) == [0, 1, 10, 20]  # the handle follows the branch: both writes
    a.append({"x": 30})
    assert fresh(store) == [0, 1, 10, 20, 30]


def test_a_whole_row_append_never_rebases_onto_tensors_of_unequal_length():
    """Before: the equal-length check ran on the stale snapshot only, so the replayed row was split."""
    store = ConcurrentMemoryStore()
    a = tensordb.empty(store)
    a.create_tensor("x", dtype="int64")
    a.create_tensor("y", dtype="int64")
    a.extend({"x": [0, 1], "y": [0, 1]})
    b = tensordb.load(store)
    a.x.append(10)  # x is one row longer than y until y catches up
    with pytest.raises(ConflictError, match="different lengths"):
        b.append({"x": 20, "y": 20})
    a.y.append(10)
    reader = tensordb.load(store, read_only=True)
    assert reader.x.numpy().tolist() == [0, 1, 10] and reader.y.numpy().tolist() == [0, 1, 10]


def test_an_append_to_a_tensor_another_writer_deleted_is_a_held_conflict():
    """Before: the replay raised a bare KeyError and the write was not held."""
    store = ConcurrentMemoryStore()
    a = tensordb.empty(store)
    a.create_tensor("x", dtype="int64")
    a.create_tensor("y", dtype="int64")
    b = tensordb.load(store)
    a.delete_tensor("y")
    with pytest.raises(ConflictError, match="'y'"):
        b.y.append(5)
    assert b.y.numpy().tolist() == [5]  # held in the handle
    b.checkout("rescue", create=True)
    assert tensordb.load(store, read_only=True).tensors.keys() == {"x"}


def test_a_held_write_that_a_vacuum_removed_is_a_clear_conflict_not_a_broken_branch():
    store = ConcurrentMemoryStore()
    a = new_dataset(store, rows=3)
    b = tensordb.load(store)
    a.x[0] = 100
    with pytest.raises(ConflictError):
        b.x[1] = 200  # same chunk: conflicts, held
    a.vacuum(grace_seconds=0)  # the held snapshot is named by no branch
    with pytest.raises(ConflictError, match="vacuum"):
        b.checkout("rescue", create=True)
    assert "rescue" not in tensordb.load(store, read_only=True).branches
    b.reset()
    assert ids_of(b) == [100, 1, 2]


class HookedSwapStore(AnswerLosingStore):
    """Also runs ``before_swap`` once, before a swap: it may raise, so that the swap never happens."""

    before_swap = None

    def swap(self, key: str, data: bytes, expected: str | None) -> None:
        hook, self.before_swap = self.before_swap, None
        if hook is not None:
            hook()
        super().swap(key, data, expected)


def live_head(store) -> tuple[list[int], list[str]]:
    """The branch head's rows, and the chunk files it names that are missing."""
    from tensordb.core.versions import VersionStore

    versions = VersionStore(store)
    tensor = versions.state(versions.refs()["main"].state).tensors["x"]
    return fresh(store), [key for key in tensor.chunk_keys if not store.exists(key)]


def network_error():
    from tensordb.errors import NetworkError

    raise NetworkError("writing 'refs' failed (simulated)")


@pytest.mark.parametrize("caught", [False, True])
def test_a_flush_that_landed_with_its_answer_lost_keeps_the_batch_whole(caught):
    """Before: flush did not see that its swap landed, so the block's exit deleted the chunks the live refs
    named, or (error caught, block continued) the block's end published the batch's writes a second time."""
    from tensordb.errors import NetworkError

    store = HookedSwapStore()
    a = new_dataset(store, rows=2)
    with pytest.raises(NetworkError) if not caught else contextlib.nullcontext():
        with a:
            a.append({"x": 10})
            store.after_swap = network_error
            try:
                a.flush()
            except NetworkError:
                if not caught:
                    raise
            a.append({"x": 11})
    expected = [0, 1, 10] if not caught else [0, 1, 10, 11]
    assert live_head(store) == (expected, [])


def test_a_flush_rebased_then_failed_leaves_no_acknowledged_row_out():
    """Before: the rebase moved the handle to the other writer's head but the batch kept its old base,
    so the block's end published over B's acknowledged row, naming chunks the rebase had deleted."""
    from tensordb.errors import NetworkError

    store = HookedSwapStore()
    a = new_dataset(store, rows=2)
    b = tensordb.load(store)
    with a:
        a.append({"x": 10})
        b.append({"x": 20})
        store.before_swap = network_error
        with pytest.raises(NetworkError):
            a.flush()
        a.append({"x": 11})
    assert live_head(store) == ([0, 1, 20, 10, 11], [])


def test_a_snapshot_taken_in_a_batch_survives_the_batch_being_rebased():
    store = ConcurrentMemoryStore()
    a = new_dataset(store, rows=2)
    b = tensordb.load(store)
    with a:
        a.append({"x": 10})
        snap = a.snapshot()
        b.append({"x": 20})
        a.flush()  # rebased onto B's row
        assert ids_of(snap) == [0, 1, 10]  # before: its chunk had been deleted
    assert fresh(store) == [0, 1, 20, 10]


def test_a_commit_or_branch_whose_swap_landed_with_a_refused_retry_is_not_made_twice():
    """The swap lands, its answer is lost, and the retry is refused (412) as refs moved: before, commit made
    a second commit and checkout(create=True) said the branch it had just made already existed."""
    store = AnswerLosingStore()
    a = new_dataset(store, rows=2)

    def refused_retry():
        raise PreconditionFailedError("refs changed (the retry of a swap that landed)")

    store.after_swap = refused_retry
    commit = a.commit("one")
    assert [entry["message"] for entry in a.log(show=False)] == ["one"] and a.commit_id == commit
    store.after_swap = refused_retry
    a.checkout("side", create=True)
    assert a.branch == "side" and sorted(tensordb.load(store, read_only=True).branches) == ["main", "side"]
