"""The PostgreSQL store's append functions (``append_event``, ``append_events``,
``append_tagged``), as SQL text.

``migrate`` replaces ``{s}`` by the quoted schema, ``{lock_class}`` by the advisory lock class of
the schema's streams and ``{dcb_lock_class}`` by the class of its DCB keys (``schema.py``).

Locks, all taken before the transaction takes its id (a row lock would take one first), so a
stream's events, and the events a condition guards, are in position order whatever order
writers queue in:

- the stream's key, exclusive: writers of one stream serialise;
- the DCB keys of the events written, shared: ``*``, ``y/<type>`` for each type, ``t/<tag>`` for
  each tag. A conditional append takes the keys its query can match exclusive (write.py), so it
  excludes every writer of an event it could match, and unconditional writers never wait on each
  other.

Every transaction takes its locks in one global order, so there are no deadlocks between
writers (the functions' IF on the two classes is constant: it picks that order): (class, key
hash) up to schema 10, (class, key text) from schema 11 (append_v11.py).

``append_tagged`` is a whole tagged append (``store.append_tagged``) in one autocommit
statement: it takes every lock the unit needs (as ``dcb.LOCK_SQL`` does), then checks, then
writes. Under READ COMMITTED each statement of a VOLATILE plpgsql function takes a new
snapshot, so its checks see everything that committed while it waited for the locks.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "APPEND_EVENT",
    "APPEND_EVENTS",
    "APPEND_EVENTS_V6",
    "APPEND_EVENT_V6",
    "APPEND_TAGGED",
    "APPEND_TAGGED_ONE",
    "DROP_V1_FUNCTIONS",
]

# Expectation codes: -1 ANY, -2 NO_STREAM, -3 STREAM_EXISTS, n >= 0 exactly n. o_status: 0
# written, 1 the stream is not as expected (o_actual: its version, NULL when it has no events;
# nothing written). p_tags: an event's sorted tags joined by one space, NULL when it has none.
_TEMPLATE = """
CREATE OR REPLACE FUNCTION {s}.{name}(
    p_tenant text, p_domain text, p_aggregate_id text, p_expected bigint,
    {params}, p_recorded_at bigint,
    OUT o_status int, OUT o_actual bigint, OUT o_xid bigint, OUT {ids})
LANGUAGE plpgsql AS $fn$
DECLARE
    v_sid bigint;
    v_ver bigint;
BEGIN
    IF {lock_class} < {dcb_lock_class} THEN
        PERFORM pg_advisory_xact_lock({lock_class},
            hashtext(p_tenant || '/' || p_domain || '/' || p_aggregate_id));
        PERFORM pg_advisory_xact_lock_shared({dcb_lock_class}, q.k)
           FROM (SELECT DISTINCT hashtext(x) AS k FROM ({keys}) AS u(x) ORDER BY 1) AS q;
    ELSE
        PERFORM pg_advisory_xact_lock_shared({dcb_lock_class}, q.k)
           FROM (SELECT DISTINCT hashtext(x) AS k FROM ({keys}) AS u(x) ORDER BY 1) AS q;
        PERFORM pg_advisory_xact_lock({lock_class},
            hashtext(p_tenant || '/' || p_domain || '/' || p_aggregate_id));
    END IF;
    SELECT s.id, s.version INTO v_sid, v_ver FROM {s}.streams s
     WHERE s.tenant = p_tenant AND s.domain = p_domain AND s.aggregate_id = p_aggregate_id;
    IF NOT FOUND THEN
        IF p_expected >= 0 OR p_expected = -3 THEN
            o_status := 1;
            RETURN;
        END IF;
        INSERT INTO {s}.streams (tenant, domain, aggregate_id, version)
        VALUES (p_tenant, p_domain, p_aggregate_id, -1)
        RETURNING id INTO v_sid;
        v_ver := -1;
    END IF;
    IF v_ver >= 0 THEN
        o_actual := v_ver;
    END IF;
    IF NOT (p_expected = -1 OR (p_expected = -2 AND v_ver < 0)
            OR (p_expected = -3 AND v_ver >= 0) OR p_expected = v_ver) THEN
        o_status := 1;
        RETURN;
    END IF;
    o_xid := pg_current_xact_id()::text::bigint;
    {insert}
    UPDATE {s}.streams SET version = v_ver + {count} WHERE id = v_sid;
    o_status := 0;
END
$fn$
"""
_COLUMNS = (
    "INSERT INTO {s}.events (xid, stream_id, sequence, event_id, type, schema_version, "
    "payload, metadata, content_type, recorded_at, tags)"
)

# Many events: arrays, one element per event.
APPEND_EVENTS: Final = (
    _TEMPLATE.replace("{name}", "append_events")
    .replace(
        "{params}",
        "p_event_ids text[], p_types text[], p_versions int[], p_payloads bytea[],\n"
        "    p_metadata bytea[], p_content_types text[], p_tags text[]",
    )
    .replace(
        "{keys}",
        "SELECT '*' UNION ALL SELECT 'y/' || t FROM unnest(p_types) AS t UNION ALL\n"
        "                 SELECT 't/' || t FROM unnest(p_tags) AS g,\n"
        "                        unnest(string_to_array(g, ' ')) AS t",
    )
    .replace("{ids}", "o_ids bigint[]")
    .replace("{count}", "cardinality(p_event_ids)")
    .replace(
        "{insert}",
        "WITH ins AS (\n        " + _COLUMNS + "\n"
        "        SELECT o_xid, v_sid, v_ver + u.o, u.e, u.t, u.v, u.p, u.m, u.c, p_recorded_at,\n"
        "               u.g\n"
        "          FROM unnest(p_event_ids, p_types, p_versions, p_payloads, p_metadata,\n"
        "                      p_content_types, p_tags)\n"
        "               WITH ORDINALITY AS u(e, t, v, p, m, c, g, o)\n"
        "        RETURNING id, tags),\n"
        "    tagged AS (\n"
        "        INSERT INTO {s}.event_tags (tag, xid, id)\n"
        "        SELECT x, o_xid, ins.id FROM ins, unnest(string_to_array(ins.tags, ' ')) AS x)\n"
        "    SELECT array_agg(ins.id ORDER BY ins.id) INTO o_ids FROM ins;",
    )
)

# One event (the common case): scalars, cheaper to encode and to run.
APPEND_EVENT: Final = (
    _TEMPLATE.replace("{name}", "append_event")
    .replace(
        "{params}",
        "p_event_id text, p_type text, p_version int, p_payload bytea,\n"
        "    p_metadata bytea, p_content_type text, p_tags text",
    )
    .replace(
        "{keys}",
        "SELECT '*' UNION ALL SELECT 'y/' || p_type UNION ALL\n"
        "                 SELECT 't/' || t FROM unnest(string_to_array(p_tags, ' ')) AS t",
    )
    .replace("{ids}", "o_id bigint")
    .replace("{count}", "1")
    .replace(
        "{insert}",
        _COLUMNS + "\n    VALUES (o_xid, v_sid, v_ver + 1, p_event_id, p_type, p_version, "
        "p_payload,\n            p_metadata, p_content_type, p_recorded_at, p_tags)\n"
        "    RETURNING id INTO o_id;\n"
        "    IF p_tags IS NOT NULL THEN\n"
        "        INSERT INTO {s}.event_tags (tag, xid, id)\n"
        "        SELECT t, o_xid, o_id FROM unnest(string_to_array(p_tags, ' ')) AS t;\n"
        "    END IF;",
    )
)

# The functions of schema versions 1..3 (no tags): migration 4 replaces them.
DROP_V1_FUNCTIONS: Final = (
    "DROP FUNCTION IF EXISTS {s}.append_event(text, text, text, bigint, text, text, int, bytea, "
    "bytea, text, bigint)",
    "DROP FUNCTION IF EXISTS {s}.append_events(text, text, text, bigint, text[], text[], int[], "
    "bytea[], bytea[], text[], bigint)",
)

# A tagged append: each event the only event (sequence 0) of its own new stream (p_tenant,
# p_domain, event id), with at most one append condition: p_item_types / p_item_tags hold one
# element per query item (its types / tags joined by one space, NULL for none), NULL for no
# condition; p_after_xid / p_after_id its ``after`` (NULL: none). o_status: 0 written (o_xid,
# o_ids: the positions, in event order); 1 the condition failed (o_item: the item the first
# match matched first, (o_xid, o_ids[1]) its position; nothing written); 2 an event id or one
# of the streams is stored already (nothing written: the caller resolves the retry).
APPEND_TAGGED: Final = """
CREATE OR REPLACE FUNCTION {s}.append_tagged(
    p_tenant text, p_domain text, p_event_ids text[], p_types text[], p_versions int[],
    p_payloads bytea[], p_metadata bytea[], p_content_types text[], p_tags text[],
    p_recorded_at bigint, p_item_types text[], p_item_tags text[], p_after_xid bigint,
    p_after_id bigint,
    OUT o_status int, OUT o_item int, OUT o_xid bigint, OUT o_ids bigint[])
LANGUAGE plpgsql AS $fn$
DECLARE
    v_types text[];
    v_tags text[];
    v_xid bigint;
    v_id bigint;
    v_event_id text;
    v_ax bigint := coalesce(p_after_xid, -1);
    v_ai bigint := coalesce(p_after_id, -1);
BEGIN
    -- Every lock first, before the transaction has an id, in dcb.LOCK_SQL's global order
    -- (class, key hash), each key once in its strongest mode: the streams' keys exclusive,
    -- the events' DCB keys shared, the condition's keys exclusive.
    PERFORM CASE WHEN q.x THEN pg_advisory_xact_lock(q.c, q.h)
                 ELSE pg_advisory_xact_lock_shared(q.c, q.h) END
       FROM (SELECT u.c, hashtext(u.k) AS h, bool_or(u.x) AS x
               FROM (SELECT {lock_class} AS c, p_tenant || '/' || p_domain || '/' || e AS k,
                            true AS x
                       FROM unnest(p_event_ids) AS e
                     UNION ALL SELECT {dcb_lock_class}, '*', false
                     UNION ALL SELECT {dcb_lock_class}, 'y/' || t, false FROM unnest(p_types) AS t
                     UNION ALL SELECT {dcb_lock_class}, 't/' || t, false
                       FROM unnest(p_tags) AS g, unnest(string_to_array(g, ' ')) AS t
                     UNION ALL SELECT {dcb_lock_class}, 't/' || t, true
                       FROM unnest(p_item_tags) AS g, unnest(string_to_array(g, ' ')) AS t
                     UNION ALL SELECT {dcb_lock_class}, 'y/' || t, true
                       FROM unnest(p_item_tags, p_item_types) AS i(g, y),
                            unnest(string_to_array(i.y, ' ')) AS t
                      WHERE i.g IS NULL
                     UNION ALL SELECT {dcb_lock_class}, '*', true
                       FROM unnest(p_item_tags, p_item_types) AS i(g, y)
                      WHERE i.g IS NULL AND i.y IS NULL) AS u
              GROUP BY 1, 2 ORDER BY 1, 2) AS q;
    -- A retry (or a stream taken): the caller sorts it out. One probe per event, equalities
    -- on unique keys: the plan this session caches stays an index lookup as the tables grow
    -- (an "= ANY(array)" plan made while they were small can stay a sequential scan).
    FOREACH v_event_id IN ARRAY p_event_ids LOOP
        IF EXISTS (SELECT 1 FROM {s}.events WHERE event_id = v_event_id)
           OR EXISTS (SELECT 1 FROM {s}.streams WHERE tenant = p_tenant AND domain = p_domain
                      AND aggregate_id = v_event_id) THEN
            o_status := 2;
            RETURN;
        END IF;
    END LOOP;
    -- The condition: the first match after p_after over all items (the lowest item on a tie).
    FOR i IN 1 .. coalesce(cardinality(p_item_tags), 0) LOOP
        v_tags := string_to_array(p_item_tags[i], ' ');
        v_types := string_to_array(p_item_types[i], ' ');
        IF v_tags IS NULL THEN
            SELECT e.xid, e.id INTO v_xid, v_id FROM {s}.events e
             WHERE (e.xid, e.id) > (v_ax, v_ai) AND (v_types IS NULL OR e.type = ANY(v_types))
             ORDER BY e.xid, e.id LIMIT 1;
        ELSIF v_types IS NULL AND cardinality(v_tags) = 1 THEN
            SELECT k.xid, k.id INTO v_xid, v_id FROM {s}.event_tags k
             WHERE k.tag = v_tags[1] AND (k.xid, k.id) > (v_ax, v_ai)
             ORDER BY k.xid, k.id LIMIT 1;
        ELSE
            SELECT k.xid, k.id INTO v_xid, v_id FROM {s}.event_tags k
              JOIN {s}.events e ON e.xid = k.xid AND e.id = k.id
             WHERE k.tag = v_tags[1] AND (k.xid, k.id) > (v_ax, v_ai)
               AND (v_types IS NULL OR e.type = ANY(v_types))
               AND string_to_array(e.tags, ' ') @> v_tags
             ORDER BY k.xid, k.id LIMIT 1;
        END IF;
        IF FOUND AND (o_xid IS NULL OR (v_xid, v_id) < (o_xid, o_ids[1])) THEN
            o_item := i - 1;
            o_xid := v_xid;
            o_ids := ARRAY[v_id];
        END IF;
    END LOOP;
    IF o_xid IS NOT NULL THEN
        o_status := 1;
        RETURN;
    END IF;
    o_xid := pg_current_xact_id()::text::bigint;
    WITH st AS (
        INSERT INTO {s}.streams (tenant, domain, aggregate_id, version)
        SELECT p_tenant, p_domain, e, 0 FROM unnest(p_event_ids) AS e
        RETURNING id, aggregate_id),
    ins AS (
        INSERT INTO {s}.events (xid, stream_id, sequence, event_id, type, schema_version,
                                payload, metadata, content_type, recorded_at, tags)
        SELECT o_xid, st.id, 0, u.e, u.t, u.v, u.p, u.m, u.c, p_recorded_at, u.g
          FROM unnest(p_event_ids, p_types, p_versions, p_payloads, p_metadata,
                      p_content_types, p_tags) WITH ORDINALITY AS u(e, t, v, p, m, c, g, o)
          JOIN st ON st.aggregate_id = u.e
         ORDER BY u.o
        RETURNING id, tags),
    tagged AS (
        INSERT INTO {s}.event_tags (tag, xid, id)
        SELECT x, o_xid, ins.id FROM ins, unnest(string_to_array(ins.tags, ' ')) AS x)
    SELECT array_agg(ins.id ORDER BY ins.id) INTO o_ids FROM ins;
    o_status := 0;
END
$fn$
"""


# Schema version 6 (deletion, chronik.store.deletion): the same functions, aware of the stream's
# truncation point and tombstone. o_status 2: the stream is tombstoned (nothing written). The
# expectation is checked against the version the stream shows (-1 when it reads empty: below
# truncate_before); the events take the sequences after the last one stored, shown or not, and
# on success o_actual is that last stored sequence (NULL: none).
def _deletion_aware(function: str) -> str:
    replacements = (
        (
            "    v_ver bigint;\n",
            "    v_ver bigint;\n    v_tb bigint := 0;\n    v_dead boolean := false;\n"
            "    v_act bigint;\n",
        ),
        (
            "SELECT s.id, s.version INTO v_sid, v_ver FROM {s}.streams s",
            "SELECT s.id, s.version, s.truncate_before, s.tombstone\n"
            "      INTO v_sid, v_ver, v_tb, v_dead FROM {s}.streams s",
        ),
        (
            "    IF NOT FOUND THEN\n",
            "    IF v_dead THEN\n        o_status := 2;\n        RETURN;\n    END IF;\n"
            "    IF NOT FOUND THEN\n",
        ),
        (
            "    IF v_ver >= 0 THEN\n        o_actual := v_ver;\n    END IF;\n",
            "    v_act := CASE WHEN v_ver >= coalesce(v_tb, 0) THEN v_ver ELSE -1 END;\n"
            "    IF v_act >= 0 THEN\n        o_actual := v_act;\n    END IF;\n",
        ),
        (
            "    IF NOT (p_expected = -1 OR (p_expected = -2 AND v_ver < 0)\n"
            "            OR (p_expected = -3 AND v_ver >= 0) OR p_expected = v_ver) THEN\n"
            "        o_status := 1;\n        RETURN;\n    END IF;\n",
            "    IF NOT (p_expected = -1 OR (p_expected = -2 AND v_act < 0)\n"
            "            OR (p_expected = -3 AND v_act >= 0) OR p_expected = v_act) THEN\n"
            "        o_status := 1;\n        RETURN;\n    END IF;\n"
            "    o_actual := CASE WHEN v_ver >= 0 THEN v_ver END;\n",
        ),
    )
    for old, new in replacements:
        if function.count(old) != 1:  # pragma: no cover - a broken template fails at import
            raise AssertionError(f"append function template changed: {old!r}")
        function = function.replace(old, new)
    return function


APPEND_EVENTS_V6: Final = _deletion_aware(APPEND_EVENTS)
APPEND_EVENT_V6: Final = _deletion_aware(APPEND_EVENT)


def _derived(base: str, *changes: tuple[str, str]) -> str:
    """``base`` with each (old, new) replaced once; every old text must be there."""
    for old, new in changes:
        if base.count(old) != 1:
            raise AssertionError(f"function template changed: {old!r}")  # caught by any test
        base = base.replace(old, new)
    return base


# Schema version 7: ``append_tagged`` for the common single-event tagged append (a DCB
# decision) with scalar event arguments: the same locks, checks and statuses (o_ids holds the
# one position's id), and plain single-row inserts where ``append_tagged`` unnests seven
# arrays and joins them to the new streams. About a third less work per call.
APPEND_TAGGED_ONE: Final = _derived(
    APPEND_TAGGED,
    ("{s}.append_tagged(", "{s}.append_tagged_one("),
    (
        "p_event_ids text[], p_types text[], p_versions int[],\n"
        "    p_payloads bytea[], p_metadata bytea[], p_content_types text[], p_tags text[],",
        "p_event_id text, p_type text, p_version int,\n"
        "    p_payload bytea, p_metadata bytea, p_content_type text, p_tags text,",
    ),
    ("    v_event_id text;\n", "    v_sid bigint;\n"),
    (
        "p_tenant || '/' || p_domain || '/' || e AS k,\n"
        "                            true AS x\n"
        "                       FROM unnest(p_event_ids) AS e\n",
        "p_tenant || '/' || p_domain || '/' || p_event_id AS k,\n"
        "                            true AS x\n",
    ),
    (
        "SELECT {dcb_lock_class}, 'y/' || t, false FROM unnest(p_types) AS t",
        "SELECT {dcb_lock_class}, 'y/' || p_type, false",
    ),
    (
        "SELECT {dcb_lock_class}, 't/' || t, false\n"
        "                       FROM unnest(p_tags) AS g, unnest(string_to_array(g, ' ')) AS t",
        "SELECT {dcb_lock_class}, 't/' || t, false\n"
        "                       FROM unnest(string_to_array(p_tags, ' ')) AS t",
    ),
    ("    FOREACH v_event_id IN ARRAY p_event_ids LOOP\n", ""),
    ("= v_event_id)\n", "= p_event_id)\n"),
    ("AND aggregate_id = v_event_id) THEN\n", "AND aggregate_id = p_event_id) THEN\n"),
    ("RETURN;\n        END IF;\n    END LOOP;\n", "RETURN;\n        END IF;\n"),
    (
        APPEND_TAGGED[
            APPEND_TAGGED.index("    WITH st AS (") : APPEND_TAGGED.index("    o_status := 0;\nEND")
        ],
        "    INSERT INTO {s}.streams (tenant, domain, aggregate_id, version)\n"
        "    VALUES (p_tenant, p_domain, p_event_id, 0) RETURNING id INTO v_sid;\n"
        "    INSERT INTO {s}.events (xid, stream_id, sequence, event_id, type, schema_version,\n"
        "                            payload, metadata, content_type, recorded_at, tags)\n"
        "    VALUES (o_xid, v_sid, 0, p_event_id, p_type, p_version, p_payload, p_metadata,\n"
        "            p_content_type, p_recorded_at, p_tags)\n"
        "    RETURNING id INTO v_id;\n"
        "    o_ids := ARRAY[v_id];\n"
        "    IF p_tags IS NOT NULL THEN\n"
        "        INSERT INTO {s}.event_tags (tag, xid, id)\n"
        "        SELECT t, o_xid, v_id FROM unnest(string_to_array(p_tags, ' ')) AS t;\n"
        "    END IF;\n",
    ),
)
