"""Vallum's own error answers, by status: the page builders and the renderer meet here."""

from __future__ import annotations

import dataclasses

from services.proxy.http import HttpConnection, Request
from shared import errors


class Pages:
    def __init__(self, sign_in_url: str | None) -> None:
        self.sign_in_url = sign_in_url

    def page(
        self,
        status: int,
        request_id: str,
        *,
        host: str = "",
        server_name: str | None = None,
        reasons: tuple[str, ...] = (),
        detail: str | None = None,
    ) -> errors.ErrorPage:
        first = reasons[0] if reasons else ""
        if status == 400:
            page = errors.bad_request(request_id)
        elif status == 401:
            page = errors.sign_in_required(request_id, sign_in_url=self.sign_in_url)
        elif status == 403:
            page = errors.forbidden(request_id, reasons, sign_out_url="/.pomerium/sign_out")
        elif status == 404:
            page = errors.no_route(request_id, host)
        elif status == 421:
            page = errors.misdirected(request_id, host, server_name)
        elif status == 495:
            page = errors.client_certificate_error(
                request_id, first or "client-certificate-required"
            )
        elif status in (502, 504):
            page = errors.upstream_failure(request_id, first or "upstream-connection-reset")
        else:
            page = errors.authorize_unavailable(request_id, first or "authorize-unavailable")
        if detail:
            page = dataclasses.replace(page, detail=f"{page.detail} {detail}")
        return page

    def send(
        self,
        conn: HttpConnection,
        request: Request,
        status: int,
        request_id: str,
        html: bool,
        *,
        reasons: tuple[str, ...] = (),
        detail: str | None = None,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        info = conn.info
        page = self.page(
            status,
            request_id,
            host=request.host,
            server_name=info.server_name if info else None,
            reasons=reasons,
            detail=detail,
        )
        code, headers, body = errors.render(page, html=html)
        headers = [(n, v) for n, v in headers if n != b"content-length"]
        headers.append((b"x-request-id", request_id.encode()))
        headers += extra or []
        conn.send_response(request, code, headers, body)
