"""Schema version 12: the stream append functions (``append_event``, ``append_events``) do
less work for the common appends; same arguments, locks, checks and statuses as schema 11's
(append_v11.py).

- **a new stream** (``NO_STREAM``, the expectation of a stream's first append): the function
  looks for the stream's row and, finding none, inserts it at its final version; only when a
  row is there (a soft-deleted stream, or one not as expected) does it take schema 11's path
  (the ``UPDATE ... RETURNING`` of the expected version, then a closer look). Schema 11 ran
  that UPDATE first, finding nothing, for every new stream. (``INSERT ... ON CONFLICT DO
  NOTHING`` first was measured too: its speculative insertion costs what it saves.)
- **no tags** (``append_events``): the events are inserted without the ``event_tags`` insert
  beside them (a data-modifying CTE that ran, finding no tags, on every call), and a batch
  may pass ``p_tags`` as NULL (no event has tags), as the client does (statements.py).

The stream's advisory lock (taken first, as before) keeps the look and the insert together: no
other append to the stream runs between them, and each statement takes a new snapshot, so
the look sees a row committed while the function waited for the lock.
"""

from __future__ import annotations

from typing import Final

from chronik.store.postgres.append_v11 import APPEND_EVENT_V11, APPEND_EVENTS_V11
from chronik.store.postgres.functions import _derived

__all__ = ["APPEND_EVENTS_V12", "APPEND_EVENT_V12", "MIGRATION_12"]

_UPDATE = "    UPDATE {s}.streams s SET version = s.version + "
_AFTER = "    o_actual := CASE WHEN v_ver >= 0 THEN v_ver END;\n"
_NEW_STREAM = """    IF p_expected = -2 THEN
        -- the common NO_STREAM append: a new stream, its row at its final version
        PERFORM FROM {s}.streams s
         WHERE s.tenant = p_tenant AND s.domain = p_domain AND s.aggregate_id = p_aggregate_id;
        IF NOT FOUND THEN
            INSERT INTO {s}.streams (tenant, domain, aggregate_id, version)
            VALUES (p_tenant, p_domain, p_aggregate_id, {count} - 1)
            RETURNING id INTO v_sid;
            v_ver := -1;
        END IF;
    END IF;
    IF v_sid IS NULL THEN
"""


def _new_stream_first(function: str, count: str) -> str:
    """``function`` inserting a NO_STREAM append's stream row before anything else."""
    return _derived(
        function,
        (_UPDATE, _NEW_STREAM.replace("{count}", count) + _UPDATE),
        (_AFTER, "    END IF;\n" + _AFTER),
    )


_TAGGED_INSERT_START = "    WITH ins AS (\n"
_TAGGED_INSERT_END = "    SELECT array_agg(ins.id ORDER BY ins.id) INTO o_ids FROM ins;\n"


def _untagged_branch(function: str) -> str:
    """``append_events`` inserting untagged batches without the ``event_tags`` statement."""
    start = function.index(_TAGGED_INSERT_START)
    end = function.index(_TAGGED_INSERT_END) + len(_TAGGED_INSERT_END)
    tagged = function[start:end]
    plain = _derived(
        tagged,
        ("        RETURNING id, tags),\n", "        RETURNING id)\n"),
        ("               u.g, p_tenant\n", "               NULL, p_tenant\n"),
        (
            "                      p_content_types, p_tags)\n"
            "               WITH ORDINALITY AS u(e, t, v, p, m, c, g, o)\n",
            "                      p_content_types)\n"
            "               WITH ORDINALITY AS u(e, t, v, p, m, c, o)\n",
        ),
        (
            "    tagged AS (\n"
            "        INSERT INTO {s}.event_tags (tag, xid, id)\n"
            "        SELECT x, o_xid, ins.id FROM ins,"
            " unnest(string_to_array(ins.tags, ' ')) AS x)\n",
            "",
        ),
    )
    branch = "    IF v_plain THEN\n" + plain + "    ELSE\n" + tagged + "    END IF;\n"
    return _derived(
        function[:start] + branch + function[end:],
        ("    v_dead boolean;\n", "    v_dead boolean;\n    v_plain boolean;\n"),
        (
            "BEGIN\n    IF array_remove(p_tags, NULL) = '{}' AND",
            "BEGIN\n    v_plain := p_tags IS NULL OR array_remove(p_tags, NULL) = '{}';\n"
            "    IF v_plain AND",
        ),
    )


#: Several events (arrays; ``p_tags`` NULL: no event has tags).
APPEND_EVENTS_V12: Final = _untagged_branch(
    _new_stream_first(APPEND_EVENTS_V11, "cardinality(p_event_ids)")
)
#: One event (scalars).
APPEND_EVENT_V12: Final = _new_stream_first(APPEND_EVENT_V11, "1")

#: Schema version 12 (``{s}``, ``{lock_class}``, ``{dcb_lock_class}`` as in every migration).
MIGRATION_12: Final[list[str]] = [APPEND_EVENTS_V12, APPEND_EVENT_V12]
