"""A session record turned into what decisions use, once per fetched version."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from google.protobuf import json_format

from shared.pb import session_pb2
from shared.policy import SessionView


@dataclass(slots=True)
class ActiveSession:
    id: str
    version: int
    expires_at: float  # epoch seconds; 0 (no expiry recorded) counts as expired
    view: SessionView
    id_token: str = ""
    access_token: str = ""
    # Per (route index, host): the assertion parts that do not change per request.
    templates: dict[tuple[int, str], Any] = field(default_factory=dict)


def from_record(record: session_pb2.Session) -> ActiveSession:
    claims = json_format.MessageToDict(record.claims) if record.HasField("claims") else {}
    view = SessionView(
        user_id=record.user_id,
        email=record.email,
        name=record.name,
        groups=tuple(record.groups),
        claims=MappingProxyType(claims),
    )
    expires = record.expires_at.seconds + record.expires_at.nanos / 1e9
    return ActiveSession(
        id=record.id,
        version=record.version,
        expires_at=expires,
        view=view,
        id_token=record.id_token,
        access_token=record.access_token,
    )
