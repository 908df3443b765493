"""The LMDB event store (``lmdb:///path/to/dir``): an embedded key-value store for one process
that wants no SQL.

Why py-lmdb rather than rocksdict: LMDB gives exactly what the store port needs with nothing to
tune: one writer at a time (the store's own order is commit order, as with SQLite), readers that
never block and never wait (MVCC snapshots of the last commit), nested transactions (a unit of
work fails alone inside a group commit), and a copy-on-write B-tree that is crash-safe without
a write-ahead log or recovery step: a commit is the last meta-page write, so a kill -9 or a
failed commit leaves the previous state whole. RocksDB's LSM tree is faster for write-heavy
loads far bigger than memory, but needs compaction tuning, a WAL and a recovery pass, and
rocksdict's transactions are optimistic, so the unit-of-work checks would need a second layer.

Modules: store (the adapter, assembling the rest), env (URL, options, the single-process lock,
sub-databases, map size), commit (the writer thread and its group commit), write (one unit in a
transaction), read, dcb (index scans, queries, the unit's checks), tables (read-model tables
and leases), keys (the byte layout of every sub-database) and errors (the one place py-lmdb's
errors are translated). Data flows down: store -> commit -> write -> dcb/tables -> keys.

Imports: chronik.errors, chronik.messages, chronik.dcb, chronik.store.base/records/tables/
table_query/memory_tables/system_tables and py-lmdb; never chronik.projections, chronik.server
or chronik.transports.
"""

from chronik.store.lmdb.env import options_from_url
from chronik.store.lmdb.store import LmdbEventStore

__all__ = ["LmdbEventStore", "options_from_url"]
