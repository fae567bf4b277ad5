"""What SessionService and the (later) token refresher need from a session store."""

from __future__ import annotations

from typing import Protocol

from services.authenticate.stores.feed import Changes
from shared.pb import session_pb2


class SessionStore(Protocol):
    async def get(self, session_id: str) -> session_pb2.Session | None:
        """The session with its tokens and current version, or None.

        A record that cannot be opened (sealed under another shared_secret, or
        damaged) is None too: the user signs in again, nothing crashes.
        """
        ...

    async def put(self, session: session_pb2.Session, refresh_token: str) -> int:
        """Store (insert or replace) and return the new version: 1, then +1 per put."""
        ...

    async def delete(self, session_id: str) -> bool:
        """Whether a session was there to delete."""
        ...

    def changes(self) -> Changes: ...

    async def get_refresh_token(self, session_id: str) -> str | None: ...

    async def due_for_refresh(self, before: float, limit: int) -> list[str]:
        """Ids whose access token expires before `before` (epoch seconds), soonest
        first, among sessions that hold a refresh token and are not leased now."""
        ...

    async def claim_refresh(self, session_id: str, owner: str, lease_seconds: float) -> bool:
        """True for exactly one caller, across every replica, until the lease expires."""
        ...

    async def release_refresh(self, session_id: str, owner: str) -> bool:
        """End `owner`'s lease early (after a refresh failed, say)."""
        ...

    async def expire(self, now: float) -> int:
        """Delete sessions whose expires_at is at or before `now`; publish DELETE for each."""
        ...

    async def close(self) -> None: ...
