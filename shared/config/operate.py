"""How Vallum reports on itself: metrics and the log format.

`metrics_address` is Pomerium's key: where each service serves Prometheus metrics
(`/metrics`, plain HTTP; keep it on a private network). `log_format` is Vallum's own:
`console` (one readable line per event, the default) or `json` (one JSON object per
line, for log shippers).
"""

from __future__ import annotations

from typing import Any

from shared.config.errors import FieldError
from shared.config.fields import parse_str
from shared.config.schema import Key, plain
from shared.config.urls import parse_address

LOG_FORMATS = ("console", "json")


def parse_log_format(value: Any) -> str:
    text = parse_str(value).strip().lower()
    if text not in LOG_FORMATS:
        raise FieldError(f"must be one of {', '.join(LOG_FORMATS)}; got {value!r}")
    return text


OPERATE_KEYS: tuple[Key, ...] = (
    Key("metrics_address", plain(parse_address)),
    Key("log_format", plain(parse_log_format)),
)
