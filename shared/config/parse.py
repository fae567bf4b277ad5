"""Pure parsing of a whole configuration: YAML mapping + environment → Config.

No files are read and os.environ is never consulted: the environment arrives as an
argument, and `*_file` keys only record resolved paths for load.py to read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from shared.config.assertion import (
    check_signing_key,
    parse_jwt_claims_headers,
    parse_jwt_groups_filter,
    parse_jwt_issuer_format,
)
from shared.config.autocert import AUTOCERT_KEYS, autocert_notices, check_autocert
from shared.config.errors import ConfigError, FieldError, Problem
from shared.config.fields import (
    got,
    parse_bool,
    parse_int,
    parse_log_level,
    parse_services,
    parse_trust_domain,
)
from shared.config.model import CertificatePair, Config, Source
from shared.config.mtls import MTLS_KEYS, check_mtls, mtls_notices
from shared.config.operate import OPERATE_KEYS
from shared.config.policies import compile_routes
from shared.config.routes import parse_routes
from shared.config.schema import (
    Ctx,
    Given,
    Key,
    Parser,
    build,
    is_set,
    plain,
    read_object,
    require_together,
    secret_key,
    source_key,
)
from shared.config.sidecar import SIDECAR_KEYS, check_sidecar, sidecar_notices
from shared.config.signin import SIGN_IN_KEYS, check_sign_in
from shared.config.sources import PemKind, parse_cert_or_path, resolve_path
from shared.config.storage import STORAGE_KEYS, check_storage
from shared.config.tracing import TRACING_KEYS, check_tracing, tracing_notices
from shared.config.urls import parse_address, parse_service_url, parse_service_urls


def _parse_dir(value: Any, ctx: Ctx) -> str:
    return resolve_path(value, ctx.base_dir, ctx.home)


# More proxies than this in front of one another is a misconfiguration, not a network.
MAX_TRUSTED_HOPS = 16


def _parse_trusted_hops(value: Any) -> int:
    return parse_int(value, 0, MAX_TRUSTED_HOPS)


# Each worker is a whole process (event loop, Check stream, upstream pool); past a few
# per core they only add memory, so a large number is a typo, not a machine.
MAX_PROXY_WORKERS = 64


def _parse_proxy_workers(value: Any) -> int:
    return parse_int(value, 1, MAX_PROXY_WORKERS)


def _parse_port(value: Any) -> int:
    return parse_int(value, 0, 65535)


def _pair_part(kind: PemKind) -> Parser:
    def parse(value: Any, ctx: Ctx) -> Source:
        return parse_cert_or_path(value, kind, ctx.base_dir, ctx.home)

    return parse


CERTIFICATE_PAIR_KEYS: tuple[Key, ...] = (
    Key("cert", _pair_part(PemKind.CERT)),
    Key("key", _pair_part(PemKind.KEY)),
)

# Stands in for a part that failed to parse, so certificates[i] stays aligned with
# the file; it only exists inside a configuration that is being refused.
_MISSING = Source(None, None)


def _parse_certificates(value: Any, ctx: Ctx) -> tuple[CertificatePair, ...]:
    if not isinstance(value, list):
        raise FieldError(f"expected a list of {{cert, key}} mappings, got {got(value)}")
    pairs: list[CertificatePair] = []
    for index, entry in enumerate(value):
        where = ctx.item(index)
        given = read_object(entry, CERTIFICATE_PAIR_KEYS, where)
        values = build(given, CERTIFICATE_PAIR_KEYS, where)
        if isinstance(entry, Mapping):
            for name in ("cert", "key"):
                if name not in given:
                    where.child(name).add("required")
        pairs.append(CertificatePair(values.get("cert", _MISSING), values.get("key", _MISSING)))
    return tuple(pairs)


TOP_KEYS: tuple[Key, ...] = (
    Key("services", plain(parse_services)),
    Key("address", plain(parse_address)),
    Key("grpc_address", plain(parse_address)),
    Key("http_redirect_addr", plain(parse_address)),
    Key("insecure_server", plain(parse_bool)),
    Key("proxy_workers", plain(_parse_proxy_workers)),
    Key("authorize_check_port", plain(_parse_port)),
    Key("demo", plain(parse_bool)),
    Key("authenticate_service_url", plain(parse_service_url)),
    Key("authenticate_internal_service_url", plain(parse_service_url)),
    Key("authorize_service_url", plain(parse_service_urls)),
    Key("databroker_service_url", plain(parse_service_urls)),
    secret_key("shared_secret"),
    secret_key("cookie_secret"),
    *SIGN_IN_KEYS,
    source_key("certificate", PemKind.CERT),
    source_key("certificate_key", PemKind.KEY),
    Key("certificates", _parse_certificates, env=False),
    *AUTOCERT_KEYS,
    *MTLS_KEYS,
    source_key("certificate_authority", PemKind.CERT),
    source_key("internal_certificate", PemKind.CERT),
    source_key("internal_certificate_key", PemKind.KEY),
    Key("trust_domain", plain(parse_trust_domain)),
    Key("data_dir", _parse_dir),
    *STORAGE_KEYS,
    Key("log_level", plain(parse_log_level)),
    *OPERATE_KEYS,
    *TRACING_KEYS,
    Key("pass_identity_headers", plain(parse_bool)),
    source_key("signing_key", PemKind.KEY, check_signing_key),
    Key("jwt_claims_headers", plain(parse_jwt_claims_headers)),
    Key("jwt_issuer_format", plain(parse_jwt_issuer_format)),
    Key("jwt_groups_filter", plain(parse_jwt_groups_filter)),
    Key("xff_num_trusted_hops", plain(_parse_trusted_hops)),
    Key("skip_xff_append", plain(parse_bool)),
    Key("routes", parse_routes, env=False),
    *SIDECAR_KEYS,
)

INTERNAL_TLS_KEYS = ("certificate_authority", "internal_certificate", "internal_certificate_key")


def env_name(key: str) -> str:
    return key.upper()


def _apply_environment(given: dict[str, Given], environ: Mapping[str, str]) -> None:
    for key in TOP_KEYS:
        if not key.env:
            continue
        # Empty variables are treated as unset, as compose files often leave them blank.
        found = {
            name: environ[env_name(name)]
            for name in key.names()
            if environ.get(env_name(name), "").strip()
        }
        if not found:
            continue
        # CERTIFICATE in the environment replaces certificate_file in the file too:
        # otherwise overriding a file-configured value would report "not both".
        for name in key.names():
            given.pop(name, None)
        for name, value in found.items():
            given[name] = Given(value, f"{env_name(name)} (environment)")


def _check(config: Config, given: Mapping[str, Given], ctx: Ctx) -> None:
    require_together(given, "certificate", "certificate_key", ctx)

    # The sidecar neither signs nor calls Vallum's services: no secrets, no internal PKI.
    split = not config.all_in_one and not config.sidecar_only
    if split:
        for name in ("shared_secret", "cookie_secret"):
            if not is_set(given, name):
                ctx.child(name).add(
                    f"required unless services is all (set {name} or {name}_file; "
                    "generate one with: head -c32 /dev/urandom | base64)"
                )

    present = [name for name in INTERNAL_TLS_KEYS if is_set(given, name)]
    for name in INTERNAL_TLS_KEYS:
        if name in present:
            continue
        if split:
            ctx.child(name).add(
                f"required unless services is all (set {name} or {name}_file: "
                "each service proves its identity with a certificate from the internal CA)"
            )
        elif present:
            ctx.child(name).add(
                f"required when {present[0]} is set (give all of "
                f"{', '.join(INTERNAL_TLS_KEYS)}, or none to let all-in-one mode create them)"
            )

    # Workers share their listening ports; port 0 would give each its own random one.
    if config.proxy_workers > 1:
        for name in ("address", "http_redirect_addr"):
            address = getattr(config, name)
            if address is not None and address.port == 0:
                ctx.child(name).add(
                    f"port 0 (any free port) cannot be shared by proxy_workers: "
                    f"{config.proxy_workers}; give a fixed port"
                )


def parse_config_partial(
    raw: Mapping[str, Any], environ: Mapping[str, str], base_dir: str
) -> tuple[Config, list[Problem]]:
    """Parse as far as possible and return every problem found.

    The Config is only meaningful when the list is empty; load.py uses the rest of
    it to report unreadable files in the same pass as everything else.
    """
    problems: list[Problem] = []
    ctx = Ctx("", problems, os.path.normpath(base_dir), environ.get("HOME"))
    if not isinstance(raw, Mapping):
        ctx.add(f"the top level must be a mapping of keys to values, got {got(raw)}")
        return Config(base_dir=ctx.base_dir), problems
    given = read_object(raw, TOP_KEYS, ctx)
    _apply_environment(given, environ)
    config = Config(**build(given, TOP_KEYS, ctx), base_dir=ctx.base_dir)
    _check(config, given, ctx)
    check_storage(config, given, ctx)
    check_mtls(given, ctx)
    check_autocert(config, given, ctx)
    check_sidecar(config, given, ctx)
    check_tracing(config, given, ctx)
    config = check_sign_in(config, given, ctx)
    notices = [
        *mtls_notices(config, given),
        *autocert_notices(config, given),
        *sidecar_notices(config, given),
        *tracing_notices(config, given),
    ]
    config = replace(
        config, notices=tuple(notices), routes_fingerprint=fingerprint_routes(raw.get("routes"))
    )
    problems.extend(compile_routes(config.routes, config)[1])
    return config, problems


def fingerprint_routes(raw_routes: Any) -> str:
    """The routes as the user wrote them, canonicalised and hashed (16 hex digits)."""
    text = json.dumps(raw_routes or [], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_config(raw: Mapping[str, Any], environ: Mapping[str, str], base_dir: str) -> Config:
    """Validate a configuration mapping; raise ConfigError naming every problem.

    `base_dir` anchors relative paths (the config file's directory); `environ`
    overrides top-level keys by their upper-cased names. Warnings that do not refuse
    the configuration come back in `Config.notices`, for the caller to show.
    """
    config, problems = parse_config_partial(raw, environ, base_dir)
    if problems:
        raise ConfigError(problems)
    return config
