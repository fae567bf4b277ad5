"""Session stores behind SessionService, and the change feed that Watch streams.

A store keeps session records (as protobuf messages) by id. Every successful Put
or Delete publishes an event; readers in authorize drop their cached copy on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from shared.pb import session_pb2


@dataclass(frozen=True, slots=True)
class Event:
    kind: session_pb2.SessionEvent.Kind.ValueType
    session_id: str = ""
    version: int = 0


class SessionStore(Protocol):
    async def get(self, session_id: str) -> session_pb2.Session | None: ...

    async def put(self, session: session_pb2.Session, refresh_token: str) -> int: ...

    async def delete(self, session_id: str) -> bool: ...

    def changes(self) -> Changes: ...


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
                queue.put_nowait(Event(session_pb2.SessionEvent.RESET))
            else:
                queue.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[Event]:
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


@dataclass
class MemoryStore:
    """Sessions in this process only: for tests and throwaway demos."""

    _sessions: dict[str, session_pb2.Session] = field(default_factory=dict)
    _refresh: dict[str, str] = field(default_factory=dict)
    _changes: Changes = field(default_factory=Changes)

    async def get(self, session_id: str) -> session_pb2.Session | None:
        found = self._sessions.get(session_id)
        if found is None:
            return None
        copy = session_pb2.Session()
        copy.CopyFrom(found)
        return copy

    async def put(self, session: session_pb2.Session, refresh_token: str) -> int:
        previous = self._sessions.get(session.id)
        stored = session_pb2.Session()
        stored.CopyFrom(session)
        stored.version = (previous.version if previous else 0) + 1
        self._sessions[session.id] = stored
        self._refresh[session.id] = refresh_token
        self._changes.publish(Event(session_pb2.SessionEvent.PUT, session.id, stored.version))
        return stored.version

    async def delete(self, session_id: str) -> bool:
        previous = self._sessions.pop(session_id, None)
        self._refresh.pop(session_id, None)
        if previous is None:
            return False
        self._changes.publish(
            Event(session_pb2.SessionEvent.DELETE, session_id, previous.version + 1)
        )
        return True

    def changes(self) -> Changes:
        return self._changes
