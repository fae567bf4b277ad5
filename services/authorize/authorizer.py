"""Authorizer over gRPC: unary Check and the batched CheckStream.

Only the proxy may call it (ACL, enforced by the identity gate). A check whose
session cannot be looked up answers UNAVAILABLE: the proxy then refuses the request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc

from services.authorize.active_session import ActiveSession
from services.authorize.client_cert import client_cert_view
from services.authorize.decide import OUTCOME_NAMES, Decider, not_found
from services.authorize.session_cache import SessionCache, SessionsUnavailable
from shared.logs import logfmt
from shared.pb import authorize_pb2, authorize_pb2_grpc
from shared.sessions import HandleCodec, InvalidHandle

log = logging.getLogger("vallum.authorize.decision")

_SERVICE = "/vallum.authorize.v1.Authorizer/"
ACL = {
    _SERVICE + "Check": frozenset({"proxy"}),
    _SERVICE + "CheckStream": frozenset({"proxy"}),
}


class AuthorizerServicer(authorize_pb2_grpc.AuthorizerServicer):
    def __init__(self, decider: Decider, sessions: SessionCache, handles: HandleCodec) -> None:
        self._decider = decider
        self._sessions = sessions
        self._handles = handles

    async def check(self, request: authorize_pb2.CheckRequest) -> authorize_pb2.CheckResponse:
        response, session = await self._decide(request)
        self._log(request, response, session)
        return response

    async def _decide(
        self, request: authorize_pb2.CheckRequest
    ) -> tuple[authorize_pb2.CheckResponse, ActiveSession | None]:
        now = time.time()
        state = self._decider.match(request.scheme, request.host, request.path)
        if state is None:
            return not_found(request), None
        session: ActiveSession | None = None
        if request.session_handle and state.needs_session:
            try:
                session = await self._session(request.session_handle, now)
            except SessionsUnavailable as e:
                return unavailable(request, str(e)), None
        cert = client_cert_view(request.client_certificate, request.client_certificate.requested)
        return self._decider.evaluate(state, request, session, cert, now), session

    async def _session(self, handle: str, now: float) -> ActiveSession | None:
        try:
            session_id = self._handles.open(handle, now)
        except InvalidHandle as e:
            # Treated as signed out, never as a user; the reason is for the log only.
            log.debug("session handle refused: %s", e)
            return None
        return await self._sessions.get(session_id, now)

    def _log(
        self,
        request: authorize_pb2.CheckRequest,
        response: authorize_pb2.CheckResponse,
        session: ActiveSession | None,
    ) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        log.info(
            "%s",
            logfmt(
                decision=OUTCOME_NAMES.get(response.outcome, "unknown"),
                request_id=request.request_id,
                route=response.route_index,
                host=request.host,
                method=request.method,
                path=request.path,
                user=session.view.email or session.view.user_id if session else "",
                reasons=",".join(response.reasons),
            ),
        )

    async def Check(
        self, request: authorize_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> authorize_pb2.CheckResponse:
        return await self.check(request)

    async def CheckStream(
        self,
        requests: AsyncIterator[authorize_pb2.CheckBatch],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[authorize_pb2.CheckResultBatch]:
        async for batch in requests:
            responses = await asyncio.gather(*(self.check(c.request) for c in batch.checks))
            yield authorize_pb2.CheckResultBatch(
                results=[
                    authorize_pb2.BatchedResult(id=c.id, response=r)
                    for c, r in zip(batch.checks, responses, strict=True)
                ]
            )


def unavailable(request: authorize_pb2.CheckRequest, why: str) -> authorize_pb2.CheckResponse:
    return authorize_pb2.CheckResponse(
        request_id=request.request_id,
        outcome=authorize_pb2.UNAVAILABLE,
        reasons=["session-store-unavailable"],
        explanation=f"sessions could not be read: {why}",
    )
