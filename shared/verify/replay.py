"""Remembering which assertions (by `jti`) were already used, to refuse a replayed one.

Vallum signs a fresh assertion with a unique `jti` for every request, so an app that
sees one twice is looking at a copy, e.g. lifted from a log. An entry is only needed
until its token expires: after that the expiry check refuses the copy anyway.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Protocol


class ReplayCache(Protocol):
    def seen(self, jti: str, expires_at: float) -> bool:
        """True if `jti` was recorded before; otherwise record it until `expires_at`."""
        ...


class MemoryReplayCache:
    """A ReplayCache in this process's memory: fine for one process, not for replicas
    (give those a shared store behind the same protocol).

    Bounded: past `max_entries` live entries the ones closest to expiry are dropped
    first, so a flood of tokens costs memory, not correctness of fresh ones, and never
    grows without limit.
    """

    def __init__(
        self, *, max_entries: int = 100_000, clock: Callable[[], float] = time.time
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        # WSGI servers verify on many threads at once.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._forget(self._clock())
            return len(self._expiry)

    def seen(self, jti: str, expires_at: float) -> bool:
        with self._lock:
            now = self._clock()
            self._forget(now)
            known = self._expiry.get(jti)
            if known is not None and known > now:
                return True
            while len(self._expiry) >= self._max and self._heap:
                _, oldest = heapq.heappop(self._heap)
                self._expiry.pop(oldest, None)
            self._expiry[jti] = expires_at
            heapq.heappush(self._heap, (expires_at, jti))
            return False

    def _forget(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            expires_at, jti = heapq.heappop(heap)
            if self._expiry.get(jti) == expires_at:
                del self._expiry[jti]
