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
from services.authorize.decide import OUTCOME_NAMES, Decider, RouteState, not_found
from services.authorize.session_cache import SessionCache, SessionsUnavailable
from shared.logs import logfmt
from shared.pb import authorize_pb2, authorize_pb2_grpc
from shared.sessions import HandleCodec, InvalidHandle

log = logging.getLogger("vallum.authorize.decision")

_SERVICE = "/vallum.authorize.v1.Authorizer/"
ACL = {
    _SERVICE + "Check": frozenset({"proxy"}),
    _SERVICE + "CheckStream": frozenset({"proxy"}),
    _SERVICE + "CheckChannel": frozenset({"proxy"}),
}


# A check that waits for its session: where its answer goes, and what decides it.
Waiting = tuple[authorize_pb2.BatchedResult, authorize_pb2.CheckRequest, RouteState, str]

# Opened handles, so that a session's every request does not pay for AES-GCM and
# JSON again; the cached expiry is still checked against the clock per request.
MAX_OPENED_HANDLES = 100_000


class AuthorizerServicer(authorize_pb2_grpc.AuthorizerServicer):
    def __init__(self, decider: Decider, sessions: SessionCache, handles: HandleCodec) -> None:
        self._decider = decider
        self._sessions = sessions
        self._handles = handles
        self._opened: dict[str, tuple[str, int]] = {}
        # Where the check channel listens (0: none), told to the proxy by CheckChannel.
        self.channel_port = 0

    async def check(self, request: authorize_pb2.CheckRequest) -> authorize_pb2.CheckResponse:
        now = time.time()
        state, session_id = self._prepare(request, now)
        session = None
        if state is not None and session_id:
            try:
                session = await self._sessions.get(session_id, now)
            except SessionsUnavailable as e:
                return self._answer(request, unavailable(request, str(e)), None)
        return self._decide(request, state, session, now, authorize_pb2.CheckResponse())

    async def decide_batch(self, batch: authorize_pb2.CheckBatch) -> authorize_pb2.CheckResultBatch:
        """Every check of a batch, answered in one batch."""
        now = time.time()
        out, waiting = self.decide_cached(batch, now)
        if waiting:
            await self.decide_waiting(waiting, now)
        return out

    def decide_cached(
        self, batch: authorize_pb2.CheckBatch, now: float
    ) -> tuple[authorize_pb2.CheckResultBatch, list[Waiting]]:
        """Decide the checks whose session is cached (nearly all) right here, in order,
        with no task or await each; return the others, to be decided once their
        sessions have been fetched."""
        out = authorize_pb2.CheckResultBatch()
        waiting: list[Waiting] = []
        for check in batch.checks:
            request = check.request
            result = out.results.add(id=check.id)
            state, session_id = self._prepare(request, now)
            session = self._sessions.cached(session_id, now) if session_id else None
            if session_id and session is None:
                assert state is not None
                waiting.append((result, request, state, session_id))
                continue
            self._decide(request, state, session, now, result.response)
        return out, waiting

    async def decide_waiting(self, waiting: list[Waiting], now: float) -> None:
        """Fetch each distinct session once, concurrently, then decide its checks."""
        ids = list({session_id for _, _, _, session_id in waiting})
        found = await asyncio.gather(
            *(self._sessions.get(i, now) for i in ids), return_exceptions=True
        )
        sessions = dict(zip(ids, found, strict=True))
        for result, request, state, session_id in waiting:
            got = sessions[session_id]
            if isinstance(got, BaseException):
                # Fail closed, whatever went wrong; the unexpected is logged loudly.
                if not isinstance(got, SessionsUnavailable):
                    log.error("session lookup failed: %r", got)
                result.response.CopyFrom(unavailable(request, str(got) or repr(got)))
                self._answer(request, result.response, None)
            else:
                self._decide(request, state, got, now, result.response)

    def _prepare(
        self, request: authorize_pb2.CheckRequest, now: float
    ) -> tuple[RouteState | None, str]:
        """The route, and the id of the session the decision needs ("" for none)."""
        state = self._decider.match(request.scheme, request.host, request.path)
        if state is None or not request.session_handle or not state.needs_session:
            return state, ""
        return state, self._open(request.session_handle, now)

    def _open(self, handle: str, now: float) -> str:
        opened = self._opened.get(handle)
        if opened is None:
            try:
                opened = self._handles.unseal(handle)
            except InvalidHandle as e:
                # Treated as signed out, never as a user; the reason is for the log only.
                log.debug("session handle refused: %s", e)
                return ""
            if len(self._opened) >= MAX_OPENED_HANDLES:
                self._opened.clear()
            self._opened[handle] = opened
        session_id, expires_at = opened
        if expires_at <= now:
            log.debug("session handle refused: handle expired")
            return ""
        return session_id

    def _decide(
        self,
        request: authorize_pb2.CheckRequest,
        state: RouteState | None,
        session: ActiveSession | None,
        now: float,
        into: authorize_pb2.CheckResponse,
    ) -> authorize_pb2.CheckResponse:
        """The decision, filled into `into` (and logged)."""
        if state is None:
            into.CopyFrom(not_found(request))
            return self._answer(request, into, None)
        cert = client_cert_view(
            request.client_certificate,
            request.client_certificate.requested or state.needs_client_certificate,
        )
        self._decider.evaluate(state, request, session, cert, now, into)
        return self._answer(request, into, session)

    def _answer(
        self,
        request: authorize_pb2.CheckRequest,
        response: authorize_pb2.CheckResponse,
        session: ActiveSession | None,
    ) -> authorize_pb2.CheckResponse:
        # Refusals at info, allows at debug: the proxy's access line already records
        # every request with its decision, and a second line per request costs both
        # processes (and the log pipeline) about as much again as the decision itself.
        level = logging.DEBUG if response.outcome == authorize_pb2.ALLOW else logging.INFO
        if log.isEnabledFor(level):
            log.log(
                level,
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
        return response

    async def Check(
        self, request: authorize_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> authorize_pb2.CheckResponse:
        return await self.check(request)

    async def CheckChannel(
        self, request: authorize_pb2.CheckChannelRequest, context: grpc.aio.ServicerContext
    ) -> authorize_pb2.CheckChannelInfo:
        return authorize_pb2.CheckChannelInfo(port=self.channel_port)

    async def CheckStream(
        self,
        requests: AsyncIterator[authorize_pb2.CheckBatch],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[authorize_pb2.CheckResultBatch]:
        # Batches are decided as they arrive, not one after the other: a batch that
        # waits for a session fetch must not hold up the batches behind it. Each is
        # answered by exactly one message (the proxy counts them), in any order.
        answers: asyncio.Queue[authorize_pb2.CheckResultBatch | None] = asyncio.Queue()
        fetching: set[asyncio.Task[None]] = set()

        async def complete(out: authorize_pb2.CheckResultBatch, waiting: list[Waiting]) -> None:
            await self.decide_waiting(waiting, time.time())
            answers.put_nowait(out)

        async def read() -> None:
            try:
                async for batch in requests:
                    out, waiting = self.decide_cached(batch, time.time())
                    if not waiting:
                        answers.put_nowait(out)
                        continue
                    task = asyncio.create_task(complete(out, waiting))
                    fetching.add(task)
                    task.add_done_callback(fetching.discard)
                if fetching:
                    await asyncio.gather(*fetching)
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (result := await answers.get()) is not None:
                yield result
        finally:
            reader.cancel()
            for task in list(fetching):
                task.cancel()
        await reader  # a failed read (or fetch) fails the stream, visibly


def unavailable(request: authorize_pb2.CheckRequest, why: str) -> authorize_pb2.CheckResponse:
    return authorize_pb2.CheckResponse(
        request_id=request.request_id,
        outcome=authorize_pb2.UNAVAILABLE,
        reasons=["session-store-unavailable"],
        explanation=f"sessions could not be read: {why}",
    )
