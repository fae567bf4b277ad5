"""Verifying Vallum's identity assertion in a Python app (the upstream side).

    verifier = Verifier(jwks_url="https://app.example.com/.well-known/pomerium/jwks.json",
                        issuer="app.example.com", audience="app.example.com")
    identity = verifier.verify_headers(request.headers)

check.py and jwks.py are the pure rules, verifier.py adds fetching the JWKS, asgi.py
and wsgi.py wrap an app so that nothing unverified reaches it.
"""

from shared.verify.model import CODES, Identity, VerificationError
from shared.verify.replay import MemoryReplayCache, ReplayCache
from shared.verify.verifier import Verifier

__all__ = [
    "CODES",
    "Identity",
    "MemoryReplayCache",
    "ReplayCache",
    "VerificationError",
    "Verifier",
]
