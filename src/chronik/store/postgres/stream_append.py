"""Schema version 11: the stream append functions (``append_event``, ``append_events``) in
fewer statements, same arguments, statuses and locks as schema 10's (functions.py,
tenancy.py).

Per call, schema 10 ran a statement for the stream's key lock, one for the DCB keys' shared
locks (a sorted, de-duplicated union), a SELECT of the stream row, the insert(s) and an UPDATE
of the stream's version. Measured in the backend (CPU per single-event append on this machine
class): a plain INSERT 20 us, schema 10's function 85 us, of which the lock union ~15 and the
stream SELECT ~15. Now:

- **locks**: an append whose events carry no tags and share one type (nearly all of them)
  takes its three locks in one target list, in the global (class, key hash) order, ``least`` /
  ``greatest`` ordering the two DCB keys (``*`` and ``y/<type>``); other appends keep the
  union.
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

__all__ = ["APPEND_EVENTS_V11", "APPEND_EVENT_V11"]

_STREAM_LOCK = (
    "pg_advisory_xact_lock({lock_class}, "
    "hashtext(p_tenant || '/' || p_domain || '/' || p_aggregate_id))"
)
_TYPE_LOCKS = (
    "pg_advisory_xact_lock_shared({dcb_lock_class}, least(hashtext('*'), hashtext('y/' || {t}))),\n"
    "                    pg_advisory_xact_lock_shared({dcb_lock_class}, "
    "greatest(hashtext('*'), hashtext('y/' || {t})))"
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
        PERFORM pg_advisory_xact_lock_shared({dcb_lock_class}, q.k)
           FROM (SELECT DISTINCT hashtext(x) AS k FROM ({keys}) AS u(x) ORDER BY 1) AS q;
    ELSE
        PERFORM pg_advisory_xact_lock_shared({dcb_lock_class}, q.k)
           FROM (SELECT DISTINCT hashtext(x) AS k FROM ({keys}) AS u(x) ORDER BY 1) AS q;
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
        _TEMPLATE.replace("{stream_lock}", _STREAM_LOCK)
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
