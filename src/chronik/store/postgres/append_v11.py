"""Schema version 11: the append functions in fewer statements, and every advisory lock taken
in one global order, (class, key text), with the keys of a tagged append given by the caller.

The locks are the same as schema 10's (functions.py: the stream's key exclusive, the events'
DCB keys shared, a condition's keys exclusive); their order was (class, key hash), which only
SQL could compute, so each append sorted and de-duplicated a union of its keys in SQL: about a
third of a tagged append's backend time (a DCB decision's ``append_tagged_one``: ~45 of 147
us). Text order is one Python ``sorted`` away: ``locks.lock_arrays`` sorts and de-duplicates a
unit's or a tagged append's keys, ``LOCK_SQL`` and the tagged functions take them in the order
given (``p_lock_classes``, ``p_lock_keys``, ``p_lock_x``), and the stream functions order their
few keys in SQL (``COLLATE "C"``, byte order, which is Python's order of str). A schema opens
only with the chronik of its version (store.py), so no two orders ever run side by side.

The stream functions (``append_event``, ``append_events``), same arguments and statuses:

Per call, schema 10 ran a statement for the stream's key lock, one for the DCB keys' shared
locks (a sorted, de-duplicated union), a SELECT of the stream row, the insert(s) and an UPDATE
of the stream's version. Measured in the backend (CPU per single-event append on this machine
class): a plain INSERT 20 us, schema 10's function 85 us, of which the lock union ~15 and the
stream SELECT ~15. Now:

- **locks**: an append whose events carry no tags and share one type (nearly all of them)
  takes its three locks in one target list (``*`` sorts before ``y/<type>``); other appends
  sort their union of keys.
- **the stream row**: one ``UPDATE ... RETURNING`` moves the version of a stream that exists,
  is not tombstoned and is as expected (the expectation in its WHERE clause, against the
  version the stream shows), and answers its id and previous version. Only when it finds no
  row does the function look closer (missing stream: insert it at its final version;
  tombstone: status 2; not as expected: status 1 with the version it shows).

Under READ COMMITTED each statement of a VOLATILE plpgsql function takes a new snapshot, so
the UPDATE sees every write committed while the function waited for the locks.
"""

from __future__ import annotations

from typing import Final

from chronik.store.postgres.functions import _derived
from chronik.store.postgres.tenancy import APPEND_TAGGED_ONE_V10, APPEND_TAGGED_V10

__all__ = ["MIGRATION_11"]

_STREAM_LOCK = (
    "pg_advisory_xact_lock({lock_class}, "
    "hashtext(p_tenant || '/' || p_domain || '/' || p_aggregate_id))"
)
_TYPE_LOCKS = (
    "pg_advisory_xact_lock_shared({dcb_lock_class}, hashtext('*')),\n"
    "                    pg_advisory_xact_lock_shared({dcb_lock_class}, hashtext('y/' || {t}))"
)
_KEY_LOCKS = (
    "PERFORM pg_advisory_xact_lock_shared({dcb_lock_class}, hashtext(q.k))\n"
    '           FROM (SELECT DISTINCT x COLLATE "C" AS k FROM ({keys}) AS u(x) ORDER BY 1) AS q;'
)

_TEMPLATE = """
CREATE OR REPLACE FUNCTION {s}.{name}(
    p_tenant text, p_domain text, p_aggregate_id text, p_expected bigint,
    {params}, p_recorded_at bigint,
    OUT o_status int, OUT o_actual bigint, OUT o_xid bigint, OUT {ids})
LANGUAGE plpgsql AS $fn$
DECLARE
    v_sid bigint;
    v_ver bigint;
    v_tb bigint;
    v_dead boolean;
BEGIN
    IF {untagged_one_type} THEN
        IF {lock_class} < {dcb_lock_class} THEN
            PERFORM {stream_lock},
                    {type_locks};
        ELSE
            PERFORM {type_locks},
                    {stream_lock};
        END IF;
    ELSIF {lock_class} < {dcb_lock_class} THEN
        PERFORM {stream_lock};
        {key_locks}
    ELSE
        {key_locks}
        PERFORM {stream_lock};
    END IF;
    -- Expectation codes: -1 any, -2 no stream, -3 stream exists, n >= 0 exactly n, against
    -- the version the stream shows (-1 below its truncation point).
    UPDATE {s}.streams s SET version = s.version + {count}
     WHERE s.tenant = p_tenant AND s.domain = p_domain AND s.aggregate_id = p_aggregate_id
       AND NOT s.tombstone
       AND CASE p_expected WHEN -1 THEN true
                           WHEN -2 THEN s.version < s.truncate_before
                           WHEN -3 THEN s.version >= s.truncate_before
                           ELSE s.version = p_expected AND s.version >= s.truncate_before END
    RETURNING s.id, s.version - {count} INTO v_sid, v_ver;
    IF NOT FOUND THEN
        SELECT s.id, s.version, s.truncate_before, s.tombstone
          INTO v_sid, v_ver, v_tb, v_dead FROM {s}.streams s
         WHERE s.tenant = p_tenant AND s.domain = p_domain AND s.aggregate_id = p_aggregate_id;
        IF FOUND THEN
            IF v_dead THEN
                o_status := 2;
                RETURN;
            END IF;
            IF v_ver >= v_tb THEN
                o_actual := v_ver;
            END IF;
            o_status := 1;
            RETURN;
        END IF;
        IF p_expected >= 0 OR p_expected = -3 THEN
            o_status := 1;
            RETURN;
        END IF;
        INSERT INTO {s}.streams (tenant, domain, aggregate_id, version)
        VALUES (p_tenant, p_domain, p_aggregate_id, {count} - 1)
        RETURNING id INTO v_sid;
        v_ver := -1;
    END IF;
    o_actual := CASE WHEN v_ver >= 0 THEN v_ver END;
    o_xid := pg_current_xact_id()::text::bigint;
    {insert}
    o_status := 0;
END
$fn$
"""
_COLUMNS = (
    "INSERT INTO {s}.events (xid, stream_id, sequence, event_id, type, schema_version, "
    "payload, metadata, content_type, recorded_at, tags, tenant)"
)


def _function(name: str, params: str, ids: str, count: str, keys: str, t: str, **rest: str) -> str:
    text = (
        _TEMPLATE.replace("{key_locks}", _KEY_LOCKS)
        .replace("{stream_lock}", _STREAM_LOCK)
        .replace("{type_locks}", _TYPE_LOCKS.replace("{t}", t))
        .replace("{name}", name)
        .replace("{params}", params)
        .replace("{ids}", ids)
        .replace("{count}", count)
        .replace("{keys}", keys)
    )
    for key, value in rest.items():
        text = text.replace("{" + key + "}", value)
    return text


#: One event: scalar arguments.
APPEND_EVENT_V11: Final = _function(
    "append_event",
    "p_event_id text, p_type text, p_version int, p_payload bytea,\n"
    "    p_metadata bytea, p_content_type text, p_tags text",
    "o_id bigint",
    "1",
    "SELECT '*' UNION ALL SELECT 'y/' || p_type UNION ALL\n"
    "                 SELECT 't/' || t FROM unnest(string_to_array(p_tags, ' ')) AS t",
    "p_type",
    untagged_one_type="p_tags IS NULL",
    insert=_COLUMNS + "\n"
    "    VALUES (o_xid, v_sid, v_ver + 1, p_event_id, p_type, p_version, p_payload,\n"
    "            p_metadata, p_content_type, p_recorded_at, p_tags, p_tenant)\n"
    "    RETURNING id INTO o_id;\n"
    "    IF p_tags IS NOT NULL THEN\n"
    "        INSERT INTO {s}.event_tags (tag, xid, id)\n"
    "        SELECT t, o_xid, o_id FROM unnest(string_to_array(p_tags, ' ')) AS t;\n"
    "    END IF;",
)

#: Several events: one array element per event.
APPEND_EVENTS_V11: Final = _function(
    "append_events",
    "p_event_ids text[], p_types text[], p_versions int[], p_payloads bytea[],\n"
    "    p_metadata bytea[], p_content_types text[], p_tags text[]",
    "o_ids bigint[]",
    "cardinality(p_event_ids)",
    "SELECT '*' UNION ALL SELECT 'y/' || t FROM unnest(p_types) AS t UNION ALL\n"
    "                 SELECT 't/' || t FROM unnest(p_tags) AS g,\n"
    "                        unnest(string_to_array(g, ' ')) AS t",
    "p_types[1]",
    # every tag NULL, every type the first one
    untagged_one_type="array_remove(p_tags, NULL) = '{}' AND p_types <@ ARRAY[p_types[1]]",
    insert="WITH ins AS (\n        " + _COLUMNS + "\n"
    "        SELECT o_xid, v_sid, v_ver + u.o, u.e, u.t, u.v, u.p, u.m, u.c, p_recorded_at,\n"
    "               u.g, p_tenant\n"
    "          FROM unnest(p_event_ids, p_types, p_versions, p_payloads, p_metadata,\n"
    "                      p_content_types, p_tags)\n"
    "               WITH ORDINALITY AS u(e, t, v, p, m, c, g, o)\n"
    "        RETURNING id, tags),\n"
    "    tagged AS (\n"
    "        INSERT INTO {s}.event_tags (tag, xid, id)\n"
    "        SELECT x, o_xid, ins.id FROM ins, unnest(string_to_array(ins.tags, ' ')) AS x)\n"
    "    SELECT array_agg(ins.id ORDER BY ins.id) INTO o_ids FROM ins;",
)


# The tagged functions: schema 10's, their lock union replaced by the caller's sorted keys.
_TAGGED_LOCKS_START = "    -- Every lock first, before the transaction has an id"
_TAGGED_LOCKS_END = "GROUP BY 1, 2 ORDER BY 1, 2) AS q;\n"
_TAGGED_LOCKS = """    -- Every lock first, before the transaction has an id, in the global order
    -- (class, key text), each key once in its strongest mode (locks.lock_arrays): the
    -- streams' keys exclusive, the events' DCB keys shared, the condition's keys exclusive.
    PERFORM CASE WHEN u.x THEN pg_advisory_xact_lock(u.c, hashtext(u.k))
                 ELSE pg_advisory_xact_lock_shared(u.c, hashtext(u.k)) END
       FROM unnest(p_lock_classes, p_lock_keys, p_lock_x) AS u(c, k, x);
"""


def _given_locks(function: str) -> str:
    start = function.index(_TAGGED_LOCKS_START)
    end = function.index(_TAGGED_LOCKS_END) + len(_TAGGED_LOCKS_END)
    function = function[:start] + _TAGGED_LOCKS + function[end:]
    return _derived(
        function,
        (
            "    p_after_id bigint,\n    OUT",
            "    p_after_id bigint, p_lock_classes int[], p_lock_keys text[], p_lock_x bool[],\n"
            "    OUT",
        ),
    )


#: Schema version 11 (``{s}``, ``{lock_class}``, ``{dcb_lock_class}`` as in every migration).
MIGRATION_11: Final[list[str]] = [
    APPEND_EVENTS_V11,
    APPEND_EVENT_V11,
    "DROP FUNCTION {s}.append_tagged(text, text, text[], text[], int[], bytea[], bytea[], "
    "text[], text[], bigint, text[], text[], bigint, bigint)",
    "DROP FUNCTION {s}.append_tagged_one(text, text, text, text, int, bytea, bytea, text, text, "
    "bigint, text[], text[], bigint, bigint)",
    _given_locks(APPEND_TAGGED_V10),
    _given_locks(APPEND_TAGGED_ONE_V10),
]
