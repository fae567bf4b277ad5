"""Session stores: kept as the import path SessionService and tests already use.

The implementations live in services.authenticate.stores.
"""

from services.authenticate.stores import (
    Changes,
    Event,
    MemoryStore,
    MemoryTable,
    PostgresStore,
    SessionStore,
    SqliteStore,
    open_store,
)

__all__ = [
    "Changes",
    "Event",
    "MemoryStore",
    "MemoryTable",
    "PostgresStore",
    "SessionStore",
    "SqliteStore",
    "open_store",
]
