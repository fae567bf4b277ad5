"""Authorizer over gRPC: unary Check and the batched CheckStream.

Only the proxy may call it (ACL, enforced by the identity gate). A check whose
session cannot be looked up answers UNAVAILABLE: the proxy then refuses the request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from services.authorize import check_spans, metrics
from services.authorize.active_session import ActiveSession
from services.authorize.client_cert import client_cert_view
from services.authorize.decide import OUTCOME_NAMES, Decider, RouteState, not_found
from services.authorize.session_cache import SessionCache, SessionsUnavailable
from shared import tracing
from shared.logs import Fields
from shared.pb import authorize_pb2, authorize_pb2_grpc
from shared.sessions import HandleCodec, InvalidHandle

log = logging.getLogger("vallum.authorize.decision")

_SERVICE = "/vallum.authorize.v1.Authorizer/"
ACL = {
    _SERVICE + "Check": frozenset({"proxy"}),
    _SERVICE + "CheckStream": frozenset({"proxy"}),
    _SERVICE + "CheckChannel": frozenset({"proxy"}),
}


# A check that waits for its session: where its answer goes, and what decides it. No
# route state: it waits for this service to reload (the proxy's routes are newer).
# Last, the check's span while tracing is on (else None).
Waiting = tuple[
    authorize_pb2.BatchedResult,
    authorize_pb2.CheckRequest,
    RouteState | None,
    str,
    Decider,
    Any,
]
# Deciders kept for proxies that have not reloaded yet: the current and this many more.
KEEP_DECIDERS = 4

# Opened handles, so that a session's every request does not pay for AES-GCM and
# JSON again; the cached expiry is still checked against the clock per request.
MAX_OPENED_HANDLES = 100_000


class AuthorizerServicer(authorize_pb2_grpc.AuthorizerServicer):
    def __init__(
        self, decider: Decider, sessions: SessionCache, handles: HandleCodec, version: str = ""
    ) -> None:
        self._decider = decider
        self._version = version
        # By the routes version they were built from (see shared/config/reload.py): a
        # proxy is answered with the routes it matched the request against, so a route
        # it forwards to is never judged by another route's policy during a reload.
        self._deciders: dict[str, Decider] = {version: decider}
        # Called when a proxy's routes are newer than ours: re-read the config now.
        self.catch_up: Callable[[], Awaitable[object]] | None = None
        self._sessions = sessions
        self._handles = handles
        self._opened: dict[str, tuple[str, int]] = {}
        # Where the check channel listens (0: none), told to the proxy by CheckChannel.
        self.channel_port = 0

    def update(self, decider: Decider, version: str) -> None:
        """Decide with `decider` from now on (a reloaded config)."""
        self._deciders.pop(version, None)
        self._deciders[version] = decider
        while len(self._deciders) > KEEP_DECIDERS:
            del self._deciders[next(iter(self._deciders))]
        self._decider, self._version = decider, version

    def _decider_for(self, request: authorize_pb2.CheckRequest) -> Decider | None:
        """The decider for the proxy's routes; None when they are newer than ours."""
        version = request.config_version
        if not version or version == self._version:
            return self._decider
        return self._deciders.get(version)

    async def _catch_up(self, request: authorize_pb2.CheckRequest) -> Decider | None:
        if self.catch_up is not None:
            await self.catch_up()
        return self._decider_for(request)

    async def check(self, request: authorize_pb2.CheckRequest) -> authorize_pb2.CheckResponse:
        if tracing.tracer is None or not request.traceparent:
            return await self._check(request, None)
        span = check_spans.start(request)
        response = await self._check(request, span)
        check_spans.end(span, response)
        return response

    async def _check(
        self, request: authorize_pb2.CheckRequest, span: Any
    ) -> authorize_pb2.CheckResponse:
        now = time.time()
        decider = self._decider_for(request) or await self._catch_up(request)
        if decider is None:
            return self._answer(request, out_of_step(request), None)
        state, session_id = self._prepare(request, now, decider)
        session = None
        if state is not None and session_id:
            try:
                session = await self._sessions.get(session_id, now, span)
            except SessionsUnavailable as e:
                return self._answer(request, unavailable(request, str(e)), None)
        return self._decide(request, state, session, now, authorize_pb2.CheckResponse(), decider)

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
        traced = tracing.tracer is not None
        for check in batch.checks:
            request = check.request
            result = out.results.add(id=check.id)
            span = check_spans.start(request) if traced and request.traceparent else None
            decider = self._decider_for(request)
            if decider is None:
                # The proxy reloaded first: decide once this service has too.
                waiting.append((result, request, None, "", self._decider, span))
                continue
            if self._step(result, request, decider, now, waiting, span) and span is not None:
                check_spans.end(span, result.response)
        return out, waiting

    def _step(
        self,
        result: authorize_pb2.BatchedResult,
        request: authorize_pb2.CheckRequest,
        decider: Decider,
        now: float,
        waiting: list[Waiting],
        span: Any = None,
    ) -> bool:
        """Decide now if the session is at hand (True), else add the check to `waiting`."""
        state, session_id = self._prepare(request, now, decider)
        session = self._sessions.cached(session_id, now) if session_id else None
        if session_id and session is None:
            assert state is not None
            waiting.append((result, request, state, session_id, decider, span))
            return False
        self._decide(request, state, session, now, result.response, decider)
        return True

    async def decide_waiting(self, waiting: list[Waiting], now: float) -> None:
        """Fetch each distinct session once, concurrently, then decide its checks."""
        behind = [entry for entry in waiting if entry[2] is None]
        if behind:
            waiting = [entry for entry in waiting if entry[2] is not None]
            if self.catch_up is not None:
                await self.catch_up()  # once for the batch, not once per check
            for result, request, *_, span in behind:
                decider = self._decider_for(request)
                if decider is None:
                    result.response.CopyFrom(out_of_step(request))
                    self._answer(request, result.response, None)
                elif not self._step(result, request, decider, now, waiting, span):
                    continue
                if span is not None:
                    check_spans.end(span, result.response)
            if not waiting:
                return
        ids = list({entry[3] for entry in waiting})
        # A fetch shared by several traced checks is a child of the first one's span.
        parents = {entry[3]: entry[5] for entry in reversed(waiting) if entry[5] is not None}
        found = await asyncio.gather(
            *(self._sessions.get(i, now, parents.get(i)) for i in ids), return_exceptions=True
        )
        sessions = dict(zip(ids, found, strict=True))
        for result, request, state, session_id, decider, span in waiting:
            got = sessions[session_id]
            if isinstance(got, BaseException):
                # Fail closed, whatever went wrong; the unexpected is logged loudly.
                if not isinstance(got, SessionsUnavailable):
                    log.error("session lookup failed: %r", got)
                result.response.CopyFrom(unavailable(request, str(got) or repr(got)))
                self._answer(request, result.response, None)
            else:
                self._decide(request, state, got, now, result.response, decider)
            if span is not None:
                check_spans.end(span, result.response)

    def _prepare(
        self, request: authorize_pb2.CheckRequest, now: float, decider: Decider
    ) -> tuple[RouteState | None, str]:
        """The route, and the id of the session the decision needs ("" for none)."""
        state = decider.match(request.scheme, request.host, request.path)
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
        decider: Decider,
    ) -> authorize_pb2.CheckResponse:
        """The decision, filled into `into` (and logged)."""
        if state is None:
            into.CopyFrom(not_found(request))
            return self._answer(request, into, None)
        cert = client_cert_view(
            request.client_certificate,
            request.client_certificate.requested or state.needs_client_certificate,
        )
        started = time.perf_counter()
        decider.evaluate(state, request, session, cert, now, into)
        metrics.evaluation.observe(None, time.perf_counter() - started)
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
        # A slice of a repeated field is a list made in C: tuple() of the field itself
        # iterates it in Python, 1 µs a check.
        metrics.decisions.inc((response.outcome, tuple(response.reasons[:])))
        level = logging.DEBUG if response.outcome == authorize_pb2.ALLOW else logging.INFO
        if log.isEnabledFor(level):
            log.log(
                level,
                "%s",
                Fields(
                    "decision",
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


def out_of_step(request: authorize_pb2.CheckRequest) -> authorize_pb2.CheckResponse:
    return authorize_pb2.CheckResponse(
        request_id=request.request_id,
        outcome=authorize_pb2.UNAVAILABLE,
        reasons=["config-out-of-step"],
        explanation=(
            f"the proxy's routes (version {request.config_version}) are newer than "
            "authorize's configuration, which could not catch up"
        ),
    )


def unavailable(request: authorize_pb2.CheckRequest, why: str) -> authorize_pb2.CheckResponse:
    return authorize_pb2.CheckResponse(
        request_id=request.request_id,
        outcome=authorize_pb2.UNAVAILABLE,
        reasons=["session-store-unavailable"],
        explanation=f"sessions could not be read: {why}",
    )
