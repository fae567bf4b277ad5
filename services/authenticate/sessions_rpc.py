"""SessionService over gRPC: the only way other services reach sessions.

Who may call what is decided by the identity gate (ACL below), not here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from services.authenticate.stores import SessionStore
from shared import tracing
from shared.pb import session_pb2, session_pb2_grpc

_SERVICE = "/vallum.session.v1.SessionService/"
GET_SPAN = "vallum.session.v1.SessionService/Get"

ACL = {
    _SERVICE + "Get": frozenset({"authorize", "proxy", "authenticate"}),
    _SERVICE + "Watch": frozenset({"authorize", "proxy", "authenticate"}),
    _SERVICE + "Put": frozenset({"authenticate"}),
    _SERVICE + "Delete": frozenset({"authenticate"}),
}


class SessionServicer(session_pb2_grpc.SessionServiceServicer):
    def __init__(self, store: SessionStore) -> None:
        self._store = store

    async def Get(
        self, request: session_pb2.GetRequest, context: grpc.aio.ServicerContext
    ) -> session_pb2.GetResponse:
        if tracing.tracer is None:
            return await self._get(request)
        # The caller's span (authorize's fetch) is the parent, named in the metadata.
        parent = dict(context.invocation_metadata() or ()).get(tracing.TRACEPARENT)
        span = tracing.tracer.start_span(
            GET_SPAN,
            context=tracing.parent_from(parent),
            kind=tracing.SERVER,
            attributes=tracing.SESSION_GET_ATTRIBUTES,
        )
        try:
            response = await self._get(request)
            span.set_attribute("vallum.session.found", response.found)
            return response
        finally:
            span.end()

    async def _get(self, request: session_pb2.GetRequest) -> session_pb2.GetResponse:
        session = await self._store.get(request.id)
        if session is None:
            return session_pb2.GetResponse(found=False)
        if not request.include_tokens:
            session.ClearField("id_token")
            session.ClearField("access_token")
        return session_pb2.GetResponse(found=True, session=session)

    async def Put(
        self, request: session_pb2.PutRequest, context: grpc.aio.ServicerContext
    ) -> session_pb2.PutResponse:
        if not request.session.id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "session.id is empty")
        version = await self._store.put(request.session, request.refresh_token)
        return session_pb2.PutResponse(version=version)

    async def Delete(
        self, request: session_pb2.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> session_pb2.DeleteResponse:
        return session_pb2.DeleteResponse(deleted=await self._store.delete(request.id))

    async def Watch(
        self, request: session_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[session_pb2.SessionEvent]:
        # The first message tells the watcher its stream is live, so it knows every
        # later change will reach it and may start caching.
        yield session_pb2.SessionEvent(kind=session_pb2.SessionEvent.RESET)
        async for event in self._store.changes().subscribe():
            yield session_pb2.SessionEvent(
                kind=event.kind, session_id=event.session_id, version=event.version
            )
