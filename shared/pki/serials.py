"""Certificate serial numbers."""

from __future__ import annotations

import secrets


def random_serial() -> int:
    """A positive serial with 126 random bits and a fixed top bit.

    Unpredictable serials are what make chosen-prefix collisions on the signature
    impractical (CA/B Baseline Requirements §7.1 asks for at least 64 bits). Fixing bit
    126 keeps every serial exactly 16 DER octets, positive, and within RFC 5280's
    20-octet limit (§4.1.2.2).
    """
    return (1 << 126) | secrets.randbits(126)
