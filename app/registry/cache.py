"""A small LRU cache for values that never change once written (snapshot bitmaps, leaf
indexes keyed by content hash): no invalidation is ever needed, only a size bound."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class ImmutableCache(Generic[V]):
    def __init__(self, size: int) -> None:
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get_many(self, keys: list[Hashable], load: Callable[[list[Hashable]], dict[Hashable, V]]) -> dict[Hashable, V]:
        """Cached values for ``keys``; ``load`` is called once with the keys not yet cached."""
        found: dict[Hashable, V] = {}
        with self._lock:
            for key in keys:
                if key in self._items:
                    self._items.move_to_end(key)
                    found[key] = self._items[key]
        missing = [key for key in keys if key not in found]
        if missing:
            loaded = load(missing)
            found.update(loaded)
            with self._lock:
                self._items.update(loaded)
                while len(self._items) > self._size:
                    self._items.popitem(last=False)
        return found

    def cached(self, keys: list[Hashable]) -> dict[Hashable, V]:
        """The values of ``keys`` already cached, loading none (for a caller that cannot load here)."""
        return self.get_many(keys, lambda _: {})

    def get(self, key: Hashable, load: Callable[[], V]) -> V:
        return self.get_many([key], lambda _: {key: load()})[key]
