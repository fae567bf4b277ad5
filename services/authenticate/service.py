"""The authenticate service: owner of sessions (SessionService over mTLS gRPC)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from services.authenticate.sessions_rpc import ACL, SessionServicer
from services.authenticate.store import MemoryStore, SessionStore
from services.topology import grpc_listen_address
from shared.config import Config
from shared.pb import session_pb2_grpc
from shared.rpc import RpcServer, internal_tls, start_server


@dataclass
class Authenticate:
    rpc: RpcServer
    store: SessionStore

    def describe(self) -> str:
        return f"SessionService (gRPC, mTLS) on {self.rpc.address} as {self.rpc.identity}"

    async def stop(self, grace: float) -> None:
        await self.rpc.stop(grace)


async def start(config: Config) -> Authenticate:
    store = MemoryStore()

    def register(server: grpc.aio.Server) -> None:
        session_pb2_grpc.add_SessionServiceServicer_to_server(SessionServicer(store), server)

    address = grpc_listen_address(config, "authenticate")
    rpc = await start_server(address, internal_tls(config), ACL, register)
    return Authenticate(rpc, store)
