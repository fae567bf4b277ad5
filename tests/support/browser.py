"""A small scripted browser for sign-in tests: cookies per host, redirects, forms.

`*.localhost` names go to 127.0.0.1 with the name as TLS server name and Host (no
/etc/hosts edits); other URLs (the IdP on 127.0.0.1) are fetched as they are.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from tests.support.oidc import form_fields


class Browser:
    def __init__(self, ca: Path) -> None:
        self._verify = ssl.create_default_context(cafile=str(ca))
        # One client per host: a connection opened for one TLS server name is never
        # used for another (Vallum answers that with 421, as it should).
        self._clients: dict[str, httpx.Client] = {}
        self.cookies: dict[str, dict[str, str]] = {}  # host:port -> name -> value
        self.history: list[httpx.Response] = []

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def _client(self, authority: str) -> httpx.Client:
        client = self._clients.get(authority)
        if client is None:
            client = self._clients[authority] = httpx.Client(
                verify=self._verify, timeout=30, follow_redirects=False
            )
        return client

    def request(
        self,
        method: str,
        url: str,
        *,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        parts = urlsplit(url)
        host = parts.hostname or ""
        authority = parts.netloc.lower()
        all_headers = {"Accept": "text/html", **(headers or {})}
        jar = self.cookies.get(authority, {})
        if jar:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        extensions = {}
        target = url
        if host.endswith(".localhost"):
            target = url.replace(f"//{parts.netloc}", f"//127.0.0.1:{parts.port or 443}", 1)
            all_headers["Host"] = parts.netloc
            extensions["sni_hostname"] = host
        client = self._client(authority)
        response = client.request(
            method, target, data=data, headers=all_headers, extensions=extensions
        )
        client.cookies.clear()  # this class's jar (per host) is the only one
        for value in response.headers.get_list("set-cookie"):
            cookie = SimpleCookie()
            cookie.load(value)
            for name, morsel in cookie.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.setdefault(authority, {}).pop(name, None)
                else:
                    self.cookies.setdefault(authority, {})[name] = morsel.value
        self.history.append(response)
        return response

    def location(self, response: httpx.Response, base: str) -> str:
        return urljoin(base, response.headers["location"])

    def navigate(
        self,
        url: str,
        *,
        fill: Mapping[str, str] | None = None,
        steps: int = 15,
        stop_at: str | None = None,
    ) -> tuple[str, httpx.Response]:
        """Follow redirects and submit forms (filling `fill`) like a person would, until a
        page that is neither; return its URL and response. `stop_at`: stop at the first
        redirect to a URL starting with it, without following it."""
        method, data = "GET", None
        for _ in range(steps):
            response = self.request(method, url, data=data)
            if response.is_redirect:
                nxt = self.location(response, url)
                if stop_at is not None and nxt.startswith(stop_at):
                    return nxt, response
                url, method, data = nxt, "GET", None
                continue
            if fill and response.status_code == 200 and "<form" in response.text.lower():
                action, fields = form_fields(response.text)
                if set(fill) & set(fields) or "logout" in action or "confirm" in response.text:
                    url, method, data = urljoin(url, action), "POST", {**fields, **fill}
                    continue
            return url, response
        raise AssertionError(f"too many steps, last at {url}")
