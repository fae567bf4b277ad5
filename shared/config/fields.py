"""Pure parsers for single configuration values.

Each takes the raw YAML (or environment) value and returns the typed value, or
raises FieldError with a message that names what was expected and what was given.
None of them knows the key path; the schema driver adds it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from shared.config.errors import FieldError
from shared.config.model import ALL_SERVICES, SIDECAR_SERVICE

_MAX_SHOWN = 60


def kind_of(value: Any) -> str:
    """The YAML name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int in Python
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def got(value: Any) -> str:
    """`kind value` for scalars, just the kind for collections. Not for secrets."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        shown = repr(value)
        if len(shown) > _MAX_SHOWN:
            shown = shown[: _MAX_SHOWN - 4] + "...'"
        return f"{kind_of(value)} {shown}"
    return kind_of(value)


def parse_str(value: Any) -> str:
    if not isinstance(value, str):
        raise FieldError(f"expected a string, got {got(value)}")
    return value


def parse_bool(value: Any) -> bool:
    # Strings are accepted because environment variables only carry strings, and a
    # quoted "true" in YAML means the same thing to a reader.
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("true", "1", "yes", "on"):
            return True
        if word in ("false", "0", "no", "off"):
            return False
    raise FieldError(f"expected a boolean (true or false), got {got(value)}")


def parse_int(value: Any, low: int, high: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool):
        raise FieldError(f"expected an integer, got {got(value)}")
    if not low <= value <= high:
        raise FieldError(f"must be between {low} and {high}, got {value}")
    return value


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(value: Any) -> float:
    """A Go-style duration (`30s`, `1m30s`, `500ms`) as seconds.

    Bare numbers are refused because their unit would be a guess; zero is the one
    exception (Go's time.ParseDuration allows it too), as it means the same in any unit.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value == 0:
            return 0.0
        raise FieldError(f"use a unit, e.g. 30s (got {got(value)})")
    if not isinstance(value, str):
        raise FieldError(f"expected a duration such as 30s, got {got(value)}")
    text = value.strip()
    if text == "0":
        return 0.0
    if text.startswith("-"):
        raise FieldError(f"must not be negative, got {value!r}")
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(text):
        if re.fullmatch(r"\d+(\.\d*)?", text):
            raise FieldError(f"use a unit, e.g. 30s (got {value!r})")
        raise FieldError(
            f"expected a duration such as 30s, 1m30s or 500ms (units h, m, s, ms, us, ns), "
            f"got {value!r}"
        )
    return total


def parse_str_list(value: Any) -> tuple[str, ...]:
    """A list of strings; a comma-separated string is accepted for environment values."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    if not isinstance(value, list | tuple):
        raise FieldError(f"expected a list of strings, got {got(value)}")
    bad = [f"item {i} is {got(item)}" for i, item in enumerate(value) if not isinstance(item, str)]
    if bad:
        raise FieldError("expected a list of strings: " + "; ".join(bad))
    return tuple(value)


# RFC 9110 section 5.6.2: a field name is a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def parse_header_name(name: Any) -> str:
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise FieldError(f"{got(name)} is not a valid HTTP header name")
    return name


def parse_url_path(value: Any) -> str:
    text = parse_str(value)
    if not text.startswith("/"):
        raise FieldError(f"must start with /, got {value!r}")
    return text


def parse_header_names(value: Any) -> tuple[str, ...]:
    return tuple(parse_header_name(name) for name in parse_str_list(value))


def parse_header_map(value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise FieldError(f"expected a mapping of header name to value, got {got(value)}")
    out: dict[str, str] = {}
    for name, header_value in value.items():
        parse_header_name(name)
        if not isinstance(header_value, str):
            # YAML turns `X-Flag: true` into a boolean; guessing its spelling would be wrong.
            raise FieldError(
                f"value of {name} must be a string, got {got(header_value)} (quote it)"
            )
        if "\r" in header_value or "\n" in header_value:
            raise FieldError(f"value of {name} must not contain a line break")
        out[name] = header_value
    return MappingProxyType(out)


def parse_claims_map(value: Any) -> Mapping[str, tuple[Any, ...]]:
    if not isinstance(value, Mapping):
        raise FieldError(f"expected a mapping of claim name to a list of values, got {got(value)}")
    out: dict[str, tuple[Any, ...]] = {}
    for claim, values in value.items():
        if not isinstance(claim, str):
            raise FieldError(f"claim names must be strings, got {got(claim)}")
        if not isinstance(values, list):
            raise FieldError(f"values of claim {claim} must be a list, got {got(values)}")
        out[claim] = tuple(freeze(v) for v in values)
    return MappingProxyType(out)


def freeze(value: Any) -> Any:
    """Read-only copy of a YAML value, so a Config shared between tasks cannot change."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, set):
        return frozenset(value)
    return value


def parse_regex(value: Any) -> str:
    text = parse_str(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise FieldError(f"invalid regular expression (Python re syntax): {exc}") from None
    return text


def parse_services(value: Any) -> frozenset[str]:
    names = parse_str_list(value)
    if not names:
        raise FieldError("must name at least one service, or all")
    chosen: set[str] = set()
    for name in names:
        lowered = name.lower()
        if lowered == "all":
            chosen |= ALL_SERVICES
        elif lowered in ALL_SERVICES or lowered == SIDECAR_SERVICE:
            chosen.add(lowered)
        else:
            valid = ", ".join(["all", *sorted(ALL_SERVICES), SIDECAR_SERVICE])
            raise FieldError(f"unknown service {name!r} (valid: {valid})")
    if SIDECAR_SERVICE in chosen and len(chosen) > 1:
        # The sidecar sits next to one app with a config of its own; sharing a process
        # with Vallum's services would tie the app's gate to their restarts and keys.
        raise FieldError("sidecar runs alone (services: sidecar), not with other services")
    return frozenset(chosen)


# Python's logging spells it "warning"; Pomerium configs often say "warn".
_LOG_LEVELS = {
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
}


def parse_log_level(value: Any) -> str:
    text = parse_str(value).strip().lower()
    if text not in _LOG_LEVELS:
        raise FieldError(f"must be one of debug, info, warn, warning, error; got {value!r}")
    return _LOG_LEVELS[text]


_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def parse_trust_domain(value: Any) -> str:
    text = parse_str(value)
    labels = text.split(".")
    if len(text) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise FieldError(
            "must be a DNS-like name of lowercase letters, digits, '-' and '.' "
            f"(e.g. vallum.internal), got {value!r}"
        )
    return text


_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")


def decode_base64(text: str) -> bytes:
    """Standard or URL-safe base64, padding optional, whitespace ignored."""
    compact = "".join(text.split())
    if not _BASE64.fullmatch(compact):
        raise FieldError("not valid base64")
    url_safe = "-" in compact or "_" in compact
    if url_safe and ("+" in compact or "/" in compact):
        raise FieldError("not valid base64 (mixes the standard and URL-safe alphabets)")
    bare = compact.rstrip("=")
    if len(bare) % 4 == 1:
        raise FieldError("not valid base64 (truncated)")
    padded = bare + "=" * (-len(bare) % 4)
    try:
        return base64.b64decode(padded, altchars=b"-_" if url_safe else None, validate=True)
    except binascii.Error:
        raise FieldError("not valid base64") from None


SECRET_MIN_BYTES = 32


def parse_secret(value: Any) -> bytes:
    # Messages here never quote the value: it is a secret, and errors end up in logs.
    if not isinstance(value, str):
        raise FieldError(f"expected a base64 string, got {kind_of(value)}")
    data = decode_base64(value)
    if len(data) < SECRET_MIN_BYTES:
        raise FieldError(
            f"must decode to at least {SECRET_MIN_BYTES} bytes, got {len(data)} "
            "(generate one with: head -c32 /dev/urandom | base64)"
        )
    return data
