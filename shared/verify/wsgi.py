"""WSGI middleware: only requests that came through Vallum reach the app (PEP 3333).

Like the ASGI middleware: a request without a valid `X-Pomerium-JWT-Assertion` gets
401 `{"error": "unauthorized", "reason": <code>}` and never reaches the app; a valid
one finds its Identity in `environ["vallum.identity"]` (Flask:
`request.environ["vallum.identity"]`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from shared.verify.asgi import is_exempt, refusal_body
from shared.verify.model import VerificationError
from shared.verify.verifier import Verifier

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
# Given the refusal and the request: a WSGI app to answer instead of the default 401,
# or None for the default. The protected app is never called.
OnError = Callable[[VerificationError, Environ], WSGIApp | None]

IDENTITY_KEY = "vallum.identity"
ENVIRON_ASSERTION = "HTTP_X_POMERIUM_JWT_ASSERTION"


class VerifyMiddleware:
    def __init__(
        self,
        app: WSGIApp,
        verifier: Verifier,
        *,
        exempt_paths: Sequence[str] = (),
        on_error: OnError | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.exempt_paths = tuple(exempt_paths)
        self.on_error = on_error

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if is_exempt(environ.get("PATH_INFO", "") or "/", self.exempt_paths):
            return self.app(environ, start_response)
        try:
            identity = self.verifier.verify(environ.get(ENVIRON_ASSERTION, "").strip())
        except VerificationError as error:
            other = self.on_error(error, environ) if self.on_error is not None else None
            if other is not None:
                return other(environ, start_response)
            body = refusal_body(error)
            start_response(
                "401 Unauthorized",
                [
                    ("Content-Type", "application/json"),
                    ("WWW-Authenticate", "Pomerium"),
                    ("Cache-Control", "no-store"),
                    ("Content-Length", str(len(body))),
                ],
            )
            return [body]
        environ[IDENTITY_KEY] = identity
        return self.app(environ, start_response)
