"""databroker_storage_*: where authenticate keeps sessions (Pomerium's key names)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.config import ConfigError, load_config, parse_config

BASE = "/etc/vallum"
DSN = "postgresql://vallum:hunter2secret@db:5432/vallum"


def problems(raw: Any, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ or {}, BASE)
    return [str(p) for p in caught.value.problems]


def test_defaults_to_sqlite() -> None:
    config = parse_config({}, {}, BASE)
    assert config.databroker_storage_type == "sqlite"
    assert config.databroker_storage_connection_string is None


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres", " Postgres "])
def test_storage_types(kind: str) -> None:
    raw = {"databroker_storage_type": kind}
    if kind.strip().lower() == "postgres":
        raw["databroker_storage_connection_string"] = DSN
    assert parse_config(raw, {}, BASE).databroker_storage_type == kind.strip().lower()


def test_unknown_type_names_the_choices() -> None:
    assert problems({"databroker_storage_type": "mysql"}) == [
        "databroker_storage_type: must be one of memory, sqlite, postgres; got 'mysql'"
    ]
    assert problems({"databroker_storage_type": "redis"}) == [
        "databroker_storage_type: must be one of memory, sqlite, postgres; got 'redis' "
        "(Vallum has no redis store; use postgres)"
    ]


def test_postgres_needs_a_connection_string() -> None:
    assert problems({"databroker_storage_type": "postgres"}) == [
        "databroker_storage_connection_string: required when databroker_storage_type is "
        "postgres (set it or databroker_storage_connection_string_file, e.g. "
        "postgresql://vallum@db:5432/vallum)"
    ]


def test_a_connection_string_without_postgres_is_refused() -> None:
    # Replicas that each quietly used their own sqlite file would not share sign-outs.
    assert problems({"databroker_storage_connection_string": DSN}) == [
        "databroker_storage_type: is sqlite, but a connection string is set; set "
        "databroker_storage_type: postgres to use it, or remove it"
    ]


def test_from_the_environment() -> None:
    config = parse_config(
        {},
        {
            "DATABROKER_STORAGE_TYPE": "postgres",
            "DATABROKER_STORAGE_CONNECTION_STRING": DSN,
        },
        BASE,
    )
    assert config.databroker_storage_type == "postgres"
    assert config.databroker_storage_connection_string == DSN


def test_the_connection_string_never_appears_in_messages_or_repr() -> None:
    config = parse_config(
        {"databroker_storage_type": "postgres", "databroker_storage_connection_string": DSN},
        {},
        BASE,
    )
    assert "hunter2secret" not in repr(config)
    found = problems(
        {"databroker_storage_type": "sqlite", "databroker_storage_connection_string": DSN}
    )
    assert not any("hunter2secret" in p for p in found)
    assert problems(
        {"databroker_storage_connection_string": 5432, "databroker_storage_type": "postgres"}
    ) == [
        "databroker_storage_connection_string: expected a PostgreSQL connection string, got integer"
    ]
    assert problems(
        {"databroker_storage_type": "postgres", "databroker_storage_connection_string": "  "}
    ) == ["databroker_storage_connection_string: is empty"]


def test_connection_string_file(tmp_path: Path) -> None:
    (tmp_path / "dsn").write_text(DSN + "\n")
    (tmp_path / "config.yaml").write_text(
        "databroker_storage_type: postgres\ndatabroker_storage_connection_string_file: dsn\n"
    )
    config = load_config(str(tmp_path / "config.yaml"), {})
    assert config.databroker_storage_connection_string == DSN
    assert config.databroker_storage_connection_string_file == str(tmp_path / "dsn")


def test_connection_string_file_problems(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "databroker_storage_type: postgres\ndatabroker_storage_connection_string_file: nope\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path / "config.yaml"), {})
    assert [p.path for p in caught.value.problems] == ["databroker_storage_connection_string_file"]
    assert "cannot read" in str(caught.value)


def test_inline_and_file_together_is_a_problem() -> None:
    raw = {
        "databroker_storage_type": "postgres",
        "databroker_storage_connection_string": DSN,
        "databroker_storage_connection_string_file": "dsn",
    }
    assert problems(raw) == [
        "databroker_storage_connection_string: set either databroker_storage_connection_string "
        "or databroker_storage_connection_string_file, not both"
    ]
