"""`/.well-known/pomerium` and its JWKS, on every route host: how upstreams verify.

The documents are built once per config; only the host-dependent metadata is
formatted per request.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from shared.config import Config
from shared.signing import signing_keys

CACHE = "max-age=60"


class WellKnown:
    def __init__(self, config: Config) -> None:
        self._jwks = signing_keys(config).jwks_json
        self._authenticate = (config.authenticate_service_url or "").rstrip("/")

    def publish(self, jwks: bytes) -> None:
        """Serve another key set from the next request (key rotation)."""
        self._jwks = jwks

    async def jwks(self, request: Request) -> Response:
        return Response(
            self._jwks,
            media_type="application/json",
            headers={"Cache-Control": CACHE},
        )

    async def metadata(self, request: Request) -> Response:
        base = f"{request.url.scheme}://{request.url.netloc}"
        document = {
            "issuer": f"{base}/",
            "jwks_uri": f"{base}/.well-known/pomerium/jwks.json",
            "frontchannel_logout_uri": f"{base}/.pomerium/sign_out",
        }
        if self._authenticate:
            document["authentication_callback_endpoint"] = f"{self._authenticate}/oauth2/callback"
        return Response(
            json.dumps(document, separators=(",", ":")),
            media_type="application/json",
            headers={"Cache-Control": CACHE},
        )
