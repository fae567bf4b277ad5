"""Session stores behind SessionService, and the change feed that Watch streams.

memory (one process, lost on restart), sqlite (the default: a file in data_dir),
postgres (shared by authenticate replicas, changes fanned out with LISTEN/NOTIFY).
All three pass the same test suite.
"""

from services.authenticate.stores.factory import open_store, sqlite_path
from services.authenticate.stores.feed import Changes, Event
from services.authenticate.stores.memory import MemoryStore, MemoryTable
from services.authenticate.stores.postgres import PostgresStore
from services.authenticate.stores.protocol import SessionStore
from services.authenticate.stores.sqlite import SqliteStore

__all__ = [
    "Changes",
    "Event",
    "MemoryStore",
    "MemoryTable",
    "PostgresStore",
    "SessionStore",
    "SqliteStore",
    "open_store",
    "sqlite_path",
]
