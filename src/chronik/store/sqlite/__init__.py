"""The SQLite event store: store (the adapter and its group commit), read, schema (versioned
migrations, every system table included) and tables (read-model writes).

Imports: chronik.errors, chronik.messages, chronik.values, chronik.store.base/tables/table_query
and the standard library's sqlite3; never chronik.projections, chronik.server or
chronik.transports.
"""

from chronik.store.sqlite.schema import options_from_url
from chronik.store.sqlite.store import WAL_LIMIT, SQLiteEventStore

__all__ = ["WAL_LIMIT", "SQLiteEventStore", "options_from_url"]
