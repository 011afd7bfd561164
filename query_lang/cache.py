"""One bounded, thread-safe LRU cache for the process-wide caches of query_lang and tensordb.

Every entry has a cost (its estimated bytes); the sum of the costs never exceeds
the budget. Every operation takes the cache's one lock, so concurrent ``get`` /
``put`` / ``discard`` calls keep the byte count exact. ``get_or_compute`` runs the
computation outside the lock: two threads may compute the same key at once, and
the first one to store it wins (the other gets the stored value back).

An eviction guard (``keep``) marks entries that must not be evicted to make room,
e.g. the blocks the running query has already used: a cache scanned by a query
larger than itself then keeps a stable set instead of cycling through everything.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Stands for a key not in the cache (``admits`` asks about a new entry).
_NEW_KEY = object()
#: An eviction guard: entries whose key it accepts are never evicted to make room.
Keep = Callable[[Hashable], bool]


class BoundedCache(Generic[K, V]):
    """LRU of ``key -> value`` bounded by total cost (bytes) and, optionally, by entry count."""

    def __init__(self, max_bytes: int, max_entries: int | None = None) -> None:
        if max_bytes < 0 or (max_entries is not None and max_entries < 0):
            raise ValueError(f"budgets must be non-negative, got max_bytes={max_bytes}, max_entries={max_entries}")
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()
        #: Lookups that found / did not find their key (statistics only).
        self.hits = 0
        self.misses = 0

    def get(self, key: K, default: V | None = None) -> V | None:
        """The value of ``key`` (now the most recently used), or ``default``."""
        with self._lock:
            return self._lookup(key, default)

    def put(self, key: K, value: V, cost: int, keep: Keep | None = None) -> bool:
        """Store ``value`` (replacing any old value of ``key``), evicting least recently used entries.

        Returns False, changing nothing, when the entry cannot fit: ``cost`` is over
        the budget, or making room would evict an entry that ``keep`` accepts.
        """
        with self._lock:
            return self._store(key, value, cost, keep, replace=True)

    def get_or_compute(self, key: K, compute: Callable[[], V], cost: int | Callable[[V], int],
                       keep: Keep | None = None) -> V:
        """The value of ``key``; on a miss ``compute()`` runs (outside the lock) and is stored if it fits.

        ``cost`` is the entry's cost, or a function of the computed value giving it.
        When another thread stored ``key`` meanwhile, its value is returned instead.
        """
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                return self._lookup(key)  # type: ignore[return-value]
            self.misses += 1
        value = compute()
        size = cost(value) if callable(cost) else cost
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
            self._store(key, value, size, keep, replace=False)
        return value

    def admits(self, cost: int, keep: Keep | None = None) -> bool:
        """Whether a new entry of ``cost`` would be stored now (nothing changes)."""
        with self._lock:
            return self._room_for(_NEW_KEY, cost, keep) is not None

    def discard(self, key: K) -> bool:
        """Drop ``key``; returns whether it was there."""
        with self._lock:
            found = self._entries.pop(key, None)
            if found is None:
                return False
            self._used -= found[1]
            return True

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()
            self._used = 0

    @property
    def used_bytes(self) -> int:
        """Sum of the costs of the entries held."""
        with self._lock:
            return self._used

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is held (without counting as a use)."""
        with self._lock:
            return key in self._entries

    def keys(self) -> Iterator[K]:
        """Keys from least to most recently used (a snapshot)."""
        with self._lock:
            return iter(list(self._entries))

    # ------------------------------------------------------------------ under the lock

    def _lookup(self, key: K, default: V | None = None) -> V | None:
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return default
        self._entries.move_to_end(key)
        self.hits += 1
        return found[0]

    def _store(self, key: K, value: V, cost: int, keep: Keep | None, replace: bool) -> bool:
        if cost < 0:
            raise ValueError(f"cache entry cost must be non-negative, got {cost}")
        if not replace and key in self._entries:
            return False
        victims = self._room_for(key, cost, keep)
        if victims is None:
            return False
        for victim in victims:
            self._used -= self._entries.pop(victim)[1]
        old = self._entries.pop(key, None)
        if old is not None:
            self._used -= old[1]
        self._entries[key] = (value, cost)
        self._used += cost
        return True

    def _room_for(self, key: object, cost: int, keep: Keep | None) -> list[K] | None:
        """The least recently used keys to evict so that ``key`` can hold an entry of ``cost``,
        or None when that needs more than the budget or evicting a guarded entry.

        An old value of ``key`` itself makes room for its replacement, whatever the guard says.
        ``keep`` runs under the lock: it must be quick and must not use the cache.
        """
        if cost > self.max_bytes:
            return None
        old = self._entries.get(key)  # type: ignore[arg-type]
        bytes_over = self._used - (0 if old is None else old[1]) + cost - self.max_bytes
        count_over = 0 if self.max_entries is None else len(self._entries) + (old is None) - self.max_entries
        victims: list[K] = []
        for k, (_, size) in self._entries.items():
            if bytes_over <= 0 and count_over <= 0:
                break
            if k == key or (keep is not None and keep(k)):
                continue
            victims.append(k)
            bytes_over -= size
            count_over -= 1
        return victims if bytes_over <= 0 and count_over <= 0 else None
