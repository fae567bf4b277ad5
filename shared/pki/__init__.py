"""Vallum's internal CA: the root, leaf issuance, revocation, and certificate inspection.

Every certificate Vallum's services present to each other, route host certificates and
user client certificates come from here. Import from `shared.pki`: the submodules
may be rearranged.
"""

from .authority import CA, CA_CERT_FILE, CA_KEY_FILE, CLOCK_SKEW, DEFAULT_CA_NAME, init_ca, load_ca
from .bundle import (
    DEFAULT_PKCS12_PASSWORD,
    IssuedPaths,
    PKCS12Contents,
    load_pkcs12,
    pkcs12_bytes,
    write_issued,
)
from .certinfo import (
    SAN,
    UPN_OID,
    CertInfo,
    describe,
    describe_certificate,
    fingerprint_sha256,
    is_ca_certificate,
    load_certificates,
    serial_hex,
    spiffe_ids,
    spki_sha256_b64,
    subject_alt_names,
)
from .errors import PKIError
from .issue import (
    DEFAULT_TRUST_DOMAIN,
    LOOPBACK_DNS,
    LOOPBACK_IPS,
    Issued,
    issue_client,
    issue_server,
    issue_service,
)
from .keys import (
    KEY_TYPES,
    RSA_KEY_SIZES,
    KeyType,
    PrivateKey,
    SigningKey,
    generate_private_key,
    key_matches_certificate,
    load_private_key,
    private_key_pem,
)
from .names import second_level_wildcards
from .revocation import (
    CRL_NUMBER_FILE,
    REASONS,
    REVOKED_FILE,
    Revocation,
    crl_number,
    make_crl,
    parse_serial,
    revoke,
    revoked,
)

__all__ = [
    "CA",
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CLOCK_SKEW",
    "CRL_NUMBER_FILE",
    "DEFAULT_CA_NAME",
    "DEFAULT_PKCS12_PASSWORD",
    "DEFAULT_TRUST_DOMAIN",
    "KEY_TYPES",
    "LOOPBACK_DNS",
    "LOOPBACK_IPS",
    "REASONS",
    "REVOKED_FILE",
    "RSA_KEY_SIZES",
    "SAN",
    "UPN_OID",
    "CertInfo",
    "Issued",
    "IssuedPaths",
    "KeyType",
    "PKCS12Contents",
    "PKIError",
    "PrivateKey",
    "Revocation",
    "SigningKey",
    "crl_number",
    "describe",
    "describe_certificate",
    "fingerprint_sha256",
    "generate_private_key",
    "init_ca",
    "is_ca_certificate",
    "issue_client",
    "issue_server",
    "issue_service",
    "key_matches_certificate",
    "load_ca",
    "load_certificates",
    "load_pkcs12",
    "load_private_key",
    "make_crl",
    "parse_serial",
    "pkcs12_bytes",
    "private_key_pem",
    "revoke",
    "revoked",
    "second_level_wildcards",
    "serial_hex",
    "spiffe_ids",
    "spki_sha256_b64",
    "subject_alt_names",
    "write_issued",
]
