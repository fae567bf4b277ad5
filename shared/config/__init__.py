"""One typed, immutable configuration in Pomerium's config.yaml dialect.

`load_config` is the I/O edge (file, environment, referenced files);
`parse_config` is the pure core it wraps.
"""

from shared.config.errors import ConfigError, Problem
from shared.config.load import load_config
from shared.config.model import (
    ALL_SERVICES,
    Address,
    CertificatePair,
    Config,
    DirectResponse,
    Redirect,
    Route,
    Source,
    WeightedURL,
)
from shared.config.parse import parse_config

__all__ = [
    "ALL_SERVICES",
    "Address",
    "CertificatePair",
    "Config",
    "ConfigError",
    "DirectResponse",
    "Problem",
    "Redirect",
    "Route",
    "Source",
    "WeightedURL",
    "load_config",
    "parse_config",
]
