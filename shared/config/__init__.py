"""One typed, immutable configuration in Pomerium's config.yaml dialect.

`load_config` is the I/O edge (file, environment, referenced files);
`parse_config` is the pure core it wraps.
"""

from shared.config.errors import ConfigError, Problem
from shared.config.load import load_config
from shared.config.model import (
    ALL_SERVICES,
    ENFORCEMENT_MODES,
    LETS_ENCRYPT,
    LETS_ENCRYPT_STAGING,
    SAN_KINDS,
    Address,
    CertificatePair,
    Config,
    DirectResponse,
    DownstreamMTLS,
    Redirect,
    Route,
    SanMatcher,
    Source,
    WeightedURL,
)
from shared.config.parse import parse_config

__all__ = [
    "ALL_SERVICES",
    "ENFORCEMENT_MODES",
    "LETS_ENCRYPT",
    "LETS_ENCRYPT_STAGING",
    "SAN_KINDS",
    "Address",
    "CertificatePair",
    "Config",
    "ConfigError",
    "DirectResponse",
    "DownstreamMTLS",
    "Problem",
    "Redirect",
    "Route",
    "SanMatcher",
    "Source",
    "WeightedURL",
    "load_config",
    "parse_config",
]
