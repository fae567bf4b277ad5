"""The plain-HTTP listener (`http_redirect_addr`): every request is sent to HTTPS.

301 for GET and HEAD, 308 otherwise (so a POST stays a POST). The path and query
are kept as sent; the Host's port is replaced by the HTTPS listener's.
"""

from __future__ import annotations

from services.proxy.http import HttpConnection, Request
from services.proxy.routes import split_host


class RedirectToHTTPS:
    def __init__(self, https_port: int) -> None:
        self._port = "" if https_port == 443 else f":{https_port}"

    async def __call__(self, conn: HttpConnection, request: Request) -> None:
        host = request.header(b"host")
        target = request.target
        if not host or not target.startswith(b"/"):
            conn.send_response(request, 400, [(b"content-type", b"text/plain")], b"bad request\n")
            return
        hostname, _ = split_host(host.decode("latin-1"))
        location = b"https://%s%s%s" % (hostname.encode("latin-1"), self._port.encode(), target)
        status = 301 if request.method in ("GET", "HEAD") else 308
        conn.send_response(request, status, [(b"location", location)], b"")
