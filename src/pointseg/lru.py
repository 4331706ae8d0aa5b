"""One least-recently-used cache bounded by bytes (and optionally by count), safe across threads.

The app keeps a few kinds of large values in memory — predictions of the images a user looks at, encoded
overlays — and each must stay within a memory budget whatever the image sizes. One small, tested class does
that instead of a hand-written ``OrderedDict`` loop per cache.

>>> cache = ByteLRU(max_bytes=10, size=len)
>>> cache.put("a", b"12345"); cache.put("b", b"123456")
>>> "a" in cache, "b" in cache
(False, True)
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, Hashable, Iterator, TypeVar

V = TypeVar("V")


class ByteLRU(Generic[V]):
    """Values by key; the least recently used go first when the total ``size(value)`` exceeds ``max_bytes``
    or there are more than ``max_items``. The newest value is always kept, even when it alone is too big
    (the caller has just computed it and is about to use it)."""

    def __init__(self, max_bytes: int, *, size: Callable[[V], int], max_items: int | None = None):
        self.max_bytes = int(max_bytes)
        self.max_items = max_items
        self._size = size
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, default: V | None = None) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return default
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: V) -> None:
        n = int(self._size(value))
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, n)
            self._bytes += n
            while len(self._items) > 1 and (self._bytes > self.max_bytes or (
                    self.max_items is not None and len(self._items) > self.max_items)):
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def put_if_room(self, key: Hashable, value: V) -> bool:
        """Store ``value`` only if it fits beside what is cached without pushing anything out; True when
        stored. For values of background work (which must not evict what the user is working on)."""
        n = int(self._size(value))
        with self._lock:
            if key in self._items or self._bytes + n > self.max_bytes or (
                    self.max_items is not None and len(self._items) >= self.max_items):
                return False
            self._items[key] = (value, n)
            self._bytes += n
            return True

    def pop(self, key: Hashable) -> V | None:
        with self._lock:
            item = self._items.pop(key, None)
            if item is None:
                return None
            self._bytes -= item[1]
            return item[0]

    def discard_where(self, predicate: Callable[[Hashable], bool]) -> None:
        """Drop every entry whose key satisfies ``predicate`` (e.g. all results of a deleted image)."""
        with self._lock:
            for key in [k for k in self._items if predicate(k)]:
                self._bytes -= self._items.pop(key)[1]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> Iterator[Hashable]:
        with self._lock:
            return iter(list(self._items))
