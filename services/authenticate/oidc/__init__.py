"""The OpenID Connect relying party that the authenticate service signs users in with.

Authorization code flow with PKCE S256, a sealed `state` bound to a CSRF cookie,
nonce, discovery and JWKS caches with key rotation, refresh, userinfo and
RP-initiated logout. Network access only through an injected httpx.AsyncClient;
`RelyingParty` in client.py is the entry point.
"""

from services.authenticate.oidc.authrequest import AuthRequest, authorization_url
from services.authenticate.oidc.client import (
    ClientSettings,
    RelyingParty,
    SignIn,
    idp_ssl_context,
    new_http_client,
)
from services.authenticate.oidc.discovery import Discovery, ProviderMetadata
from services.authenticate.oidc.errors import (
    DiscoveryError,
    IdPError,
    IdPUnavailable,
    IdTokenError,
    OIDCError,
    StateError,
)
from services.authenticate.oidc.identity import OIDCIdentity, identity_from
from services.authenticate.oidc.jwks import JWKSCache
from services.authenticate.oidc.state import (
    State,
    StateCodec,
    check_csrf,
    csrf_cookie_name,
)
from services.authenticate.oidc.tokens import TokenResponse, merge_userinfo

__all__ = [
    "AuthRequest",
    "ClientSettings",
    "Discovery",
    "DiscoveryError",
    "IdPError",
    "IdPUnavailable",
    "IdTokenError",
    "JWKSCache",
    "OIDCError",
    "OIDCIdentity",
    "ProviderMetadata",
    "RelyingParty",
    "SignIn",
    "State",
    "StateCodec",
    "StateError",
    "TokenResponse",
    "authorization_url",
    "check_csrf",
    "csrf_cookie_name",
    "identity_from",
    "idp_ssl_context",
    "merge_userinfo",
    "new_http_client",
]
