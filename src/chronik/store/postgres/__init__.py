"""The PostgreSQL event store: store (the adapter, assembling the rest), write (a unit of work
on one connection: plain functions over the connection and the schema's statements), read,
schema (versioned migrations and the migrator, also used by the PostgreSQL transport), tables
(read-model writes and reads), leases, pool (the connection pool and its server-side timeouts),
feed (LISTEN/NOTIFY) and errors (the one place asyncpg errors are translated, shared with the
PostgreSQL transport). Data flows down: store -> write/read -> tables/leases -> connection.

Imports: chronik.errors, chronik.messages, chronik.adapters, chronik.store.base/records/tables/
table_query and asyncpg; never chronik.projections, chronik.server or chronik.transports.
"""

from chronik.store.postgres.read import HorizonLag
from chronik.store.postgres.store import PostgresEventStore, migrate_database

__all__ = ["HorizonLag", "PostgresEventStore", "migrate_database"]
