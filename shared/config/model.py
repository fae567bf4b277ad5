"""The typed, immutable configuration that every service is handed.

Defaults live here, on the dataclass fields, and nowhere else: the parser passes
only the keys a user actually gave, so the schema table and the model cannot
disagree about what an omitted key means.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

ALL_SERVICES: frozenset[str] = frozenset({"authenticate", "authorize", "proxy"})
# Vallum's verifying sidecar: never part of `all`, it runs alone next to one app.
SIDECAR_SERVICE = "sidecar"
# Pomerium's default idp_scopes; offline_access asks for a refresh token.
DEFAULT_IDP_SCOPES = ("openid", "profile", "email", "offline_access")
# Pomerium's downstream_mtls.enforcement values; the first is its default.
ENFORCEMENT_MODES = ("policy_with_default_deny", "policy", "reject_connection")
# Pomerium's SAN types for downstream_mtls.match_subject_alt_names.
SAN_KINDS = ("dns", "email", "ip_address", "uri", "user_principal_name")
# The ACME directories autocert uses unless autocert_ca names another.
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _empty_map() -> Mapping[str, Any]:
    # A fresh proxy per instance: dataclasses refuse an unhashable shared default.
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Address:
    """A listen address; an empty host means every interface."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Source:
    """PEM material given inline or by path.

    The path is kept even once `data` is filled in, so that TLS code can re-read
    the file when it changes on disk (certificates are rotated without restarts).
    """

    path: str | None
    # Kept out of repr so logging a config never prints a private key.
    data: bytes | None = field(repr=False)

    def __str__(self) -> str:
        # Never the bytes: a Source may hold a private key.
        return self.path if self.path is not None else "<inline>"


@dataclass(frozen=True, slots=True)
class CertificatePair:
    cert: Source
    key: Source


@dataclass(frozen=True, slots=True)
class SanMatcher:
    """One `match_subject_alt_names` entry: a client certificate passes when any of its
    SANs of this kind matches the whole pattern (re.fullmatch, as Pomerium anchors it)."""

    kind: str
    pattern: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DownstreamMTLS:
    """Pomerium's `downstream_mtls`: client certificates from users to the proxy.

    Nothing here asks for a certificate by itself: without a CA (here, in
    Config.client_ca or on a route) the other settings have no effect.
    """

    ca: Source | None = None
    crl: Source | None = None
    enforcement: str = ENFORCEMENT_MODES[0]
    match_subject_alt_names: tuple[SanMatcher, ...] = ()
    # CA certificates allowed above the leaf, the trust anchor included (1: issued
    # directly by a CA in the bundle, Pomerium's default); 0 means no limit.
    max_verify_depth: int = 1


@dataclass(frozen=True, slots=True)
class WeightedURL:
    """One upstream of a route; weights only matter relative to their siblings."""

    url: str
    weight: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Redirect:
    """A route that answers with a redirect instead of proxying.

    None means "keep that part of the request URL as it is".
    """

    https_redirect: bool | None = None
    scheme_redirect: str | None = None
    host_redirect: str | None = None
    port_redirect: int | None = None
    path_redirect: str | None = None
    prefix_rewrite: str | None = None
    response_code: int | None = None
    strip_query: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectResponse:
    """A route that answers with a fixed status and body instead of proxying."""

    status: int
    body: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    # `from` is a Python keyword, hence the attribute name.
    from_url: str
    to: tuple[WeightedURL, ...] = ()
    redirect: Redirect | None = None
    response: DirectResponse | None = None

    prefix: str | None = None
    path: str | None = None
    regex: str | None = None

    prefix_rewrite: str | None = None
    regex_rewrite_pattern: str | None = None
    regex_rewrite_substitution: str | None = None
    host_rewrite: str | None = None
    host_rewrite_header: str | None = None
    preserve_host_header: bool = False
    set_request_headers: Mapping[str, str] = field(default_factory=_empty_map)
    remove_request_headers: tuple[str, ...] = ()
    set_response_headers: Mapping[str, str] = field(default_factory=_empty_map)
    allow_websockets: bool = False
    timeout: float = 30.0
    idle_timeout: float | None = None
    # None inherits Config.pass_identity_headers.
    pass_identity_headers: bool | None = None
    # Added to Config.jwt_groups_filter, not instead of it (Pomerium unions the two).
    jwt_groups_filter: tuple[str, ...] = ()
    # None inherits Config.jwt_issuer_format.
    jwt_issuer_format: str | None = None

    # Raw YAML, frozen (mappings become read-only, lists become tuples); the policy
    # module compiles it.
    policy: Any = None
    allow_public_unauthenticated_access: bool = False
    allow_any_authenticated_user: bool = False
    cors_allow_preflight: bool = False
    allowed_users: tuple[str, ...] = ()
    allowed_domains: tuple[str, ...] = ()
    allowed_idp_claims: Mapping[str, tuple[Any, ...]] = field(default_factory=_empty_map)

    tls_custom_ca: Source | None = None
    tls_server_name: str | None = None
    tls_upstream_server_name: str | None = None
    tls_skip_verify: bool = False
    tls_client_cert: Source | None = None
    tls_client_key: Source | None = None
    tls_upstream_allow_renegotiation: bool = False
    tls_downstream_client_ca: Source | None = None

    name: str | None = None
    description: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    services: frozenset[str] = ALL_SERVICES
    address: Address = Address("", 443)
    grpc_address: Address | None = None
    http_redirect_addr: Address | None = None
    insecure_server: bool = False
    # Vallum's own: proxy processes sharing `address` (and `http_redirect_addr`) with
    # SO_REUSEPORT, each a child of the supervisor with its own Check stream and pool.
    proxy_workers: int = 1
    # The check channel's port on authorize's host; 0: any free port, which the proxy
    # learns over gRPC (Vallum's own key).
    authorize_check_port: int = 0
    # Vallum's own, DEVELOPMENT ONLY: the all-in-one supervisor also runs the demo
    # identity provider (at idp_provider_url) and the demo app (at routes[0].to).
    demo: bool = False

    authenticate_service_url: str | None = None
    authenticate_internal_service_url: str | None = None
    authorize_service_url: tuple[str, ...] = ("https://127.0.0.1:5443",)
    databroker_service_url: tuple[str, ...] = ("https://127.0.0.1:5444",)

    # Decoded secret bytes. A `*_file` path is kept next to each so the loader
    # knows what to read; after load_config the bytes are always filled in.
    shared_secret: bytes | None = field(default=None, repr=False)
    shared_secret_file: str | None = None
    cookie_secret: bytes | None = field(default=None, repr=False)
    cookie_secret_file: str | None = None

    # The OpenID Connect provider (authenticate's relying party). idp_provider names a
    # Pomerium preset; every accepted one is plain OIDC, so it only picks a default URL.
    idp_provider: str = "oidc"
    # The issuer, exactly as the provider's discovery document spells it.
    idp_provider_url: str | None = None
    idp_client_id: str | None = None
    idp_client_secret: str | None = field(default=None, repr=False)
    idp_client_secret_file: str | None = None
    idp_scopes: tuple[str, ...] = DEFAULT_IDP_SCOPES
    idp_request_params: Mapping[str, str] = field(default_factory=_empty_map)
    # Extra CAs trusted for the IdP's HTTPS, on top of the system store.
    idp_ca: Source | None = None

    # The session cookie the authenticate service sets and the proxy reads.
    cookie_name: str = "_pomerium"
    cookie_domain: str | None = None
    cookie_expire: float = 14 * 3600.0
    cookie_same_site: str = "lax"
    cookie_http_only: bool = True
    cookie_secure: bool = True

    certificate: Source | None = None
    certificate_key: Source | None = None
    certificates: tuple[CertificatePair, ...] = ()

    # Certificates for route hosts from an ACME CA, kept in autocert_dir (None:
    # <data_dir>/autocert). autocert_ca, when set, is used instead of Let's Encrypt
    # (production, or staging with autocert_use_staging).
    autocert: bool = False
    autocert_dir: str | None = None
    autocert_ca: str | None = None
    autocert_use_staging: bool = False
    autocert_email: str | None = None
    autocert_must_staple: bool = False
    # External account binding (RFC 8555 section 7.3.4), for CAs that require it. The
    # MAC key is the base64url text as the CA issued it: a secret, so out of repr.
    autocert_eab_key_id: str | None = None
    autocert_eab_mac_key: str | None = field(default=None, repr=False)
    autocert_eab_mac_key_file: str | None = None
    # CAs trusted for a private ACME server's HTTPS, on top of the system store.
    autocert_trusted_ca: Source | None = None

    downstream_mtls: DownstreamMTLS = DownstreamMTLS()
    # Pomerium's older global name for downstream_mtls.ca; the two may not both be set.
    client_ca: Source | None = None

    certificate_authority: Source | None = None
    internal_certificate: Source | None = None
    internal_certificate_key: Source | None = None
    trust_domain: str = "vallum.internal"

    data_dir: str = "/var/lib/vallum"
    # Where authenticate keeps sessions: sqlite (<data_dir>/sessions.db), postgres
    # (shared by replicas) or memory (lost on restart).
    databroker_storage_type: str = "sqlite"
    # A libpq key=value string or postgresql:// URL. It may hold a password: out of repr.
    databroker_storage_connection_string: str | None = field(default=None, repr=False)
    databroker_storage_connection_string_file: str | None = None
    log_level: str = "info"
    # Prometheus metrics (/metrics, plain HTTP) for this process; None: off.
    metrics_address: Address | None = None
    # console: readable lines; json: one object per line (Vallum's own key).
    log_format: str = "console"
    # OpenTelemetry tracing (Pomerium's otel_* keys, see shared/config/tracing.py):
    # off unless the exporter is otlp. Durations in seconds, None: the SDK's default.
    otel_traces_exporter: str = "none"
    otel_traces_sampler_arg: float = 1.0
    otel_resource_attributes: tuple[tuple[str, str], ...] = ()
    otel_log_level: str | None = None
    otel_attribute_value_length_limit: int | None = None
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_exporter_otlp_protocol: str | None = None
    otel_exporter_otlp_traces_protocol: str | None = None
    # May carry a collector's credentials: out of repr.
    otel_exporter_otlp_headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    otel_exporter_otlp_traces_headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    otel_exporter_otlp_timeout: float | None = None
    otel_exporter_otlp_traces_timeout: float | None = None
    otel_bsp_schedule_delay: float | None = None
    otel_bsp_max_export_batch_size: int | None = None
    pass_identity_headers: bool | None = None
    # The identity assertion. signing_key holds one or more PEM private keys (the first
    # signs, all are published); None means a key derived from shared_secret.
    signing_key: Source | None = None
    # (header name, claim name) pairs, in the order given.
    jwt_claims_headers: tuple[tuple[str, str], ...] = ()
    jwt_issuer_format: str = "hostOnly"
    jwt_groups_filter: tuple[str, ...] = ()
    # How many proxies in front of Vallum to trust in X-Forwarded-For (Envoy's setting
    # of the same name); 0 trusts none, so the client is the TCP peer.
    xff_num_trusted_hops: int = 0
    # Forward X-Forwarded-For without appending the peer.
    skip_xff_append: bool = False
    routes: tuple[Route, ...] = ()

    # The verifying sidecar (Vallum's own keys, see shared/config/sidecar.py): a TLS
    # listener in front of one app that forwards only requests that come from Vallum.
    sidecar_address: Address = Address("", 8443)
    sidecar_upstream: str | None = None
    sidecar_certificate: Source | None = None
    sidecar_certificate_key: Source | None = None
    # With a client CA, the handshake requires a certificate from it; names, when
    # given, are exact SAN values (URI or DNS) one of which the certificate must carry.
    sidecar_client_ca: Source | None = None
    sidecar_allowed_client_names: tuple[str, ...] = ()
    # With a JWKS URL, every request needs a valid X-Pomerium-JWT-Assertion.
    sidecar_jwks_url: str | None = None
    sidecar_jwt_issuer: str | None = None
    sidecar_jwt_audience: str | None = None
    sidecar_jwks_ca: Source | None = None
    # (header name, claim name) pairs set from the verified assertion, in order given.
    sidecar_identity_headers: tuple[tuple[str, str], ...] = ()

    # A fingerprint of the `routes` as written (canonical JSON of the YAML), so that
    # processes running different builds of Vallum agree on it (see reload.py).
    routes_fingerprint: str = ""
    # Where the configuration came from; relative paths were resolved against base_dir.
    source_path: str | None = None
    base_dir: str = "."
    # Warnings about a configuration that is accepted (deprecated keys, settings without
    # effect), each starting with the key path it is about; logged once at start-up.
    notices: tuple[str, ...] = ()

    @property
    def all_in_one(self) -> bool:
        return self.services == ALL_SERVICES

    @property
    def sidecar_only(self) -> bool:
        return self.services == frozenset({SIDECAR_SERVICE})

    @property
    def autocert_directory(self) -> str:
        """Where the proxy keeps what autocert obtains (no I/O: the path only)."""
        return self.autocert_dir or os.path.join(self.data_dir, "autocert")

    @property
    def acme_directory_url(self) -> str:
        if self.autocert_ca is not None:
            return self.autocert_ca
        return LETS_ENCRYPT_STAGING if self.autocert_use_staging else LETS_ENCRYPT

    def autocert_hosts(self) -> tuple[str, ...]:
        """The names autocert obtains certificates for: each https route's host, once,
        in config order, then authenticate_service_url's host when this process runs
        the proxy; none while autocert is off.

        Wildcards are left out (only DNS-01 can prove them, and the proxy answers
        HTTP-01 and TLS-ALPN-01), as are IP addresses (orders name DNS identifiers).
        """
        if not self.autocert:
            return ()
        # Imported here: shared.routing imports this module for Route.
        from shared.routing.authority import parse_from

        hosts: dict[str, None] = {}
        # The sign-in host too, when the proxy serves it (Pomerium's autocert covers it).
        urls = [route.from_url for route in self.routes]
        if self.authenticate_service_url and "proxy" in self.services:
            urls.append(self.authenticate_service_url)
        for url in urls:
            try:
                authority = parse_from(url)
            except ValueError:
                continue  # only a Config built by hand can hold such a route
            if authority.scheme != "https" or authority.is_wildcard:
                continue
            if not is_ip_literal(authority.name):
                hosts.setdefault(authority.name)
        return tuple(hosts)

    def passes_identity_headers(self, route: Route) -> bool:
        """The route's own setting, else the global one, else off."""
        if route.pass_identity_headers is not None:
            return route.pass_identity_headers
        return bool(self.pass_identity_headers)

    def jwt_issuer_format_for(self, route: Route) -> str:
        """The route's own issuer format, else the global one."""
        return route.jwt_issuer_format or self.jwt_issuer_format

    def jwt_groups_filter_for(self, route: Route) -> frozenset[str]:
        """Groups the route's assertions may name; empty means every group."""
        return frozenset(self.jwt_groups_filter) | frozenset(route.jwt_groups_filter)

    def client_ca_for(self, route: Route) -> Source | None:
        """The CA that verifies client certificates on this route's host, if any.

        A route's own CA wins: Vallum asks for certificates per host (by SNI), so a
        route CA stays that route's alone rather than joining a global bundle.
        """
        for source in (route.tls_downstream_client_ca, self.downstream_mtls.ca, self.client_ca):
            if source is not None:
                return source
        return None

    def requires_client_certificate(self, route: Route) -> bool:
        return self.client_ca_for(route) is not None
