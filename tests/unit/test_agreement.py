"""The rules for whether two services were given the same secrets (shared/agreement.py)."""

from __future__ import annotations

import base64
import itertools
import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.agreement import Fingerprints, disagreements, fingerprint
from shared.config import parse_config


def pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


SHARED, COOKIE = os.urandom(32), os.urandom(32)
OLD, NEW = pem(), pem()


def prints(shared: bytes = SHARED, cookie: bytes = COOKIE, *keys: bytes) -> Fingerprints:
    raw: dict[str, object] = {"shared_secret": b64(shared), "cookie_secret": b64(cookie)}
    if keys:
        raw["signing_key"] = b64(b"".join(keys))
    return Fingerprints.of(parse_config(raw, {}, "/"))


def test_the_same_secrets_agree() -> None:
    assert disagreements(prints(), prints(), "authorize at https://a") == []
    assert disagreements(prints(SHARED, COOKIE, OLD), prints(SHARED, COOKIE, OLD), "x") == []


def test_a_fingerprint_is_keyed_by_the_secret_and_the_name_and_reveals_neither() -> None:
    a = fingerprint(SHARED, "shared_secret")
    assert len(a) == 16
    assert a == fingerprint(SHARED, "shared_secret")
    assert a != fingerprint(SHARED, "cookie_secret")
    assert a != fingerprint(os.urandom(32), "shared_secret")
    assert SHARED[:16] not in a
    assert fingerprint(None, "shared_secret") == b""


def test_each_differing_secret_is_named_with_the_peer() -> None:
    other = prints(os.urandom(32), os.urandom(32), OLD)
    problems = disagreements(prints(SHARED, COOKIE, OLD), other, "authenticate at https://b:5444")
    assert [p.split(":")[0] for p in problems] == ["shared_secret", "cookie_secret"]
    assert all("authenticate at https://b:5444" in p for p in problems)
    assert "sign in again and again" in problems[1]
    only_cookie = disagreements(prints(), prints(SHARED, os.urandom(32)), "p")
    assert [p.split(":")[0] for p in only_cookie] == ["cookie_secret"]


def test_a_signing_key_the_other_side_does_not_publish_is_refused() -> None:
    problems = disagreements(prints(SHARED, COOKIE, OLD), prints(SHARED, COOKIE, NEW), "authorize")
    assert len(problems) == 1 and problems[0].startswith("signing_key: authorize signs with key")


def test_every_step_of_a_rotation_agrees_with_the_step_before_and_after() -> None:
    steps = [
        prints(SHARED, COOKIE, OLD),  # as it was
        prints(SHARED, COOKIE, OLD, NEW),  # the new key published
        prints(SHARED, COOKIE, NEW, OLD),  # signing with it, the old still published
        prints(SHARED, COOKIE, NEW),  # the old retired
    ]
    for before, after in itertools.pairwise(steps):
        assert disagreements(before, after, "peer") == []
        assert disagreements(after, before, "peer") == []
    # Skipping the publish step is what breaks verification: refused.
    assert disagreements(steps[0], steps[2], "peer") != []
    assert disagreements(steps[0], steps[3], "peer") != []


def test_the_derived_key_follows_shared_secret() -> None:
    mine, theirs = prints(), prints(os.urandom(32), COOKIE)
    problems = disagreements(mine, theirs, "peer")
    assert [p.split(":")[0] for p in problems] == ["shared_secret", "signing_key"]
