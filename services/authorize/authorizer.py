"""Authorizer over gRPC: unary Check and the batched CheckStream.

Only the proxy may call it (ACL, enforced by the identity gate).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from shared.config import Config
from shared.pb import authorize_pb2, authorize_pb2_grpc
from shared.rpc import ServiceChannel

_SERVICE = "/vallum.authorize.v1.Authorizer/"
ACL = {
    _SERVICE + "Check": frozenset({"proxy"}),
    _SERVICE + "CheckStream": frozenset({"proxy"}),
}


class AuthorizerServicer(authorize_pb2_grpc.AuthorizerServicer):
    def __init__(self, config: Config, sessions: ServiceChannel) -> None:
        self._config = config
        self._sessions = sessions

    def decide(self, request: authorize_pb2.CheckRequest) -> authorize_pb2.CheckResponse:
        # Fails closed until the policy engine decides (next step of the build).
        return authorize_pb2.CheckResponse(
            request_id=request.request_id,
            outcome=authorize_pb2.DENY,
            reasons=["policy-not-loaded"],
        )

    async def Check(
        self, request: authorize_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> authorize_pb2.CheckResponse:
        return self.decide(request)

    async def CheckStream(
        self,
        requests: AsyncIterator[authorize_pb2.CheckBatch],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[authorize_pb2.CheckResultBatch]:
        async for batch in requests:
            yield authorize_pb2.CheckResultBatch(
                results=[
                    authorize_pb2.BatchedResult(id=c.id, response=self.decide(c.request))
                    for c in batch.checks
                ]
            )
