"""What a reloaded configuration may change while a service runs: pure functions.

A reload applies the keys in HOT_KEYS at once, to the next request. The others
(listening addresses, the services a process runs, secrets, the session store, the
internal PKI, ...) are fixed for the life of a process: a reload that changes one
keeps the running value, and says which keys need a restart. A reload never half
applies: the service builds everything the new configuration needs first, and only
then swaps it in.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any

from shared.config.model import Config, Source

# Keys a running service takes from a reloaded configuration.
HOT_KEYS = frozenset(
    {
        "routes",
        "signing_key",
        "pass_identity_headers",
        "jwt_claims_headers",
        "jwt_issuer_format",
        "jwt_groups_filter",
        "xff_num_trusted_hops",
        "skip_xff_append",
        "certificate",
        "certificate_key",
        "certificates",
        "log_level",
    }
)

# Not configuration of its own: where it came from, its warnings, and the fingerprint
# that follows `routes` (taken from the new configuration whenever that is applied).
_BOOKKEEPING = frozenset({"source_path", "base_dir", "notices", "routes_fingerprint"})


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    # What the service runs with from now on: the new config, with the running value
    # of every key that needs a restart.
    config: Config
    applied: tuple[str, ...]
    needs_restart: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.applied)


def plan(running: Config, loaded: Config) -> ReloadPlan:
    applied: list[str] = []
    fixed: list[str] = []
    for f in fields(Config):
        name = f.name
        if name in _BOOKKEEPING or _same(name, getattr(running, name), getattr(loaded, name)):
            continue
        (applied if name in HOT_KEYS else fixed).append(name)
    config = replace(loaded, **{name: getattr(running, name) for name in fixed})
    return ReloadPlan(config, tuple(applied), tuple(_key_names(fixed)))


# Keys whose files their users watch and re-read themselves (certificates, CAs, CRLs):
# new bytes in the same file are not a configuration change. Every other file-backed
# key (signing_key, the secrets, ...) is compared by what the file holds.
WATCHED_FILES = frozenset(
    {
        "certificate",
        "certificate_key",
        "certificates",
        "certificate_authority",
        "internal_certificate",
        "internal_certificate_key",
        "downstream_mtls",
        "client_ca",
        "routes",
    }
)


def _same(name: str, a: Any, b: Any) -> bool:
    if a == b:
        return True
    return name in WATCHED_FILES and _file_blind(a) == _file_blind(b)


def _file_blind(value: Any) -> Any:
    """`value` with every file-backed PEM reduced to its path."""
    if isinstance(value, Source):
        return ("file", value.path) if value.path is not None else ("inline", value.data)
    if isinstance(value, tuple):
        return tuple(_file_blind(item) for item in value)
    if is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, *(_file_blind(getattr(value, f.name)) for f in fields(value)))
    return value


def _key_names(attrs: list[str]) -> list[str]:
    """`shared_secret_file` and `shared_secret` are one key to the user: name it once."""
    names: list[str] = []
    for attr in attrs:
        name = attr.removesuffix("_file")
        if name not in names:
            names.append(name)
    return names


def watched_paths(config: Config) -> tuple[str, ...]:
    """The files whose change means "read the configuration again": the config file,
    and every file a key takes its value from that no other watcher re-reads (the
    signing key, the secrets); certificates, CAs and CRLs have watchers of their own."""
    paths = [config.source_path]
    for f in fields(Config):
        if f.name in WATCHED_FILES or f.name in _BOOKKEEPING:
            continue
        value = getattr(config, f.name)
        if isinstance(value, Source):
            paths.append(value.path)
        elif f.name.endswith("_file") and isinstance(value, str):
            paths.append(value)
    return tuple(path for path in paths if path is not None)


def routes_version(config: Config) -> str:
    """A fingerprint of the routes as written (order, matchers, upstreams, policies):
    the proxy sends it with each check, so authorize decides with the routes the proxy
    matched. It is taken from the YAML, not from Vallum's model of it, so that a proxy
    and an authorize of different builds (a rolling upgrade) still agree."""
    return config.routes_fingerprint
