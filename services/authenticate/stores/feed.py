"""The change feed: every Put, Delete and expiry becomes an Event that Watch streams.

Readers in authorize drop their cached copy of a session on any event about it, and
their whole cache on RESET, so a feed may lose precision but never an event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from shared.pb import session_pb2

PUT = session_pb2.SessionEvent.PUT
DELETE = session_pb2.SessionEvent.DELETE
RESET = session_pb2.SessionEvent.RESET


@dataclass(frozen=True, slots=True)
class Event:
    kind: session_pb2.SessionEvent.Kind.ValueType
    session_id: str = ""
    version: int = 0


class Changes:
    """Fan-out of store events to any number of watchers.

    A watcher that falls more than `depth` events behind is not allowed to block
    the store: its queue is replaced by a single RESET, which tells it to drop
    its whole cache. Losing precision is fine; serving a stale session is not.
    """

    def __init__(self, depth: int = 1024) -> None:
        self._depth = depth
        self._queues: set[asyncio.Queue[Event]] = set()

    def publish(self, event: Event) -> None:
        for queue in self._queues:
            if queue.full():
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(Event(RESET))
            else:
                queue.put_nowait(event)

    async def subscribe(self) -> AsyncGenerator[Event, None]:
        queue: asyncio.Queue[Event] = asyncio.Queue(self._depth)
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)

    @property
    def watchers(self) -> int:
        return len(self._queues)
