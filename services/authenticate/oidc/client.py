"""The relying party: the one object the authenticate service holds to sign users in.

It ties discovery, the JWKS cache, the sealed state, the token endpoint and ID token
validation together, and owns nothing else: the HTTP client is injected (its TLS
trusting `idp_ca`, see `new_http_client`), and so are the state codec and the clock.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import httpx

from services.authenticate.oidc import tokens
from services.authenticate.oidc.authrequest import AuthRequest, authorization_url
from services.authenticate.oidc.calls import DEFAULT_DEADLINE
from services.authenticate.oidc.discovery import DEFAULT_TTL, Discovery
from services.authenticate.oidc.identity import OIDCIdentity, identity_from
from services.authenticate.oidc.idtoken import DEFAULT_LEEWAY
from services.authenticate.oidc.idtoken import verify_id_token as verify_token
from services.authenticate.oidc.jwks import MIN_REFETCH_INTERVAL, JWKSCache
from services.authenticate.oidc.logout import end_session_url as logout_url
from services.authenticate.oidc.state import State, StateCodec, check_csrf
from services.authenticate.oidc.tokens import ClientCredentials, TokenResponse
from shared.config import Config
from shared.config.model import DEFAULT_IDP_SCOPES


@dataclass(frozen=True, slots=True)
class ClientSettings:
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...] = DEFAULT_IDP_SCOPES
    request_params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_config(cls, config: Config) -> ClientSettings:
        if not (config.idp_provider_url and config.idp_client_id and config.idp_client_secret):
            raise ValueError(
                "no identity provider configured "
                "(set idp_provider_url, idp_client_id and idp_client_secret)"
            )
        return cls(
            issuer=config.idp_provider_url,
            client_id=config.idp_client_id,
            client_secret=config.idp_client_secret,
            scopes=config.idp_scopes,
            request_params=config.idp_request_params,
        )


def idp_ssl_context(ca_pem: bytes | None) -> ssl.SSLContext:
    """The system's trust store, plus `idp_ca` when configured (private and demo IdPs)."""
    context = ssl.create_default_context()
    if ca_pem:
        # cadata takes ASCII PEM; text around the blocks (comments) may not be ASCII.
        context.load_verify_locations(cadata=ca_pem.decode("ascii", "ignore"))
    return context


def new_http_client(config: Config, *, deadline: float = DEFAULT_DEADLINE) -> httpx.AsyncClient:
    ca = config.idp_ca.data if config.idp_ca is not None else None
    # trust_env off: proxies and CA bundles come from Vallum's config, not from
    # whatever variables the process happened to inherit.
    return httpx.AsyncClient(
        verify=idp_ssl_context(ca),
        timeout=deadline,
        follow_redirects=False,
        trust_env=False,
    )


@dataclass(frozen=True, slots=True)
class SignIn:
    """A completed callback: who signed in, their tokens, and where they were going."""

    identity: OIDCIdentity
    tokens: TokenResponse
    redirect_to: str


class RelyingParty:
    def __init__(
        self,
        settings: ClientSettings,
        http: httpx.AsyncClient,
        states: StateCodec,
        *,
        deadline: float = DEFAULT_DEADLINE,
        leeway: float = DEFAULT_LEEWAY,
        use_userinfo: bool = False,
        discovery_ttl: float = DEFAULT_TTL,
        jwks_min_refetch_interval: float = MIN_REFETCH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.states = states
        self._http = http
        self._deadline = deadline
        self._leeway = leeway
        self._use_userinfo = use_userinfo
        self._credentials = ClientCredentials(settings.client_id, settings.client_secret)
        self.discovery = Discovery(
            http, settings.issuer, ttl=discovery_ttl, deadline=deadline, clock=clock
        )
        self.jwks = JWKSCache(
            http,
            self.discovery,
            min_refetch_interval=jwks_min_refetch_interval,
            deadline=deadline,
            clock=clock,
        )

    async def begin(self, *, redirect_uri: str, redirect_to: str, now: float) -> AuthRequest:
        """Start a sign-in: the IdP URL to redirect to, and the CSRF cookie to set.

        `redirect_uri` is the callback (`<authenticate URL>/oauth2/callback`);
        `redirect_to` is where the user goes afterwards, sealed so nobody can change it.
        """
        metadata = await self.discovery.metadata()
        state, csrf_cookie = State.new(redirect_to, now)
        sealed = self.states.seal_state(state)
        url = authorization_url(
            metadata.authorization_endpoint,
            client_id=self.settings.client_id,
            redirect_uri=redirect_uri,
            scopes=self.settings.scopes,
            state=sealed,
            nonce=state.nonce,
            verifier=state.verifier,
            extra_params=self.settings.request_params,
        )
        return AuthRequest(url, sealed, csrf_cookie)

    async def complete(
        self,
        *,
        state: str | None,
        csrf_cookie: str | None,
        code: str,
        redirect_uri: str,
        now: float,
    ) -> SignIn:
        """Finish a sign-in from the callback's `state` and `code`.

        The state and CSRF cookie are checked before the code is spent, so a forged
        or replayed callback never reaches the IdP.
        """
        opened = self.states.open_state(state, now)
        check_csrf(opened, csrf_cookie)
        answer = await self.exchange_code(code, opened.verifier, redirect_uri)
        assert answer.id_token is not None  # exchange_code refuses answers without one
        claims = await self.verify_id_token(answer.id_token, nonce=opened.nonce, now=now)
        if self._use_userinfo and (await self.discovery.metadata()).userinfo_endpoint:
            info = await self.userinfo(answer.access_token, expected_sub=claims["sub"])
            claims = tokens.merge_userinfo(claims, info)
        return SignIn(identity_from(claims), answer, opened.redirect_to)

    async def exchange_code(self, code: str, verifier: str, redirect_uri: str) -> TokenResponse:
        return await tokens.exchange_code(
            self._http,
            await self.discovery.metadata(),
            self._credentials,
            code=code,
            verifier=verifier,
            redirect_uri=redirect_uri,
            deadline=self._deadline,
        )

    async def verify_id_token(self, raw: str, *, nonce: str | None, now: float) -> dict[str, Any]:
        """`nonce` None only for an ID token from a refresh (OIDC Core section 12.2)."""
        metadata = await self.discovery.metadata()
        return await verify_token(
            raw,
            issuer=self.settings.issuer,
            client_id=self.settings.client_id,
            allowed_algs=metadata.id_token_signing_alg_values_supported,
            jwks=self.jwks,
            nonce=nonce,
            now=now,
            leeway=self._leeway,
        )

    async def refresh(self, refresh_token: str) -> TokenResponse:
        return await tokens.refresh(
            self._http,
            await self.discovery.metadata(),
            self._credentials,
            refresh_token,
            deadline=self._deadline,
        )

    async def userinfo(
        self, access_token: str, *, expected_sub: str | None = None
    ) -> dict[str, Any]:
        return await tokens.userinfo(
            self._http,
            await self.discovery.metadata(),
            access_token,
            expected_sub=expected_sub,
            deadline=self._deadline,
        )

    async def end_session_url(
        self,
        id_token_hint: str | None,
        post_logout_redirect_uri: str | None,
        state: str | None,
    ) -> str | None:
        """The IdP's logout URL, or None when it has none (sign-out is then local only)."""
        metadata = await self.discovery.metadata()
        return logout_url(
            metadata.end_session_endpoint,
            client_id=self.settings.client_id,
            id_token_hint=id_token_hint,
            post_logout_redirect_uri=post_logout_redirect_uri,
            state=state,
        )
