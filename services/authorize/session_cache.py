"""Sessions as authorize sees them: fetched from authenticate, cached, invalidated live.

Caching is only safe while the Watch stream is connected: it is what tells us a
session was signed out or changed. So the cache is used only after the stream has
delivered its first message, is emptied whenever the stream breaks, and a record
fetched while any change event arrived is not stored (it may predate the change).
An expired session is never returned, cached or not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

import grpc

from services.authorize import metrics
from services.authorize.active_session import ActiveSession, from_record
from shared import tracing
from shared.pb import session_pb2, session_pb2_grpc
from shared.rpc import ServiceChannel, call_once_each, describe_rpc_error

log = logging.getLogger("vallum.authorize.sessions")

GET_TIMEOUT = 2.0
GET_SPAN = "vallum.session.v1.SessionService/Get"


class SessionsUnavailable(Exception):
    """authenticate could not be asked; the request must fail closed."""


class SessionCache:
    def __init__(self, channel: ServiceChannel, *, max_entries: int = 100_000) -> None:
        self._channel = channel
        self._max = max_entries
        self._cache: OrderedDict[str, ActiveSession] = OrderedDict()
        self._live = False
        self._events = 0  # bumped on every change event; guards in-flight fetches
        self.hits = 0
        self.misses = 0

    @property
    def live(self) -> bool:
        return self._live

    def cached(self, session_id: str, now: float) -> ActiveSession | None:
        """The session from the cache if it is there and has not expired, else None
        (get() then tells a session that is not cached from one that does not exist)."""
        session = self._cache.get(session_id) if self._live else None
        if session is None:
            return None
        # A record without an expiry is malformed: fail closed, as for an expired one.
        if session.expires_at <= now:
            self._cache.pop(session_id, None)
            return None
        self.hits += 1
        return session

    async def get(self, session_id: str, now: float, parent: Any = None) -> ActiveSession | None:
        """The session if it exists and has not expired, else None. `parent`: the span
        of the check that asks (tracing on), for the fetch's span to be a child of."""
        session = self.cached(session_id, now)
        if session is not None:
            return session
        self.misses += 1
        if parent is not None:
            session = await self._traced_fetch(session_id, parent)
        else:
            session = await self._fetch(session_id)
        if session is None or session.expires_at <= now:
            self._cache.pop(session_id, None)
            return None
        return session

    async def _traced_fetch(self, session_id: str, parent: Any) -> ActiveSession | None:
        assert tracing.tracer is not None
        span = tracing.tracer.start_span(
            GET_SPAN,
            context=tracing.child_context(parent),
            kind=tracing.CLIENT,
            attributes=tracing.SESSION_GET_ATTRIBUTES,
        )
        try:
            # authenticate's span for the call is a child of this one.
            metadata = tuple(tracing.carrier_for(span).items())
            session = await self._fetch(session_id, metadata)
            span.set_attribute("vallum.session.found", session is not None)
            return session
        except SessionsUnavailable as e:
            span.set_status(tracing.ERROR, str(e))
            raise
        finally:
            span.end()

    async def _fetch(
        self, session_id: str, metadata: tuple[tuple[str, str], ...] | None = None
    ) -> ActiveSession | None:
        events_before = self._events
        request = session_pb2.GetRequest(id=session_id, include_tokens=True)
        started = time.perf_counter()
        try:
            # With several authenticate replicas (databroker_service_url lists them),
            # an unavailable one is passed over for the next: they share the store.
            response = await call_once_each(self._channel, lambda ch: _get(ch, request, metadata))
        except grpc.aio.AioRpcError as e:
            metrics.session_fetch.observe("error", time.perf_counter() - started)
            raise SessionsUnavailable(describe_rpc_error(e, self._channel.url)) from None
        took = time.perf_counter() - started
        metrics.session_fetch.observe("found" if response.found else "missing", took)
        if not response.found:
            return None
        session = from_record(response.session)
        if self._live and self._events == events_before:
            self._cache[session_id] = session
            if len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return session

    def _apply(self, event: session_pb2.SessionEvent) -> None:
        self._events += 1
        if event.kind == session_pb2.SessionEvent.RESET:
            self._cache.clear()
        else:
            self._cache.pop(event.session_id, None)

    async def watch(self) -> None:
        """Keep the Watch stream open for as long as authorize runs."""
        delay = 0.5
        while True:
            channel = self._channel.get()
            call = session_pb2_grpc.SessionServiceStub(channel).Watch(session_pb2.WatchRequest())
            try:
                async for event in call:
                    self._apply(event)
                    if not self._live:
                        self._live = True
                        delay = 0.5
                        log.info("session changes streaming from %s; caching on", self._channel.url)
            except grpc.aio.AioRpcError as e:
                why = describe_rpc_error(e, self._channel.url)
                if e.code() == grpc.StatusCode.UNAVAILABLE and self._channel.failed(channel):
                    delay = 0.1  # another replica is there: try it soon
                if self._live:
                    log.warning(
                        "session change stream lost (%s); caching off until it is back", why
                    )
            finally:
                self._live = False
                self._cache.clear()
                call.cancel()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


async def _get(
    channel: grpc.aio.Channel,
    request: session_pb2.GetRequest,
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> session_pb2.GetResponse:
    stub = session_pb2_grpc.SessionServiceStub(channel)
    response: session_pb2.GetResponse = await stub.Get(
        request, timeout=GET_TIMEOUT, metadata=metadata
    )
    return response
