"""shared.jwt.sign and verify: tokens checked by PyJWT (an independent JOSE implementation)
and by Vallum's own verifier."""

from __future__ import annotations

import base64
import hmac
import json
import time
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from shared.jwt import (
    ASSERTION_LIFETIME,
    AssertionSigner,
    ClaimsTemplate,
    JWTVerifyError,
    SigningKey,
    SigningKeys,
    verify,
)

HOST = "app.example.com"
NOW = 1_700_000_000.75
JTI = "4f6b1c2e-0d8a-4a57-9a53-7b0f1f6f2f10"
CLAIMS: dict[str, Any] = {
    "iss": HOST,
    "aud": HOST,
    "sub": "user-1",
    "user": "user-1",
    "email": "alice@example.com",
    "groups": ["admins", "eng"],
    "name": 'Alice "Al" Éxample',
    "sid": "session-1",
}
EXPECTED = {**CLAIMS, "iat": 1_700_000_000, "exp": 1_700_000_300, "jti": JTI}


def _keys() -> dict[str, Any]:
    return {
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "RS256": rsa.generate_private_key(65537, 2048),
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
    }


@pytest.fixture(scope="module")
def private_keys() -> dict[str, Any]:
    return _keys()


@pytest.fixture(scope="module")
def other_keys() -> dict[str, Any]:
    return _keys()


ALGS = ["ES256", "RS256", "EdDSA"]


def signing_keys(private_key: Any) -> SigningKeys:
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SigningKeys.from_pem(pem)


def sign(keys: SigningKeys, claims: dict[str, Any] = CLAIMS, now: float = NOW) -> str:
    signer = AssertionSigner(keys.signer)
    return signer.sign(signer.template(claims), now, JTI)


def pyjwt_decode(token: str, jwks: dict[str, Any], *, audience: str = HOST) -> Any:
    """PyJWT's verdict, at the real clock (PyJWT has no way to be handed "now")."""
    header = pyjwt.get_unverified_header(token)
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    return pyjwt.decode(
        token,
        pyjwt.PyJWK(jwk),
        algorithms=[jwk["alg"]],
        audience=audience,
        issuer=HOST,
        options={"require": ["iss", "aud", "exp", "iat"]},
    )


def expected(now: float, jti: str = JTI) -> dict[str, Any]:
    return {**CLAIMS, "iat": int(now), "exp": int(now) + ASSERTION_LIFETIME, "jti": jti}


def b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    header, payload, signature = token.split(".")
    return json.loads(b64decode(header)), json.loads(b64decode(payload)), b64decode(signature)


@pytest.mark.parametrize("alg", ALGS)
def test_pyjwt_verifies_the_token_with_the_published_jwks(
    alg: str, private_keys: dict[str, Any]
) -> None:
    keys = signing_keys(private_keys[alg])
    token = sign(keys)
    header, payload, _ = segments(token)
    assert header == {"alg": alg, "kid": keys.signer.kid, "typ": "JWT"}
    assert header["kid"] == keys.jwks()["keys"][0]["kid"]
    assert payload == EXPECTED
    now = time.time()
    claims = pyjwt_decode(sign(keys, now=now), json.loads(keys.jwks_json))
    assert claims == expected(now)


@pytest.mark.parametrize("alg", ALGS)
def test_vallum_verify_accepts_its_own_tokens(alg: str, private_keys: dict[str, Any]) -> None:
    keys = signing_keys(private_keys[alg])
    claims = verify(sign(keys), keys.jwks(), audience=HOST, issuer=HOST, now=NOW)
    assert claims == EXPECTED


def test_es256_signature_is_raw_r_and_s(private_keys: dict[str, Any]) -> None:
    key = private_keys["ES256"]
    token = sign(signing_keys(key))
    signature = segments(token)[2]
    # RFC 7518 section 3.4: 64 bytes, not DER; the DER form verifies with cryptography.
    assert len(signature) == 64
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    signing_input = token.rsplit(".", 1)[0].encode()
    key.public_key().verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))


def _tamper_payload(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(b64decode(payload))
    claims["email"] = "mallory@example.com"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _tamper_signature(token: str) -> str:
    head, signature = token.rsplit(".", 1)
    raw = bytearray(b64decode(signature))
    raw[5] ^= 0x01
    return f"{head}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("tamper", [_tamper_payload, _tamper_signature])
def test_tampered_tokens_are_rejected(alg: str, tamper: Any, private_keys: dict[str, Any]) -> None:
    keys = signing_keys(private_keys[alg])
    now = time.time()
    token = tamper(sign(keys, now=now))
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt_decode(token, keys.jwks())
    with pytest.raises(JWTVerifyError, match="BadSignature"):
        verify(token, keys.jwks(), audience=HOST, issuer=HOST, now=now)


@pytest.mark.parametrize("alg", ALGS)
def test_token_signed_by_another_key_is_rejected(
    alg: str, private_keys: dict[str, Any], other_keys: dict[str, Any]
) -> None:
    keys = signing_keys(private_keys[alg])
    impostor = signing_keys(other_keys[alg])
    now = time.time()
    token = sign(impostor, now=now)
    # Same kid as the real key, so the check falls on the signature itself.
    _, payload, signature = token.split(".")
    relabelled = json.dumps({"alg": alg, "kid": keys.signer.kid, "typ": "JWT"}).encode()
    forged_header = base64.urlsafe_b64encode(relabelled).rstrip(b"=").decode()
    forged = f"{forged_header}.{payload}.{signature}"
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt_decode(forged, keys.jwks())
    with pytest.raises(JWTVerifyError, match="BadSignature"):
        verify(forged, keys.jwks(), audience=HOST, issuer=HOST, now=now)
    # With its own kid the token names no published key at all.
    with pytest.raises(JWTVerifyError, match="no key with kid"):
        verify(token, keys.jwks(), audience=HOST, issuer=HOST, now=now)


@pytest.mark.parametrize("alg", ALGS)
def test_expired_token_is_rejected(alg: str, private_keys: dict[str, Any]) -> None:
    keys = signing_keys(private_keys[alg])
    now = time.time()
    token = sign(keys, now=now - ASSERTION_LIFETIME - 5)
    with pytest.raises(pyjwt.ExpiredSignatureError):
        pyjwt_decode(token, keys.jwks())
    with pytest.raises(JWTVerifyError, match="ExpiredToken"):
        verify(token, keys.jwks(), audience=HOST, issuer=HOST, now=now)
    # Within the leeway it still passes.
    verify(token, keys.jwks(), audience=HOST, issuer=HOST, now=now, leeway=10)


@pytest.mark.parametrize("alg", ALGS)
def test_wrong_audience_is_rejected(alg: str, private_keys: dict[str, Any]) -> None:
    keys = signing_keys(private_keys[alg])
    token = sign(keys, now=time.time())
    with pytest.raises(pyjwt.InvalidAudienceError):
        pyjwt_decode(token, keys.jwks(), audience="other.example.com")
    with pytest.raises(JWTVerifyError, match="aud"):
        verify(token, keys.jwks(), audience="other.example.com", issuer=HOST, now=time.time())


def test_wrong_issuer_and_future_tokens_are_rejected(private_keys: dict[str, Any]) -> None:
    keys = signing_keys(private_keys["ES256"])
    token = sign(keys)
    with pytest.raises(JWTVerifyError, match="iss"):
        verify(token, keys.jwks(), audience=HOST, issuer="https://app.example.com/", now=NOW)
    with pytest.raises(JWTVerifyError, match="issued in the future"):
        verify(token, keys.jwks(), audience=HOST, issuer=HOST, now=NOW - 60)


def _with_header(token: str, header: dict[str, Any], signature: str | None = None) -> str:
    _, payload, original = token.split(".")
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{encoded}.{payload}.{original if signature is None else signature}"


def test_alg_none_is_rejected(private_keys: dict[str, Any]) -> None:
    keys = signing_keys(private_keys["ES256"])
    token = _with_header(sign(keys), {"alg": "none", "kid": keys.signer.kid}, signature="")
    with pytest.raises(JWTVerifyError, match="'none' does not match"):
        verify(token, keys.jwks(), audience=HOST, issuer=HOST, now=NOW)


def test_hmac_with_the_public_key_as_secret_is_rejected(private_keys: dict[str, Any]) -> None:
    # The classic algorithm-confusion forgery (RFC 8725 section 2.1).
    keys = signing_keys(private_keys["RS256"])
    public_pem = (
        private_keys["RS256"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = {"alg": "HS256", "kid": keys.signer.kid, "typ": "JWT"}
    unsigned = _with_header(sign(keys), header).rsplit(".", 1)[0]
    mac = hmac.new(public_pem, unsigned.encode(), "sha256").digest()
    forged = f"{unsigned}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(JWTVerifyError, match="'HS256' does not match"):
        verify(forged, keys.jwks(), audience=HOST, issuer=HOST, now=NOW)


def test_alg_of_another_key_type_is_rejected(private_keys: dict[str, Any]) -> None:
    keys = signing_keys(private_keys["ES256"])
    token = _with_header(sign(keys), {"alg": "RS256", "kid": keys.signer.kid})
    with pytest.raises(JWTVerifyError, match="does not match the key"):
        verify(token, keys.jwks(), audience=HOST, issuer=HOST, now=NOW)


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "!!!.e30.x", "WzFd.e30.x"])
def test_malformed_tokens_are_rejected(token: str) -> None:
    keys = SigningKeys.derive(b"k" * 32)
    with pytest.raises(JWTVerifyError):
        verify(token, keys.jwks(), audience=HOST, issuer=HOST, now=NOW)


def test_rotation_old_key_still_verifies_while_published(private_keys: dict[str, Any]) -> None:
    old = signing_keys(private_keys["RS256"])
    new = signing_keys(private_keys["ES256"])
    both = SigningKeys((new.signer, old.signer))
    token_by_old = sign(old)
    assert verify(token_by_old, both.jwks(), audience=HOST, issuer=HOST, now=NOW) == EXPECTED
    assert segments(sign(both))[0]["alg"] == "ES256"


def test_template_refuses_dynamic_claims() -> None:
    with pytest.raises(ValueError, match="jti"):
        ClaimsTemplate({"jti": "fixed"})


def test_template_without_claims_is_valid_json() -> None:
    payload = ClaimsTemplate({}).payload(10, "j")
    assert json.loads(payload) == {"iat": 10, "exp": 10 + ASSERTION_LIFETIME, "jti": "j"}


def test_template_is_reused_across_signatures() -> None:
    keys = SigningKeys.derive(b"k" * 32)
    signer = AssertionSigner(keys.signer)
    template = signer.template(CLAIMS)
    first = signer.sign(template, NOW, "a")
    second = signer.sign(template, NOW + 1, "b")
    assert segments(first)[1]["jti"] == "a"
    assert segments(second)[1] == {**CLAIMS, "iat": 1_700_000_001, "exp": 1_700_000_301, "jti": "b"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(
    claims=st.dictionaries(
        st.text().filter(lambda name: name not in {"iat", "exp", "jti"}), json_values, max_size=6
    ),
    jti=st.text(),
    iat=st.integers(min_value=0, max_value=2**40),
)
def test_spliced_payload_is_the_json_of_the_claims(
    claims: dict[str, Any], jti: str, iat: int
) -> None:
    payload = ClaimsTemplate(claims).payload(iat, jti)
    assert payload.isascii()
    assert json.loads(payload) == {
        **claims,
        "iat": iat,
        "exp": iat + ASSERTION_LIFETIME,
        "jti": jti,
    }


def test_signing_key_repr_hides_the_private_key() -> None:
    key = SigningKeys.derive(b"k" * 32).signer
    assert isinstance(key, SigningKey)
    assert "private" not in repr(key)
