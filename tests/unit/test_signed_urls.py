from __future__ import annotations

import pytest

from shared.signed_urls import SIGNATURE_TTL, TRANSFER_TTL, SignatureError, URLSigner

NOW = 1_800_000_000.0
A = URLSigner(b"a" * 32)
B = URLSigner(b"b" * 32)


def test_signed_redirect_round_trip() -> None:
    params = A.sign("sign_in", "https://app.example.com/x?y=1", NOW)
    assert A.verify("sign_in", params, NOW + 10) == "https://app.example.com/x?y=1"


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda p: p.pop("pomerium_signature"), "missing"),
        (lambda p: p.update(pomerium_redirect_uri="https://evil.example.com/"), "does not match"),
        (lambda p: p.update(pomerium_timestamp=str(int(NOW) + 1)), "does not match"),
        (lambda p: p.update(pomerium_timestamp="soon"), "not a number"),
    ],
)
def test_tampered_links_are_refused(mutate, why) -> None:  # type: ignore[no-untyped-def]
    params = A.sign("sign_in", "https://app.example.com/", NOW)
    mutate(params)
    with pytest.raises(SignatureError, match=why):
        A.verify("sign_in", params, NOW)


def test_other_secret_other_purpose_and_expiry_are_refused() -> None:
    params = A.sign("sign_in", "https://app.example.com/", NOW)
    with pytest.raises(SignatureError, match="does not match"):
        B.verify("sign_in", params, NOW)
    with pytest.raises(SignatureError, match="does not match"):
        A.verify("sign_out", params, NOW)
    with pytest.raises(SignatureError, match="expired"):
        A.verify("sign_in", params, NOW + SIGNATURE_TTL + 1)


def test_transfer_token() -> None:
    token = A.seal_transfer("sid-1", int(NOW) + 3600, "https://App.example.com:8443/p", NOW)
    transfer = A.open_transfer(token, NOW + 5)
    assert (transfer.session_id, transfer.session_expires) == ("sid-1", int(NOW) + 3600)
    assert transfer.host == "app.example.com:8443"
    with pytest.raises(SignatureError, match="expired"):
        A.open_transfer(token, NOW + TRANSFER_TTL)
    with pytest.raises(SignatureError, match="invalid"):
        B.open_transfer(token, NOW)
    with pytest.raises(SignatureError, match="invalid"):
        A.open_transfer(token[:-2] + ("AA" if not token.endswith("AA") else "BB"), NOW)
    with pytest.raises(SignatureError, match="invalid"):
        A.open_transfer("!!!", NOW)
