"""Pure parsers for listen addresses and the URLs a configuration names."""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import SplitResult, urlsplit

from shared.config.errors import FieldError
from shared.config.fields import got, parse_str, parse_str_list
from shared.config.model import Address, WeightedURL

# Underscores are not DNS-legal, but container and compose service names use them.
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?", re.IGNORECASE)


def valid_host(host: str, *, wildcard: bool = False) -> bool:
    if wildcard and host.startswith("*."):
        host = host[2:]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return 0 < len(host) <= 253 and all(_LABEL.fullmatch(part) for part in host.split("."))
    return True


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise FieldError(f"port must be a number from 0 to 65535, got {text!r}")
    return int(text)


def parse_address(value: Any) -> Address:
    """`:443`, `0.0.0.0:443`, `[::1]:443` or `localhost:80`."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise FieldError(f"expected host:port, got integer {value} (did you mean ':{value}'?)")
    text = parse_str(value).strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise FieldError(f"expected [ipv6]:port, got {text!r}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise FieldError(f"{host!r} is not an IPv6 address") from None
        return Address(host, _port(rest[1:]))
    host, colon, port = text.rpartition(":")
    if not colon:
        raise FieldError(f"expected host:port such as :443 or 127.0.0.1:8443, got {text!r}")
    if ":" in host:
        raise FieldError(f"IPv6 addresses need brackets, e.g. [::1]:443, got {text!r}")
    if host and not valid_host(host):
        raise FieldError(f"{host!r} is not a valid host name or IP address")
    return Address(host, _port(port))


def _split(text: str) -> SplitResult:
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - urlsplit only checks the port when it is read
    except ValueError:
        raise FieldError(f"has an invalid port: {text!r}") from None
    return parts


def _origin(parts: SplitResult) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme.lower()}://{host}{port}"


def parse_service_url(value: Any) -> str:
    """The base URL of one of Vallum's services, normalised to `scheme://host[:port]`."""
    text = parse_str(value).strip()
    parts = _split(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise FieldError(f"must be an absolute http or https URL, got {text!r}")
    if not parts.hostname or not valid_host(parts.hostname):
        raise FieldError(f"must name a valid host, got {text!r}")
    if parts.username is not None or parts.password is not None:
        raise FieldError("must not contain credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise FieldError(f"must not have a path, query or fragment, got {text!r}")
    return _origin(parts)


def parse_service_urls(value: Any) -> tuple[str, ...]:
    """One URL, a YAML list, or a comma-separated string of URLs."""
    urls = parse_str_list(value)
    if not urls:
        raise FieldError("must name at least one URL")
    out: list[str] = []
    errors: list[str] = []
    for url in urls:
        try:
            out.append(parse_service_url(url))
        except FieldError as exc:
            errors.append(str(exc))
    if errors:
        raise FieldError("; ".join(errors))
    return tuple(out)


ROUTE_SCHEMES = ("http", "https", "tcp+https")


def parse_from_url(value: Any) -> str:
    """A route's external URL: scheme, host (maybe `*.`-wildcarded) and port only."""
    text = parse_str(value).strip()
    parts = _split(text)
    scheme = parts.scheme.lower()
    if scheme not in ROUTE_SCHEMES or not parts.netloc:
        raise FieldError(f"must be an http, https or tcp+https URL, got {text!r}")
    if not parts.hostname or not valid_host(parts.hostname, wildcard=True):
        raise FieldError(f"must name a valid host (a leading *. is allowed), got {text!r}")
    if parts.username is not None or parts.password is not None:
        raise FieldError("must not contain credentials")
    if parts.path not in ("", "/"):
        raise FieldError(
            f"must not have a path (match paths with prefix, path or regex), got {text!r}"
        )
    if parts.query or parts.fragment:
        raise FieldError(f"must not have a query or fragment, got {text!r}")
    if scheme.startswith("tcp+") and parts.port is None:
        raise FieldError("a tcp+https route needs a port, e.g. tcp+https://db.example.com:5432")
    return _origin(parts)


def parse_upstream(value: Any) -> WeightedURL:
    """`URL` or `URL,weight`. TCP routes forward to `tcp://host:port`, which the route
    check pairs with a tcp+https `from`; the message speaks of the common case."""
    if not isinstance(value, str):
        raise FieldError(f"expected a URL string, got {got(value)}")
    url, weight = value.strip(), 1
    if "," in url:
        url, _, weight_text = url.rpartition(",")
        url, weight_text = url.strip(), weight_text.strip()
        if not weight_text.isdigit() or int(weight_text) < 1:
            raise FieldError(f"weight must be an integer of at least 1, got {weight_text!r}")
        weight = int(weight_text)
    parts = _split(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "tcp") or not parts.netloc:
        raise FieldError(f"must be an http or https URL, got {value!r}")
    if scheme == "tcp" and parts.port is None:
        raise FieldError(f"a tcp upstream needs a port, e.g. tcp://db.internal:5432, got {value!r}")
    if not parts.hostname or not valid_host(parts.hostname):
        raise FieldError(f"must name a valid host, got {value!r}")
    if parts.fragment:
        raise FieldError(f"must not have a fragment, got {value!r}")
    return WeightedURL(url, weight)
