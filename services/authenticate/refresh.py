"""Keeping sessions current: refresh before the access token expires, expire the rest.

Every few seconds each authenticate replica asks the store for sessions whose access
token expires soon and takes a lease on each before refreshing it, so when several
replicas share PostgreSQL exactly one refreshes a given session. A refresh updates
the tokens and the claims (groups changed at the IdP show up in the next decision,
through the store's change feed). A refresh the IdP refuses ends the session; an IdP
that cannot be reached is retried on the next round, until the session expires.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from google.protobuf import struct_pb2

from services.authenticate.oidc import IdPError, IdPUnavailable, IdTokenError, RelyingParty
from services.authenticate.oidc.identity import identity_from
from services.authenticate.stores import SessionStore

log = logging.getLogger("vallum.authenticate.refresh")

EVERY = 5.0
AHEAD = 60.0  # refresh this long before the access token expires
LEASE = 30.0
BATCH = 50


class Refresher:
    def __init__(self, store: SessionStore, rp: RelyingParty) -> None:
        self._store = store
        self._rp = rp
        self.owner = f"{socket.gethostname()}:{os.getpid()}"

    async def run(self) -> None:
        while True:
            try:
                await self.round(time.time())
            except Exception:
                log.exception("refresh round failed; trying again shortly")
            await asyncio.sleep(EVERY)

    async def round(self, now: float) -> int:
        expired = await self._store.expire(now)
        if expired:
            log.info("removed %d expired session(s)", expired)
        refreshed = 0
        for session_id in await self._store.due_for_refresh(now + AHEAD, BATCH):
            if not await self._store.claim_refresh(session_id, self.owner, LEASE):
                continue  # another replica has it
            try:
                refreshed += await self._refresh(session_id, now)
            finally:
                await self._store.release_refresh(session_id, self.owner)
        return refreshed

    async def _refresh(self, session_id: str, now: float) -> int:
        record = await self._store.get(session_id)
        refresh_token = await self._store.get_refresh_token(session_id)
        if record is None or not refresh_token:
            return 0
        try:
            tokens = await self._rp.refresh(refresh_token)
        except IdPUnavailable as e:
            log.warning(
                "refresh of a session postponed: identity provider unavailable (%s)", e.reason
            )
            return 0
        except IdPError as e:
            # invalid_grant and friends: the IdP ended this sign-in; so do we.
            log.info(
                "refresh refused by the identity provider (%s); ending the session",
                e.error or e.reason,
            )
            await self._store.delete(session_id)
            return 0
        if tokens.id_token:
            try:
                claims = await self._rp.verify_id_token(tokens.id_token, nonce=None, now=now)
            except IdTokenError as e:
                log.warning("refreshed ID token refused (%s); ending the session", e.reason)
                await self._store.delete(session_id)
                return 0
            identity = identity_from(claims)
            if identity.user_id != record.user_id:
                log.warning("refreshed ID token names another user; ending the session")
                await self._store.delete(session_id)
                return 0
            record.email, record.name = identity.email, identity.name
            del record.groups[:]
            record.groups.extend(identity.groups)
            fresh = struct_pb2.Struct()
            fresh.update({k: v for k, v in identity.claims.items() if _is_json(v)})
            record.claims.CopyFrom(fresh)
            record.id_token = tokens.id_token
        record.access_token = tokens.access_token
        if tokens.expires_in:
            record.access_token_expires_at.seconds = int(now) + tokens.expires_in
        else:
            record.ClearField("access_token_expires_at")
        await self._store.put(record, tokens.refresh_token or refresh_token)
        return 1


def _is_json(value: object) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list | tuple):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False
