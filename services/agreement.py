"""Asking peers whether they were given the same secrets (see shared/agreement.py).

Every gRPC service answers `Agreement.Fingerprints`. At start-up each service asks
the peers its configuration names: the proxy asks authorize and authenticate,
authorize asks authenticate, and authenticate asks the other replicas listed in
`databroker_service_url`. A disagreement refuses the start with a message naming
the key. A peer that cannot be reached yet (services start in any order) is asked
again in the background until it answers; a disagreement found then stops the
service the same way (exit code 78), rather than serving sign-in loops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import grpc

from shared.agreement import Fingerprints, disagreements
from shared.config import Config
from shared.pb import agreement_pb2, agreement_pb2_grpc
from shared.rpc import SERVICES, InternalTLS, ServiceChannel, StartupError, describe_rpc_error

log = logging.getLogger("vallum.agreement")

_METHOD = "/vallum.agreement.v1.Agreement/Fingerprints"
ACL = {_METHOD: frozenset(SERVICES)}
ASK_TIMEOUT = 2.0
RETRY_EVERY = 2.0


class AgreementServicer(agreement_pb2_grpc.AgreementServicer):
    def __init__(self, config: Config, service: str) -> None:
        self.service = service
        self.update(config)

    def update(self, config: Config) -> None:
        """Answer for this configuration from now on (after a reload)."""
        self._mine = Fingerprints.of(config)

    async def Fingerprints(
        self, request: agreement_pb2.FingerprintsRequest, context: grpc.aio.ServicerContext
    ) -> agreement_pb2.FingerprintsResponse:
        return to_message(self._mine, self.service)


def to_message(fingerprints: Fingerprints, service: str) -> agreement_pb2.FingerprintsResponse:
    return agreement_pb2.FingerprintsResponse(
        shared_secret=fingerprints.shared_secret,
        cookie_secret=fingerprints.cookie_secret,
        signing_key_ids=list(fingerprints.signing_key_ids),
        service=service,
        routes_version=fingerprints.routes_version,
    )


def from_message(message: agreement_pb2.FingerprintsResponse) -> Fingerprints:
    return Fingerprints(
        message.shared_secret,
        message.cookie_secret,
        tuple(message.signing_key_ids),
        message.routes_version,
    )


async def peer_routes_version(channel: ServiceChannel) -> str:
    """The routes version the service behind `channel` runs with now (raises
    grpc.aio.AioRpcError when it cannot be asked)."""
    stub = agreement_pb2_grpc.AgreementStub(channel.get())
    answer = await stub.Fingerprints(agreement_pb2.FingerprintsRequest(), timeout=ASK_TIMEOUT)
    return str(answer.routes_version)


def peers_of(config: Config, service: str) -> list[tuple[str, str]]:
    """(service, URL) of each peer `service` asks, in config order, each URL once."""
    wanted: list[tuple[str, str]] = []
    if service == "proxy":
        wanted += [("authorize", url) for url in config.authorize_service_url]
    if service in ("proxy", "authorize", "authenticate"):
        wanted += [("authenticate", url) for url in config.databroker_service_url]
    seen: set[str] = set()
    unique = []
    for peer, url in wanted:
        if url not in seen:
            seen.add(url)
            unique.append((peer, url))
    return unique


class Unreachable(Exception):
    pass


async def ask(url: str, tls: InternalTLS) -> Fingerprints:
    """The peer's fingerprints, or Unreachable with the reason."""
    channel = ServiceChannel(url, tls)
    try:
        stub = agreement_pb2_grpc.AgreementStub(channel.get())
        answer = await stub.Fingerprints(agreement_pb2.FingerprintsRequest(), timeout=ASK_TIMEOUT)
    except grpc.aio.AioRpcError as e:
        if e.code() == grpc.StatusCode.UNIMPLEMENTED:
            raise Unreachable(f"{url} does not answer Agreement (an older Vallum?)") from None
        raise Unreachable(describe_rpc_error(e, url)) from None
    finally:
        await channel.close()
    return from_message(answer)


async def agree(
    config: Config, service: str, tls: InternalTLS, refuse: Callable[[str], None]
) -> asyncio.Task[None] | None:
    """Ask every peer once; raise StartupError on any disagreement. Peers that did not
    answer are asked again by the returned task, which calls `refuse` on a late
    disagreement; None when every peer answered."""
    mine = Fingerprints.of(config)
    problems, pending = await _ask_all(mine, peers_of(config, service), tls)
    if problems:
        raise StartupError("\n".join(problems))
    if not pending:
        return None
    return asyncio.create_task(_keep_asking(mine, pending, tls, refuse))


async def _ask_all(
    mine: Fingerprints, peers: Sequence[tuple[str, str]], tls: InternalTLS
) -> tuple[list[str], list[tuple[str, str]]]:
    """The disagreements found, and the peers that could not be asked."""
    answers = await asyncio.gather(*(ask(url, tls) for _, url in peers), return_exceptions=True)
    problems: list[str] = []
    pending = []
    for (peer, url), answer in zip(peers, answers, strict=True):
        if isinstance(answer, Unreachable):
            pending.append((peer, url))
        elif isinstance(answer, BaseException):
            raise answer
        else:
            problems += disagreements(mine, answer, f"{peer} at {url}")
            if peer == "authorize" and answer.routes_version != mine.routes_version:
                # Not refused: during a rollout the two may differ for a while.
                log.warning(
                    "routes: authorize at %s runs other routes than this proxy (version "
                    "%s, ours %s); until it has ours, checks fail closed with "
                    "config-out-of-step",
                    url,
                    answer.routes_version,
                    mine.routes_version,
                )
    return problems, pending


async def _keep_asking(
    mine: Fingerprints,
    pending: list[tuple[str, str]],
    tls: InternalTLS,
    refuse: Callable[[str], None],
) -> None:
    while pending:
        await asyncio.sleep(RETRY_EVERY)
        problems, pending = await _ask_all(mine, pending, tls)
        if problems:
            refuse("the configuration disagrees with a peer:\n" + "\n".join(problems))
            return
