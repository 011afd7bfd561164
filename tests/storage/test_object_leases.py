"""Heartbeat leases on stores with compare-and-swap but no flock (ObjectLeases)."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from tensordb.errors import LockedError, NetworkError, StorageError
from tensordb.storage import MemoryStore
from tensordb.storage.object_leases import ObjectLeases


class FakeClock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store():
    return MemoryStore(f"leases-{uuid.uuid4().hex}")


@pytest.fixture
def clock():
    return FakeClock()


def record(store, name: str) -> dict:
    return json.loads(store.get(f"locks/{name}"))


def test_hold_is_exclusive_and_release_deletes_it(store, clock):
    leases = ObjectLeases(store, ttl=30, clock=clock)  # renewals every 10 real s: none during the test
    assert not leases.lease_held("jobs/a")
    lease = leases.hold_lease("jobs/a")
    assert leases.lease_held("jobs/a") and not leases.lease_held("jobs/b")
    rec = record(store, "jobs/a")
    assert rec == {"format": 1, "holder": lease.holder, "expires": clock.now + 30}
    with pytest.raises(LockedError, match="jobs/a"):
        leases.hold_lease("jobs/a")
    with pytest.raises(LockedError):
        ObjectLeases(store, ttl=30, clock=clock).hold_lease("jobs/a")  # another process, same store
    lease.release()
    lease.release()  # twice is harmless
    assert not store.exists("locks/jobs/a") and not leases.lease_held("jobs/a")
    assert not lease.lost
    leases.hold_lease("jobs/a").release()


def race_for(leases: ObjectLeases, name: str, threads: int) -> tuple[list, int]:
    """``threads`` threads try to take the lease ``name`` at once: the leases won, and how many were refused."""
    barrier = threading.Barrier(threads)
    won, refused = [], []

    def take():
        barrier.wait()
        try:
            won.append(leases.hold_lease(name))
        except LockedError:
            refused.append(1)

    racers = [threading.Thread(target=take) for _ in range(threads)]
    for t in racers:
        t.start()
    for t in racers:
        t.join()
    return won, len(refused)


def test_one_winner_among_racing_threads(store, clock):
    leases = ObjectLeases(store, ttl=30, clock=clock)
    won, refused = race_for(leases, "writer", 8)
    assert len(won) == 1 and refused == 7
    assert record(store, "writer")["holder"] == won[0].holder
    won[0].release()


def test_it_expires_after_ttl_and_is_taken_over(store, clock):
    leases = ObjectLeases(store, ttl=30, clock=clock)
    first = leases.hold_lease("w")
    clock.now += 29.9
    assert leases.lease_held("w")
    with pytest.raises(LockedError):
        leases.hold_lease("w")
    clock.now += 0.2  # the holder stopped renewing 30.1 s ago: it died, or its heartbeat stopped
    assert not leases.lease_held("w")
    second = leases.hold_lease("w")
    assert record(store, "w")["holder"] == second.holder
    assert not first.renew()  # its next heartbeat sees the new holder
    assert first.lost and not first.active and not second.lost
    first.release()  # a lost lease's release leaves the new holder's record alone
    assert record(store, "w")["holder"] == second.holder
    second.release()
    assert not store.exists("locks/w")


def test_renewal_keeps_it_alive(store, clock):
    leases = ObjectLeases(store, ttl=30, clock=clock)
    lease = leases.hold_lease("w")
    for _ in range(5):
        clock.now += 20
        assert lease.renew()
    assert record(store, "w")["expires"] == clock.now + 30
    clock.now += 25
    assert leases.lease_held("w")
    lease.release()


def test_a_lease_whose_record_vanished_is_lost(store, clock):
    leases = ObjectLeases(store, ttl=30, clock=clock)
    lease = leases.hold_lease("w")
    store.delete("locks/w")
    assert not lease.renew() and lease.lost


def test_drop_lease_gives_up_only_an_expired_lease(store, clock):
    leases = ObjectLeases(store, ttl=30, clock=clock)
    leases.drop_lease("gone")  # absent: nothing to do
    assert not store.exists("locks/gone")
    lease = leases.hold_lease("job")
    leases.drop_lease("job")
    assert leases.lease_held("job")
    clock.now += 31
    leases.drop_lease("job")
    assert not leases.lease_held("job")
    assert not lease.renew() and lease.lost
    taker = leases.hold_lease("job")  # the given-up record reads as free
    leases.drop_lease("job")
    assert leases.lease_held("job") and taker.active


def test_drop_lease_never_removes_a_lease_taken_while_it_runs(store, clock):
    """Before: drop_lease expired the record by swap, then deleted it unconditionally, so a taker that
    swapped in between lost its lease to the delete and a third taker could hold it at the same time."""
    leases = ObjectLeases(store, ttl=30, clock=clock)
    leases.hold_lease("job")
    clock.now += 31
    original_swap = store.swap
    taken = []

    def swap_then_a_taker_arrives(key, data, expected):
        original_swap(key, data, expected)
        if not taken:
            taken.append(None)  # once: the taker's own swap passes through here too
            taken[0] = ObjectLeases(store, ttl=30, clock=clock).hold_lease("job")  # another process

    store.swap = swap_then_a_taker_arrives
    leases.drop_lease("job")
    store.swap = original_swap
    assert taken[0].active and leases.lease_held("job")
    with pytest.raises(LockedError):
        ObjectLeases(store, ttl=30, clock=clock).hold_lease("job")  # a third process


def test_unreadable_record_counts_as_expired(store, clock):
    leases = ObjectLeases(store, ttl=30, clock=clock)
    store.put("locks/w", b"\xff not json")
    assert not leases.lease_held("w")
    lease = leases.hold_lease("w")
    assert leases.lease_held("w")
    lease.release()
    store.put("locks/x", json.dumps({"format": 1, "holder": "h", "expires": "soon"}).encode())
    assert not leases.lease_held("x")
    leases.drop_lease("x")
    assert not leases.lease_held("x")
    leases.hold_lease("x")


def test_lease_names_are_checked_and_ttl_positive(store):
    leases = ObjectLeases(store)
    with pytest.raises(StorageError, match="invalid"):
        leases.hold_lease("../x")
    with pytest.raises(ValueError, match="ttl"):
        ObjectLeases(store, ttl=0)


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_heartbeat_thread_renews_every_third_of_ttl(store, clock):
    leases = ObjectLeases(store, ttl=0.3, clock=clock)  # beats every 0.1 real s; expiry follows the fake clock
    with leases.hold_lease("w") as lease:
        for _ in range(3):
            clock.now += 0.25  # a little less than ttl: alive only if the thread renews before the next step
            assert wait_for(lambda: record(store, "w")["expires"] == clock.now + 0.3)
            assert leases.lease_held("w") and lease.active
    assert not store.exists("locks/w") and not lease.lost


class FlakyStore(MemoryStore):
    """A store whose swaps of records naming ``blocked`` fail with a network error: one holder is cut off."""

    blocked = ""
    failed = 0

    def swap(self, key, data, expected):
        if self.blocked and self.blocked.encode() in data:
            self.failed += 1
            raise NetworkError(f"{self.url}: {key}: unreachable (test)")
        super().swap(key, data, expected)


def test_a_holder_whose_heartbeat_stops_loses_it_after_ttl(clock):
    store = FlakyStore(f"flaky-{uuid.uuid4().hex}")
    leases = ObjectLeases(store, ttl=0.3, clock=clock)
    holder = leases.hold_lease("w")
    start = clock.now
    store.blocked = holder.holder  # its renewals now fail; it keeps trying and does not raise
    assert wait_for(lambda: store.failed >= 3)
    assert not holder.lost and holder.active  # a failed renewal is not a loss
    clock.now = start + 0.29
    assert leases.lease_held("w")
    clock.now = start + 0.31
    assert not leases.lease_held("w")
    taker = ObjectLeases(store, ttl=0.3, clock=clock).hold_lease("w")
    store.blocked = ""  # the holder reaches the store again: its next beat finds the taker
    assert wait_for(lambda: holder.lost)
    assert not holder.active
    assert record(store, "w")["holder"] == taker.holder and not taker.lost
    holder.release()
    assert store.exists("locks/w")
    taker.release()
    assert not store.exists("locks/w")


def test_a_paused_holder_whose_clock_lags_loses_it_to_a_taker():
    store = MemoryStore(f"pause-{uuid.uuid4().hex}")
    holder = ObjectLeases(store, ttl=0.3).hold_lease("w")
    # A taker whose clock reads 1 s later sees the record as expired: as after a 1 s pause of the holder.
    taker = ObjectLeases(store, ttl=0.3, clock=lambda: time.time() + 1.0).hold_lease("w")
    assert wait_for(lambda: holder.lost)
    assert record(store, "w")["holder"] == taker.holder
    taker.release()


def test_leases_on_s3(s3_url, clock):
    from tensordb.storage.object_store import S3Store

    s3 = S3Store(s3_url)
    leases = ObjectLeases(s3, ttl=30, clock=clock)
    won, refused = race_for(leases, "writer", 4)
    assert len(won) == 1 and refused == 3  # If-None-Match: one create wins
    first = won[0]
    assert leases.lease_held("writer") and json.loads(s3.get("locks/writer"))["holder"] == first.holder
    assert first.renew()  # If-Match on the etag just read
    clock.now += 31
    second = leases.hold_lease("writer")  # take-over of the expired lease
    assert not first.renew() and first.lost
    first.release()
    assert json.loads(s3.get("locks/writer"))["holder"] == second.holder
    second.release()
    assert not s3.exists("locks/writer") and not leases.lease_held("writer")
