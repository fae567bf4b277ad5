"""Every request to the IdP goes through `call`: one deadline for the whole exchange,
no redirects followed, a cap on the answer's size, and network faults turned into
IdPUnavailable. The httpx client is injected, so tests stand a MockTransport in for
the IdP and production passes one whose TLS trusts `idp_ca` (see client.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from services.authenticate.oidc.errors import IdPError, IdPUnavailable

DEFAULT_DEADLINE = 10.0
# Discovery documents, JWKS and token answers are a few KiB; bound what a broken or
# hostile IdP can make us buffer.
MAX_ANSWER_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    content_type: str
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json_object(self, what: str) -> dict[str, Any]:
        try:
            value = json.loads(self.body)
        except ValueError:
            raise IdPError(f"{what}: answer is not JSON", f"HTTP {self.status}") from None
        if not isinstance(value, dict):
            raise IdPError(f"{what}: answer is not a JSON object", f"HTTP {self.status}")
        return value


async def call(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    what: str,
    deadline: float = DEFAULT_DEADLINE,
    headers: Mapping[str, str] | None = None,
    form: Mapping[str, str] | None = None,
) -> Answer:
    """`what` names the call in messages ("discovery", "token endpoint", ...)."""
    try:
        # httpx's timeouts are per phase (connect, each read); the deadline bounds the whole.
        async with asyncio.timeout(deadline):
            async with client.stream(
                method,
                url,
                headers=dict(headers or {}),
                data=dict(form) if form is not None else None,
                timeout=deadline,
                follow_redirects=False,
            ) as response:
                body = await _read_capped(response, what)
                content_type = response.headers.get("content-type", "")
                status = response.status_code
    except (TimeoutError, httpx.TimeoutException):
        raise IdPUnavailable(
            f"{what} timed out", f"no answer from {url} in {deadline:g}s"
        ) from None
    except httpx.InvalidURL as exc:
        raise IdPError(f"{what}: invalid URL", f"{url}: {exc}") from None
    except httpx.TransportError as exc:
        raise IdPUnavailable(f"{what} unreachable", f"{url}: {type(exc).__name__}: {exc}") from None
    except httpx.HTTPError as exc:
        # An answer httpx cannot decode (a broken gzip body, say): the IdP spoke, badly.
        raise IdPError(f"{what}: unreadable answer", f"{type(exc).__name__}: {exc}") from None
    return Answer(status, content_type.split(";", 1)[0].strip().lower(), body)


async def _read_capped(response: httpx.Response, what: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
        raise IdPError(f"{what}: answer too large", f"{declared} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise IdPError(f"{what}: answer too large", f"over {MAX_ANSWER_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
