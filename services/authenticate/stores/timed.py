"""A session store that times get, put and delete (vallum_session_store_duration_seconds)
and passes everything else straight through."""

from __future__ import annotations

import time

from services.authenticate import metrics
from services.authenticate.stores.feed import Changes
from services.authenticate.stores.protocol import SessionStore
from shared.pb import session_pb2


class TimedStore:
    def __init__(self, store: SessionStore, kind: str) -> None:
        self.inner = store
        self._get = ("get", kind)
        self._put = ("put", kind)
        self._delete = ("delete", kind)

    async def get(self, session_id: str) -> session_pb2.Session | None:
        started = time.perf_counter()
        try:
            return await self.inner.get(session_id)
        finally:
            metrics.store_duration.observe(self._get, time.perf_counter() - started)

    async def put(self, session: session_pb2.Session, refresh_token: str) -> int:
        started = time.perf_counter()
        try:
            return await self.inner.put(session, refresh_token)
        finally:
            metrics.store_duration.observe(self._put, time.perf_counter() - started)

    async def delete(self, session_id: str) -> bool:
        started = time.perf_counter()
        try:
            return await self.inner.delete(session_id)
        finally:
            metrics.store_duration.observe(self._delete, time.perf_counter() - started)

    def changes(self) -> Changes:
        return self.inner.changes()

    async def get_refresh_token(self, session_id: str) -> str | None:
        return await self.inner.get_refresh_token(session_id)

    async def due_for_refresh(self, before: float, limit: int) -> list[str]:
        return await self.inner.due_for_refresh(before, limit)

    async def claim_refresh(self, session_id: str, owner: str, lease_seconds: float) -> bool:
        return await self.inner.claim_refresh(session_id, owner, lease_seconds)

    async def release_refresh(self, session_id: str, owner: str) -> bool:
        return await self.inner.release_refresh(session_id, owner)

    async def expire(self, now: float) -> int:
        return await self.inner.expire(now)

    async def close(self) -> None:
        await self.inner.close()
