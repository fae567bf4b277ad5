"""The signed identity assertion (Pomerium-compatible JWT) and the JWKS that verifies it.

keys.py loads and derives signing keys and publishes them; claims.py says what the
assertion and the claim headers carry; sign.py signs on the hot path; verify.py checks
a token against a JWKS. Pure code: no file or network I/O.
"""

from shared.jwt.claims import (
    ASSERTION_HEADER,
    CLAIM_HEADER_PREFIX,
    ISSUER_FORMATS,
    ISSUER_HOST_ONLY,
    ISSUER_URI,
    Identity,
    audience_for,
    claim_header_name,
    claim_headers,
    identity_claims,
    issuer_for,
)
from shared.jwt.keys import JWTKeyError, SigningKey, SigningKeys, thumbprint
from shared.jwt.sign import ASSERTION_LIFETIME, AssertionSigner, ClaimsTemplate
from shared.jwt.verify import JWTVerifyError, verify

__all__ = [
    "ASSERTION_HEADER",
    "ASSERTION_LIFETIME",
    "CLAIM_HEADER_PREFIX",
    "ISSUER_FORMATS",
    "ISSUER_HOST_ONLY",
    "ISSUER_URI",
    "AssertionSigner",
    "ClaimsTemplate",
    "Identity",
    "JWTKeyError",
    "JWTVerifyError",
    "SigningKey",
    "SigningKeys",
    "audience_for",
    "claim_header_name",
    "claim_headers",
    "identity_claims",
    "issuer_for",
    "thumbprint",
    "verify",
]
