"""Which keys sign the identity assertion: `signing_key`, else derived from `shared_secret`.

Authorize signs with the first; the proxy publishes all of them. Both call this, so
they cannot disagree.
"""

from __future__ import annotations

from shared.config import Config
from shared.jwt import SigningKeys


def signing_keys(config: Config) -> SigningKeys:
    if config.signing_key is not None and config.signing_key.data is not None:
        return SigningKeys.from_pem(config.signing_key.data)
    if config.shared_secret is None:
        raise ValueError("no signing_key, and no shared_secret to derive one from")
    return SigningKeys.derive(config.shared_secret)
