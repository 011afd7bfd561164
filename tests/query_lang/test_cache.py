"""BoundedCache: the one bounded, thread-safe LRU behind every process-wide cache."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from query_lang.cache import BoundedCache

MAX_BYTES = 100
MAX_ENTRIES = 5
KEYS = st.integers(0, 9)
COSTS = st.integers(0, 120)
GUARDS = st.frozensets(KEYS, max_size=4)


class Reference:
    """The specification, written plainly: a list of (key, value, cost) from least to most recently used."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, object, int]] = []

    def find(self, key: int) -> int | None:
        return next((i for i, e in enumerate(self.entries) if e[0] == key), None)

    def get(self, key: int) -> object:
        i = self.find(key)
        if i is None:
            return None
        entry = self.entries.pop(i)
        self.entries.append(entry)
        return entry[1]

    def put(self, key: int, value: object, cost: int, guard: frozenset[int]) -> bool:
        if cost > MAX_BYTES:
            return False
        rest = [e for e in self.entries if e[0] != key]
        evicted = set()
        for k, _, _ in list(rest):
            fits = sum(e[2] for e in rest) + cost <= MAX_BYTES and len(rest) + 1 <= MAX_ENTRIES
            if fits:
                break
            if k not in guard:
                rest = [e for e in rest if e[0] != k]
                evicted.add(k)
        if sum(e[2] for e in rest) + cost > MAX_BYTES or len(rest) + 1 > MAX_ENTRIES:
            return False
        self.entries = rest + [(key, value, cost)]
        return True

    def discard(self, key: int) -> bool:
        i = self.find(key)
        if i is not None:
            self.entries.pop(i)
        return i is not None


class CacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cache: BoundedCache[int, object] = BoundedCache(MAX_BYTES, max_entries=MAX_ENTRIES)
        self.model = Reference()
        self.counter = 0

    def _value(self) -> object:
        self.counter += 1
        return ("value", self.counter)

    @rule(key=KEYS)
    def get(self, key: int) -> None:
        assert self.cache.get(key) == self.model.get(key)

    @rule(key=KEYS, cost=COSTS, guard=GUARDS)
    def put(self, key: int, cost: int, guard: frozenset[int]) -> None:
        guarded_before = {k for k in guard if k in self.cache and k != key}
        value = self._value()
        stored = self.cache.put(key, value, cost, keep=guard.__contains__)
        assert stored == self.model.put(key, value, cost, guard)
        assert guarded_before <= set(self.cache.keys()), "an entry the guard keeps was evicted"
        if cost > MAX_BYTES:
            assert not stored

    @rule(key=KEYS, cost=COSTS, guard=GUARDS)
    def get_or_compute(self, key: int, cost: int, guard: frozenset[int]) -> None:
        value = self._value()
        expected = self.model.get(key)
        if expected is None:
            self.model.put(key, value, cost, guard)
            expected = value
        assert self.cache.get_or_compute(key, lambda: value, cost, keep=guard.__contains__) == expected

    @rule(cost=COSTS, guard=GUARDS)
    def admits(self, cost: int, guard: frozenset[int]) -> None:
        probe = Reference()
        probe.entries = list(self.model.entries)
        assert self.cache.admits(cost, keep=guard.__contains__) == probe.put(-1, None, cost, guard)

    @rule(key=KEYS)
    def discard(self, key: int) -> None:
        assert self.cache.discard(key) == self.model.discard(key)

    @rule()
    def clear(self) -> None:
        self.cache.clear()
        self.model.entries = []

    @invariant()
    def same_entries_in_lru_order(self) -> None:
        assert list(self.cache.keys()) == [e[0] for e in self.model.entries]
        assert len(self.cache) == len(self.model.entries)

    @invariant()
    def within_budget(self) -> None:
        assert self.cache.used_bytes == sum(e[2] for e in self.model.entries)
        assert self.cache.used_bytes <= MAX_BYTES
        assert len(self.cache) <= MAX_ENTRIES


CacheMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestBoundedCacheModel = CacheMachine.TestCase


def test_put_refuses_an_entry_over_the_budget_and_keeps_the_rest():
    cache: BoundedCache[str, int] = BoundedCache(10)
    assert cache.put("a", 1, 6)
    assert not cache.put("b", 2, 11)
    assert list(cache.keys()) == ["a"] and cache.used_bytes == 6


def test_a_full_guard_refuses_the_put_without_evicting_anything():
    cache: BoundedCache[str, int] = BoundedCache(10)
    cache.put("a", 1, 3)
    cache.put("b", 2, 6)
    assert not cache.put("c", 3, 5, keep={"b"}.__contains__)  # evicting "a" alone is not enough
    assert list(cache.keys()) == ["a", "b"] and cache.used_bytes == 9
    assert cache.put("c", 3, 5, keep={"a"}.__contains__)  # "b" goes, though "a" is older
    assert list(cache.keys()) == ["a", "c"]


def test_get_or_compute_keeps_the_first_writer():
    cache: BoundedCache[str, str] = BoundedCache(100)

    def compute() -> str:
        cache.put("k", "first", 3)  # another thread stored the key while this one computed
        return "second"

    assert cache.get_or_compute("k", compute, 5) == "first"
    assert cache.get("k") == "first" and cache.used_bytes == 3
    assert cache.get_or_compute("k", lambda: pytest.fail("computed on a hit"), 5) == "first"


def test_get_or_compute_cost_may_depend_on_the_value():
    cache: BoundedCache[str, bytes] = BoundedCache(100)
    assert cache.get_or_compute("k", lambda: b"x" * 40, len) == b"x" * 40
    assert cache.used_bytes == 40
    assert cache.get_or_compute("big", lambda: b"x" * 400, len) == b"x" * 400  # returned, not stored
    assert "big" not in cache and cache.used_bytes == 40


def test_negative_budgets_and_costs_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        BoundedCache(-1)
    with pytest.raises(ValueError, match="non-negative"):
        BoundedCache(10).put("k", 1, -5)


def test_threads_keep_the_byte_count_exact_and_within_budget():
    budget = 64
    cache: BoundedCache[int, tuple[int, int]] = BoundedCache(budget, max_entries=12)
    over_budget: list[int] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(3000):
            key, cost = rng.randrange(20), rng.randrange(0, 20)
            op = rng.randrange(4)
            if op == 0:
                cache.put(key, (key, cost), cost, keep={rng.randrange(20)}.__contains__)
            elif op == 1:
                cache.get_or_compute(key, lambda k=key, c=cost: (k, c), lambda v: v[1])
            elif op == 2:
                cache.discard(key)
            else:
                cache.get(key)
            if cache.used_bytes > budget:
                over_budget.append(cache.used_bytes)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not over_budget
    held = [cache.get(k) for k in cache.keys()]
    assert all(v is not None for v in held)
    assert cache.used_bytes == sum(v[1] for v in held)  # every value records its own cost
    assert len(cache) <= 12
