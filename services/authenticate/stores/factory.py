"""open_store: the store the configuration asks for, or one line saying why not."""

from __future__ import annotations

import os
import sqlite3

from services.authenticate.stores.memory import MemoryStore
from services.authenticate.stores.postgres import PostgresStore
from services.authenticate.stores.protocol import SessionStore
from services.authenticate.stores.sqlite import SchemaTooNew, SqliteStore
from shared.config import Config
from shared.rpc import StartupError

SQLITE_FILE = "sessions.db"


def sqlite_path(config: Config) -> str:
    return os.path.join(config.data_dir, SQLITE_FILE)


async def open_store(config: Config) -> SessionStore:
    if config.shared_secret is None:
        raise StartupError(
            "shared_secret: required (session tokens are encrypted at rest with a key "
            "derived from it)"
        )
    kind = config.databroker_storage_type
    if kind == "memory":
        return MemoryStore(config.shared_secret)
    if kind == "postgres":
        if not config.databroker_storage_connection_string:
            raise StartupError(
                "databroker_storage_connection_string: required when "
                "databroker_storage_type is postgres"
            )
        return await PostgresStore.open(
            config.databroker_storage_connection_string, config.shared_secret
        )
    if kind != "sqlite":
        raise StartupError(f"databroker_storage_type: unknown store {kind!r}")
    path = sqlite_path(config)
    try:
        return await SqliteStore.open(path, config.shared_secret)
    except OSError as e:
        reason = e.strerror or str(e)
        raise StartupError(f"data_dir: cannot open the session store {path}: {reason}") from None
    except (sqlite3.Error, SchemaTooNew) as e:
        raise StartupError(f"data_dir: cannot open the session store {path}: {e}") from None
