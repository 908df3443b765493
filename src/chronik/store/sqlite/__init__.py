"""The SQLite event store: store (the adapter, assembling the rest), commit (the group commit:
the writer connection, its queue and WAL checkpoints), write (units of work on the writer
connection), read, schema (versioned migrations, every system table included), tables
(read-model writes), leases and errors (the one place sqlite3 errors are translated). Data
flows down: store -> commit -> write -> tables/leases -> connection.

Imports: chronik.errors, chronik.messages, chronik.store.base/records/tables/table_query and
the standard library's sqlite3; never chronik.projections, chronik.server or
chronik.transports.
"""

from chronik.store.sqlite.schema import options_from_url
from chronik.store.sqlite.store import WAL_LIMIT, SQLiteEventStore

__all__ = ["WAL_LIMIT", "SQLiteEventStore", "options_from_url"]
