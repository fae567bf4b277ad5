"""Where authenticate keeps sessions: Pomerium's databroker_storage_* keys.

`sqlite` (Vallum's own, the default) is a file in data_dir for one machine;
`postgres` is shared by authenticate replicas; `memory` is lost on restart. The
connection string may hold a password, so no message here ever quotes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.config.errors import FieldError
from shared.config.fields import kind_of, parse_str
from shared.config.model import Config
from shared.config.schema import Ctx, FileMode, Given, Key, is_set, plain

STORAGE_TYPES = ("memory", "sqlite", "postgres")


def parse_storage_type(value: Any) -> str:
    text = parse_str(value).strip().lower()
    if text in STORAGE_TYPES:
        return text
    hint = " (Vallum has no redis store; use postgres)" if text == "redis" else ""
    raise FieldError(f"must be one of {', '.join(STORAGE_TYPES)}; got {value!r}{hint}")


def parse_connection_string(value: Any) -> str:
    if not isinstance(value, str):
        raise FieldError(f"expected a PostgreSQL connection string, got {kind_of(value)}")
    if not value.strip():
        raise FieldError("is empty")
    return value.strip()


STORAGE_KEYS: tuple[Key, ...] = (
    Key("databroker_storage_type", plain(parse_storage_type)),
    Key(
        "databroker_storage_connection_string",
        plain(parse_connection_string),
        file=FileMode.TEXT,
    ),
)


def check_storage(config: Config, given: Mapping[str, Given], ctx: Ctx) -> None:
    has_dsn = is_set(given, "databroker_storage_connection_string")
    if config.databroker_storage_type == "postgres" and not has_dsn:
        ctx.child("databroker_storage_connection_string").add(
            "required when databroker_storage_type is postgres (set it or "
            "databroker_storage_connection_string_file, e.g. "
            "postgresql://vallum@db:5432/vallum)"
        )
    elif has_dsn and config.databroker_storage_type != "postgres":
        # Replicas that silently fell back to separate local stores would each sign
        # users out of the others; say so rather than guess.
        ctx.child("databroker_storage_type").add(
            f"is {config.databroker_storage_type}, but a connection string is set; "
            "set databroker_storage_type: postgres to use it, or remove it"
        )
