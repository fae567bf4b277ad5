"""The plain-HTTP listener (`http_redirect_addr`): every request is sent to HTTPS,
except ACME HTTP-01 validation requests when autocert is on.

301 for GET and HEAD, 308 otherwise (so a POST stays a POST). The path and query
are kept as sent; the Host's port is replaced by the HTTPS listener's.
"""

from __future__ import annotations

from collections.abc import Callable

from services.proxy.autocert.challenges import http01_token
from services.proxy.http import HttpConnection, Request
from services.proxy.routes import split_host

# token → key authorization, or None for a token that is not pending.
Http01Answers = Callable[[str], bytes | None]


class RedirectToHTTPS:
    def __init__(self, https_port: int, http01: Http01Answers | None = None) -> None:
        self._port = "" if https_port == 443 else f":{https_port}"
        self._http01 = http01

    async def __call__(self, conn: HttpConnection, request: Request) -> None:
        host = request.header(b"host")
        target = request.target
        if self._http01 is not None and request.method in ("GET", "HEAD"):
            token = http01_token(target)
            if token is not None:
                answer = self._http01(token)
                if answer is None:
                    conn.send_response(
                        request, 404, [(b"content-type", b"text/plain")], b"no such challenge\n"
                    )
                else:
                    conn.send_response(
                        request, 200, [(b"content-type", b"application/octet-stream")], answer
                    )
                return
        if not host or not target.startswith(b"/"):
            conn.send_response(request, 400, [(b"content-type", b"text/plain")], b"bad request\n")
            return
        hostname, _ = split_host(host.decode("latin-1"))
        location = b"https://%s%s%s" % (hostname.encode("latin-1"), self._port.encode(), target)
        status = 301 if request.method in ("GET", "HEAD") else 308
        conn.send_response(request, status, [(b"location", location)], b"")
