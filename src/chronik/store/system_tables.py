"""chronik's own tables: projection bookkeeping, leases, the outbox, the inbox, saga records.

Every adapter simply has them: SQLite and PostgreSQL create them in their versioned migrations
(``chronik.store.sqlite.schema``, ``chronik.store.postgres.schema``; a test checks that the
migrated columns match these specs), the memory store on construction. Nothing creates them on
a hot path. ``chronik.store.tables`` re-exports every name here.
"""

from __future__ import annotations

from typing import Final

from chronik.store.records import TableSpec

__all__ = [
    "DEAD_LETTERS",
    "INBOX",
    "LEASES",
    "LEASES_TABLE",
    "OUTBOX",
    "PLANS",
    "REPLAY_MARKS",
    "REQUESTS",
    "SAGA_RECORD",
    "STATUS",
    "SYSTEM_TABLES",
]

STATUS: Final = TableSpec(
    "chronik_projections",
    (
        ("name", "TEXT"),
        ("version", "INTEGER"),
        ("generation", "INTEGER"),
        ("building", "INTEGER"),
        ("building_version", "INTEGER"),
        ("state", "TEXT"),
        ("position", "TEXT"),
        ("build_position", "TEXT"),
        ("head", "TEXT"),
        ("lag_events", "INTEGER"),
        ("lag_seconds", "REAL"),
        ("events_per_s", "REAL"),
        ("processed", "INTEGER"),
        ("last_error", "TEXT"),
        ("heartbeat", "INTEGER"),
        ("owner", "TEXT"),
    ),
    ("name",),
)
REQUESTS: Final = TableSpec(
    "chronik_projection_requests",
    (
        ("id", "TEXT"),
        ("projection", "TEXT"),
        ("action", "TEXT"),
        ("arg", "TEXT"),
        ("created_at", "INTEGER"),
    ),
    ("id",),
)
DEAD_LETTERS: Final = TableSpec(
    "chronik_dead_letters",
    (
        ("projection", "TEXT"),
        ("event_id", "TEXT"),
        ("generation", "INTEGER"),
        ("position", "INTEGER"),
        ("position_index", "INTEGER"),
        ("stream", "TEXT"),
        ("sequence", "INTEGER"),
        ("type", "TEXT"),
        ("error", "TEXT"),
        ("attempts", "INTEGER"),
        ("blocked", "INTEGER"),
        ("parked_at", "INTEGER"),
    ),
    ("projection", "generation", "event_id"),
    (("projection", "stream"),),
)
LEASES: Final = TableSpec(
    "chronik_leases",
    (
        ("name", "TEXT"),
        ("partition", "INTEGER"),
        ("owner", "TEXT"),
        ("epoch", "INTEGER"),
        ("expires_at", "INTEGER"),
        ("version", "INTEGER"),
    ),
    ("name", "partition"),
)
PLANS: Final = TableSpec(
    "chronik_projection_plans",
    (
        ("name", "TEXT"),
        ("generation", "INTEGER"),
        ("version", "INTEGER"),
        ("partitions", "INTEGER"),
        ("building", "INTEGER"),
        ("building_version", "INTEGER"),
        ("building_partitions", "INTEGER"),
        ("switching", "INTEGER"),
        ("retired", "TEXT"),
    ),
    ("name",),
)
OUTBOX: Final = TableSpec(
    "outbox_messages",
    (
        ("id", "TEXT"),
        ("kind", "TEXT"),
        ("topic", "TEXT"),
        ("body", "BLOB"),
        ("headers", "TEXT"),
        ("msg_key", "TEXT"),
        ("state", "TEXT"),
        ("attempts", "INTEGER"),
        ("next_attempt_us", "INTEGER"),
        ("last_error", "TEXT"),
        ("created_us", "INTEGER"),
        ("sent_us", "INTEGER"),
    ),
    ("id",),
    (("state", "created_us"),),
)
INBOX: Final = TableSpec(
    "chronik_inbox",
    (("consumer", "TEXT"), ("message_id", "TEXT"), ("topic", "TEXT")),
    ("consumer", "message_id"),
)
SAGA_RECORD: Final = TableSpec(  # what process managers sent and how it went (chronik.saga_record)
    "chronik_saga_record",
    (
        ("owner", "TEXT"),
        ("command_id", "TEXT"),
        ("instance_id", "TEXT"),
        ("event_id", "TEXT"),
        ("command", "TEXT"),
        ("outcome", "TEXT"),
        ("detail", "TEXT"),
        ("recorded_at", "INTEGER"),
    ),
    ("owner", "command_id"),
    (("owner", "event_id"),),
)
REPLAY_MARKS: Final = TableSpec(  # how far projections handled events live (chronik.replay_marks)
    "chronik_replay_marks",
    (
        ("projection", "TEXT"),
        ("partition", "INTEGER"),
        ("generation", "INTEGER"),
        ("position", "TEXT"),
        ("refuse", "TEXT"),
    ),
    ("projection", "partition", "generation"),
)
SYSTEM_TABLES: Final = (
    STATUS,
    REQUESTS,
    DEAD_LETTERS,
    LEASES,
    PLANS,
    OUTBOX,
    INBOX,
    SAGA_RECORD,
    REPLAY_MARKS,
)
LEASES_TABLE: Final = LEASES.name
