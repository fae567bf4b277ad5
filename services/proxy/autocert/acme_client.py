"""One certificate from an ACME server (RFC 8555), through the `acme` package.

Account (created once per directory and kept in autocert_dir, with external account
binding when configured), order, one challenge per authorization, finalize with a
CSR, download the chain. Synchronous (`acme` uses `requests`): the manager runs it in
a worker thread, away from the event loop.

The `acme` package no longer ships TLS-ALPN-01 (RFC 8737), so its challenge and
response types are registered here, through the package's own registry: without them
the server's `tls-alpn-01` challenges would parse as unrecognised.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

from acme import challenges, client, errors, messages
from acme import crypto_util as acme_crypto
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

from services.proxy.autocert.store import AutocertStore
from shared.pki import private_key_pem
from shared.pki.errors import first_line

USER_AGENT = "vallum-autocert"
HTTP01 = "http-01"
TLS_ALPN01 = "tls-alpn-01"


@challenges.ChallengeResponse.register
class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """RFC 8737 section 3: the response is an empty object."""

    typ = TLS_ALPN01


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    response_cls = TLSALPN01Response
    typ = TLS_ALPN01

    def validation(self, account_key: JWK, **unused: Any) -> str:
        """The key authorization; the proxy builds the certificate from it."""
        return self.key_authorization(account_key)


class AcmeFailure(Exception):
    """Why this order failed, in one line for the log and `vallum autocert status`."""


class Publisher(Protocol):
    """Where key authorizations go for the validation requests to find them."""

    def publish(self, kind: str, host: str, token: str, key_authorization: str) -> None: ...

    def withdraw(self, kind: str, host: str, token: str) -> None: ...


@dataclass(frozen=True, slots=True)
class AcmeSettings:
    directory_url: str
    email: str | None
    eab_key_id: str | None
    eab_mac_key: str | None
    must_staple: bool
    # A PEM bundle file to verify the ACME server's HTTPS with; None: the system store.
    ca_bundle: str | None
    challenge: str  # HTTP01 or TLS_ALPN01
    timeout: float = 30.0
    # How long an order may take from new-order to certificate.
    order_deadline: float = 90.0


def obtain(
    settings: AcmeSettings, store: AutocertStore, publisher: Publisher, host: str, key_pem: bytes
) -> bytes:
    """The full chain (PEM) for `host` and the key `key_pem`; raises AcmeFailure."""
    try:
        acme, account_key = _client(settings, store)
        csr = csr_for(host, key_pem, must_staple=settings.must_staple)
        order = acme.new_order(csr)
        published: list[tuple[str, str]] = []
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # validated recently for this account (authorization reuse)
                challb = _pick(authz, settings.challenge)
                chall = challb.chall
                assert isinstance(chall, challenges.KeyAuthorizationChallenge)
                token = chall.encode("token")
                publisher.publish(
                    settings.challenge, host, token, chall.key_authorization(account_key)
                )
                published.append((settings.challenge, token))
                acme.answer_challenge(challb, chall.response(account_key))
            deadline = dt.datetime.now() + dt.timedelta(seconds=settings.order_deadline)
            order = acme.poll_and_finalize(order, deadline)
        finally:
            for kind, token in published:
                publisher.withdraw(kind, host, token)
    except AcmeFailure:
        raise
    except errors.ValidationError as e:
        raise AcmeFailure(f"validation failed: {_problems(e)}") from None
    except errors.TimeoutError:
        raise AcmeFailure(f"the order took longer than {settings.order_deadline:.0f}s") from None
    except messages.Error as e:
        raise AcmeFailure(f"the ACME server refused: {e}") from None
    except errors.Error as e:
        raise AcmeFailure(f"ACME: {e}") from None
    except OSError as e:  # requests' connection errors are OSErrors
        raise AcmeFailure(f"cannot reach the ACME server: {first_line(e)[:300]}") from None
    if not order.fullchain_pem:
        raise AcmeFailure("the ACME server sent no certificate")
    return order.fullchain_pem.encode()


def csr_for(host: str, key_pem: bytes, *, must_staple: bool) -> bytes:
    """The CSR (PEM); with `must_staple`, the TLS Feature status_request (RFC 7633)."""
    return acme_crypto.make_csr(key_pem, [host], must_staple=must_staple)


def _client(settings: AcmeSettings, store: AutocertStore) -> tuple[client.ClientV2, JWK]:
    # One account per directory, whichever host (thread) or replica gets here first:
    # the others wait, then use the key and registration it saved.
    with store.lock("acme-account", wait=True):
        return _account(settings, store)


def _account(settings: AcmeSettings, store: AutocertStore) -> tuple[client.ClientV2, JWK]:
    key_pem = store.account_key(settings.directory_url)
    if key_pem is None:
        key_pem = private_key_pem(ec.generate_private_key(ec.SECP256R1()))
        store.save_account_key(settings.directory_url, key_pem)
    account_key = JWKEC.load(key_pem)
    net = client.ClientNetwork(
        account_key,
        alg=ES256,
        verify_ssl=settings.ca_bundle or True,  # type: ignore[arg-type]  # requests takes a path
        user_agent=USER_AGENT,
        timeout=int(settings.timeout),
    )
    directory = client.ClientV2.get_directory(settings.directory_url, net)
    acme = client.ClientV2(directory, net)
    known = store.registration(settings.directory_url)
    if known is not None and isinstance(known.get("uri"), str):
        net.account = messages.RegistrationResource(uri=known["uri"], body=messages.Registration())
        return acme, account_key
    net.account = _register(acme, settings, account_key, directory)
    store.save_account(settings.directory_url, {"uri": net.account.uri})
    return acme, account_key


def _register(
    acme: client.ClientV2,
    settings: AcmeSettings,
    account_key: JWK,
    directory: messages.Directory,
) -> messages.RegistrationResource:
    eab: dict[str, Any] | None = None
    if settings.eab_key_id and settings.eab_mac_key:
        eab = messages.ExternalAccountBinding.from_data(
            account_public_key=account_key.public_key(),
            kid=settings.eab_key_id,
            hmac_key=settings.eab_mac_key,
            directory=directory,
        )
    registration = messages.NewRegistration.from_data(
        email=settings.email,
        terms_of_service_agreed=True,
        external_account_binding=eab,
    )
    try:
        return acme.new_account(registration)
    except errors.ConflictError as e:
        # The key is registered already (account.json was lost): use that account.
        return acme.query_registration(
            messages.RegistrationResource(uri=e.location, body=messages.Registration())
        )


def _pick(authz: messages.AuthorizationResource, kind: str) -> messages.ChallengeBody:
    offered = [c for c in authz.body.challenges if c.chall.typ == kind]
    if not offered:
        names = ", ".join(sorted({c.chall.typ for c in authz.body.challenges})) or "none"
        raise AcmeFailure(f"the ACME server does not offer {kind} (it offers {names})")
    return offered[0]


def _problems(e: errors.ValidationError) -> str:
    found = []
    for authz in e.failed_authzrs:
        for challb in authz.body.challenges:
            if challb.error is not None:
                found.append(f"{challb.chall.typ}: {challb.error.detail or challb.error.typ}")
    return "; ".join(found) or str(e)
