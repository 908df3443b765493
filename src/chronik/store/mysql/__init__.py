"""The MySQL / MariaDB event store (``mysql://user:pass@host:3306/db``, ``mariadb://`` too), on
InnoDB: store (the adapter, assembling the rest), write (a unit of work on one connection),
append (a lone append in one round trip), side (checkpoints and snapshots of a unit), read, dcb
(conditions and tag queries as SQL), tables (read-model tables and leases), pool (the
connections, their session settings, and ``run``: statements in one round trip), schema (URL,
versioned migrations) and errors (the one place asyncmy's errors are translated). Data flows
down: store -> append/write/read -> side/dcb/tables -> pool -> the server.

**Gap-safe global order: positions are assigned at commit, in commit order.** InnoDB hands out
AUTO_INCREMENT ids when a row is inserted, not when its transaction commits: a transaction that
inserted id 10 may commit after the one that inserted id 11, and a reader that saw 11 and goes
on "after 11" would skip 10 for ever. So the position is not an AUTO_INCREMENT. Every writing
transaction takes it from a one-row counter as the **last** thing it does before COMMIT::

    UPDATE log_head SET last = LAST_INSERT_ID(last + n) WHERE id = 1;   -- row lock until commit
    INSERT INTO events (position, ...) VALUES (LAST_INSERT_ID() - n + 1, ...), ...;
    INSERT INTO event_tags ...; COMMIT

The counter's row lock is held until the transaction ends, so the next writer gets its
positions only after this one committed (or rolled back, which rolls the counter back too: no
hole). Position order is therefore commit order, positions are gapless, and any READ COMMITTED
statement that sees position p sees every position below it: readers page with ``position >
after`` and need no horizon (``head_bounds_reads``; ``settled`` is always true). A crash
cannot leave a gap either: the redo log is written in commit order.

Why not (b), readers stopping below the oldest running writer (``information_schema.innodb_trx``
or a registry of in-flight writers) as PostgreSQL's horizon does: InnoDB exposes no snapshot
xmin for rows, a registry row must be committed separately before the events (an extra round
trip, and a crashed writer's row stalls every reader until someone cleans it up), and reading
uncommitted rows to find the lowest in-flight id races with the id allocation itself. (a) is
correct by construction and its cost is bounded: writers serialise only from the counter update
to their commit, and that tail is one batch of statements the server runs back to back (the
connections use multi-statements: no client round trip while the lock is held). InnoDB
releases row locks when a commit is done in memory, before its redo log flush, so the flush is
not inside the serialised section (with a binary log on, two-phase commit keeps the lock
through the binlog write: group commit helps less there). Everything else a unit does, stream
locks, checks, read-model rows, checkpoints, runs before, concurrently with other writers.

Measured here (MariaDB 10.11 on loopback, 2 shared cores, ``innodb_flush_log_at_trx_commit=2``;
SHOW PROFILES): the locked tail of a one-event append (counter update, event insert, commit) is
~130 us of server time. With 8 / 32 concurrent appenders most appends wait for the counter at
least once (Innodb_row_lock_waits ~80 / 95 %), yet throughput is bound by CPU (~220 us of
client CPU per append, the server's statements on the same two cores), not by the lock: 1.6-3k
appends/s either way. With ``innodb_flush_log_at_trx_commit=1`` the waits drop (~30 / 70 %,
the fsync is outside the lock) and 8 appenders reach ~2x the single caller's rate.

**Streams** are rows of ``streams`` locked for the unit's transaction (``INSERT ... ON
DUPLICATE KEY UPDATE``: created with version -1 or X-locked, in sorted key order), so writers
of one stream serialise and an expectation holds until commit; writers of other streams never
wait on each other before the tail.

**DCB conditions** are checked after the unit took the counter's lock (one round trip more,
only for units with conditions): while a condition is checked no event can be written, and
every event written before it has committed, so overlapping conditions serialise without any
lock of their own (no ``GET_LOCK``, no tag rows): see ``dcb``. Tags are indexed in
``event_tags`` in the event's transaction.

**Isolation: READ COMMITTED**, set per session: each statement sees what committed before it
started (the condition check after the lock must; under REPEATABLE READ it would read the
transaction's first snapshot and miss what committed while it waited), and locking reads take
no gap locks, so writers of unrelated streams do not block each other on index gaps.

**Driver: asyncmy** (not aiomysql): the same API as aiomysql / PyMySQL, but its protocol and
row decoding are compiled (Cython), a round trip costs ~25 us here; it supports
multi-statements, which the tail needs. Like every MySQL text-protocol driver it binds values
by escaping them client-side (``%s``); the session's ``sql_mode`` never has
``NO_BACKSLASH_ESCAPES``, which that escaping relies on.

**Failures.** A connection lost before the COMMIT was sent: the server rolls the transaction
back, and the store runs the unit again on a new connection (a server restart empties the
pool). Lost while the COMMIT was on its way: StoreUnavailable with ``outcome_unknown=True``;
retrying with the same event ids answers with the original result. ``innodb_lock_wait_timeout``
(5 s) bounds a wait on a lock; on MariaDB ``idle_transaction_timeout`` (30 s) ends a session
that sits in a transaction, e.g. a frozen process holding the counter. Deadlocks (InnoDB picks
a victim) run the unit again. DDL (a read-model ``ensure`` / ``drop``) commits implicitly in
MySQL, so it runs before the unit's transaction, not atomically with it.

Imports: chronik.errors, chronik.messages, chronik.dcb, chronik.adapters, chronik.store.base/
records/tables/table_query, and asyncmy; never chronik.projections, chronik.server or
chronik.transports.
"""

from chronik.store.mysql.store import MySQLEventStore

__all__ = ["MySQLEventStore"]
