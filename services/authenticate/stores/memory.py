"""Sessions in this process only: for tests and throwaway demos (lost on restart).

Rows are sealed exactly as on disk, so every store behaves the same, down to a
foreign shared_secret reading as absent. Everything runs on the event loop between
awaits, so each operation is atomic without a lock.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from services.authenticate.stores.feed import DELETE, PUT, Changes, Event
from services.authenticate.stores.records import RecordCodec, Row
from shared.pb import session_pb2


@dataclass(slots=True)
class _Stored:
    row: Row
    version: int
    lease_owner: str | None = None
    lease_until: float | None = None


@dataclass
class MemoryTable:
    """The "database" of memory stores: stores built on one table share its rows,
    as replicas share a PostgreSQL table (but not its change feed)."""

    rows: dict[str, _Stored] = field(default_factory=dict)


class MemoryStore:
    def __init__(
        self, shared_secret: bytes | None = None, table: MemoryTable | None = None
    ) -> None:
        # Without a secret, one that dies with the process: nothing outlives it anyway.
        self._codec = RecordCodec(shared_secret if shared_secret is not None else os.urandom(32))
        self.table = table if table is not None else MemoryTable()
        self._changes = Changes()

    async def get(self, session_id: str) -> session_pb2.Session | None:
        found = self.table.rows.get(session_id)
        if found is None:
            return None
        return self._codec.session(session_id, found.row.record, found.row.tokens, found.version)

    async def put(self, session: session_pb2.Session, refresh_token: str) -> int:
        row = self._codec.to_row(session, refresh_token)
        previous = self.table.rows.get(row.id)
        if previous is None:
            self.table.rows[row.id] = _Stored(row, 1)
            version = 1
        else:
            # The lease survives a put: a refresher's own put must not free it.
            previous.row = row
            previous.version += 1
            version = previous.version
        self._changes.publish(Event(PUT, row.id, version))
        return version

    async def delete(self, session_id: str) -> bool:
        previous = self.table.rows.pop(session_id, None)
        if previous is None:
            return False
        self._changes.publish(Event(DELETE, session_id, previous.version + 1))
        return True

    def changes(self) -> Changes:
        return self._changes

    async def get_refresh_token(self, session_id: str) -> str | None:
        found = self.table.rows.get(session_id)
        return None if found is None else self._codec.refresh_token(session_id, found.row.refresh)

    async def due_for_refresh(self, before: float, limit: int) -> list[str]:
        now = time.time()
        due = [
            (stored.row.access_token_expires_at, session_id)
            for session_id, stored in self.table.rows.items()
            if stored.row.refresh is not None
            and stored.row.access_token_expires_at is not None
            and stored.row.access_token_expires_at < before
            and (stored.lease_until is None or stored.lease_until < now)
        ]
        return [session_id for _, session_id in sorted(due)[:limit]]

    async def claim_refresh(self, session_id: str, owner: str, lease_seconds: float) -> bool:
        found = self.table.rows.get(session_id)
        now = time.time()
        if found is None or (found.lease_until is not None and found.lease_until >= now):
            return False
        found.lease_owner, found.lease_until = owner, now + lease_seconds
        return True

    async def release_refresh(self, session_id: str, owner: str) -> bool:
        found = self.table.rows.get(session_id)
        if found is None or found.lease_owner != owner:
            return False
        found.lease_owner, found.lease_until = None, None
        return True

    async def expire(self, now: float) -> int:
        gone = [(k, v.version) for k, v in self.table.rows.items() if v.row.expires_at <= now]
        for session_id, version in gone:
            del self.table.rows[session_id]
            self._changes.publish(Event(DELETE, session_id, version + 1))
        return len(gone)

    async def close(self) -> None:
        return None
