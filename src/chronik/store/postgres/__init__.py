"""The PostgreSQL event store: store (the adapter), write, read, schema (versioned migrations),
tables (read models and system tables), pool, feed (LISTEN/NOTIFY) and errors (the one place
asyncpg errors are translated, shared with the PostgreSQL transport).

Imports: chronik.errors, chronik.messages, chronik.values, chronik.store.base/tables/table_query
and asyncpg; never chronik.projections, chronik.server or chronik.transports.
"""

from chronik.store.postgres.read import HorizonLag
from chronik.store.postgres.store import PostgresEventStore, migrate_database

__all__ = ["HorizonLag", "PostgresEventStore", "migrate_database"]
