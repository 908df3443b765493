"""PostgreSQL tenancy (schema version 9): each event row carries its stream's tenant, indexed
with its position; row-level security scopes a session to one tenant; a tagged append's
condition counts its tenant's events only.

* ``events.tenant`` is set by a trigger from the stream row (the append functions need not
  pass it), and filled in for the events stored before; ``(tenant, xid, id)`` is its index, so
  ``read_all(tenant=...)`` walks one tenant's events, never the log.
* Row-level security on ``events``, ``streams``, ``snapshots`` and ``event_tags``: a session whose
  ``chronik.tenant`` is set (a store URL's ``?tenant=acme``, or ``ALTER ROLE ... SET
  chronik.tenant``) sees and writes that tenant's rows only (``'-'``: the default tenant);
  unset, every row. PostgreSQL enforces policies for roles that do not own the tables (the
  owner too after ``ALTER TABLE ... FORCE ROW LEVEL SECURITY``): run the application as such a
  role, one per tenant or one shared role with the setting per connection. ``event_tags`` has
  no tenant column: its policy hides a tag whose event belongs to another tenant, looked up by
  ``tag_in_tenant`` (run as the owner, so it sees every event; a tag whose event is gone, as
  when retention deletes the event before its tags, stays writable).
* ``append_tagged`` / ``append_tagged_one`` again, their condition filtered by ``p_tenant``.

Schema version 10: the append functions write the tenant they are given (``p_tenant``, the
stream's), so the trigger no longer runs for them (a plpgsql call and a ``streams`` lookup per
event, about a tenth of a single-event append); it stays for any other insert, which leaves
the column NULL (it has no default any more) and fires it.
"""

from __future__ import annotations

from typing import Final

from chronik.store.postgres.functions import (
    APPEND_EVENT_V6,
    APPEND_EVENTS_V6,
    APPEND_TAGGED,
    APPEND_TAGGED_ONE,
    _derived,
)

__all__ = [
    "APPEND_TAGGED_ONE_V10",
    "APPEND_TAGGED_ONE_V9",
    "APPEND_TAGGED_V10",
    "APPEND_TAGGED_V9",
    "TAG_POLICY",
    "TENANT_COLUMN_MIGRATION",
    "TENANT_MIGRATION",
    "TENANT_POLICY",
]

#: The row-level-security condition of the tables with a tenant column (schema 9).
TENANT_POLICY: Final = (
    "coalesce(current_setting('chronik.tenant', true), '') "
    "IN ('', CASE tenant WHEN '' THEN '-' ELSE tenant END)"
)

#: ``event_tags`` (no tenant column): visible unless its event is another tenant's. The
#: function runs as the tables' owner (SECURITY DEFINER), so it sees that event; a tag written
#: in the statement that inserts its event (not visible yet) passes.
TAG_POLICY: Final = "{s}.tag_in_tenant(xid, id)"
_TAG_IN_TENANT: Final = """CREATE FUNCTION {s}.tag_in_tenant(p_xid bigint, p_id bigint)
    RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT coalesce(current_setting('chronik.tenant', true), '') = ''
        OR NOT EXISTS (SELECT 1 FROM {s}.events e WHERE e.xid = p_xid AND e.id = p_id
                          AND CASE e.tenant WHEN '' THEN '-' ELSE e.tenant END
                              <> current_setting('chronik.tenant', true))
    $$"""


def _tenant_conditions(function: str) -> str:
    """Schema version 9: a tagged append's condition counts the events of its tenant only
    (``p_tenant``, the tenant of the streams it opens; ``ConditionCheck.tenant``)."""
    return _derived(
        function,
        (
            "             WHERE (e.xid, e.id) > (v_ax, v_ai) "
            "AND (v_types IS NULL OR e.type = ANY(v_types))\n",
            "             WHERE e.tenant = p_tenant AND (e.xid, e.id) > (v_ax, v_ai)\n"
            "               AND (v_types IS NULL OR e.type = ANY(v_types))\n",
        ),
        (
            "            SELECT k.xid, k.id INTO v_xid, v_id FROM {s}.event_tags k\n"
            "             WHERE k.tag = v_tags[1] AND (k.xid, k.id) > (v_ax, v_ai)\n",
            "            SELECT k.xid, k.id INTO v_xid, v_id FROM {s}.event_tags k\n"
            "             CROSS JOIN LATERAL (SELECT e.tenant FROM {s}.events e\n"
            "                                  WHERE e.xid = k.xid AND e.id = k.id LIMIT 1) AS e\n"
            "             WHERE k.tag = v_tags[1] AND (k.xid, k.id) > (v_ax, v_ai)\n"
            "               AND e.tenant = p_tenant\n",
        ),
        (
            "              JOIN {s}.events e ON e.xid = k.xid AND e.id = k.id\n",
            # one probe of events per key, whatever plan the session cached (with a plain join,
            # a generic plan made on small tables walks (tenant, xid, id) through the whole log)
            "             CROSS JOIN LATERAL (SELECT e.type, e.tags, e.tenant FROM {s}.events e\n"
            "                                  WHERE e.xid = k.xid AND e.id = k.id LIMIT 1) AS e\n",
        ),
        (
            "               AND string_to_array(e.tags, ' ') @> v_tags\n",
            "               AND string_to_array(e.tags, ' ') @> v_tags AND e.tenant = p_tenant\n",
        ),
    )


APPEND_TAGGED_V9: Final = _tenant_conditions(APPEND_TAGGED)
APPEND_TAGGED_ONE_V9: Final = _tenant_conditions(APPEND_TAGGED_ONE)

#: Schema version 9 (``{s}``: the quoted schema, as every migration).
TENANT_MIGRATION: Final[list[str]] = [
    "ALTER TABLE {s}.events ADD COLUMN tenant text NOT NULL DEFAULT ''",
    "UPDATE {s}.events e SET tenant = st.tenant FROM {s}.streams st "
    "WHERE st.id = e.stream_id AND st.tenant <> ''",
    "CREATE INDEX events_tenant_position ON {s}.events (tenant, xid, id)",
    """CREATE FUNCTION {s}.event_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        SELECT st.tenant INTO NEW.tenant FROM {s}.streams st WHERE st.id = NEW.stream_id;
        RETURN NEW;
    END $$""",
    "CREATE TRIGGER events_tenant BEFORE INSERT ON {s}.events "
    "FOR EACH ROW EXECUTE FUNCTION {s}.event_tenant()",
    # a tagged append's condition counts its tenant's events only (above)
    APPEND_TAGGED_V9,
    APPEND_TAGGED_ONE_V9,
    # row-level security (a store URL's ?tenant=, docs: tenants): a session whose
    # chronik.tenant is set sees and writes that tenant's rows only ('-': the default
    # tenant); unset, every row. Enforced for roles that do not own the tables (or all,
    # after ALTER TABLE ... FORCE ROW LEVEL SECURITY)
    *(
        stmt.replace("{t}", table)
        for table in ("events", "streams", "snapshots")
        for stmt in (
            "ALTER TABLE {s}.{t} ENABLE ROW LEVEL SECURITY",
            f"CREATE POLICY {{t}}_tenant ON {{s}}.{{t}} USING ({TENANT_POLICY})",
        )
    ),
    _TAG_IN_TENANT,
    "ALTER TABLE {s}.event_tags ENABLE ROW LEVEL SECURITY",
    f"CREATE POLICY event_tags_tenant ON {{s}}.event_tags USING ({TAG_POLICY})",
]


def _tenant_written(function: str) -> str:
    """Schema version 10: ``function`` inserting its events with their tenant (``p_tenant``)."""
    if "u.c, p_recorded_at, u.g" in function:  # append_tagged: one line per column list
        values = ("u.c, p_recorded_at, u.g\n", "u.c, p_recorded_at, u.g, p_tenant\n")
    elif "u.c, p_recorded_at,\n" in function:  # append_events
        values = ("               u.g\n", "               u.g, p_tenant\n")
    else:  # the single-event functions
        values = (
            "p_content_type, p_recorded_at, p_tags)",
            "p_content_type, p_recorded_at, p_tags, p_tenant)",
        )
    return _derived(
        function,
        ("content_type, recorded_at, tags)", "content_type, recorded_at, tags, tenant)"),
        values,
    )


APPEND_TAGGED_V10: Final = _tenant_written(APPEND_TAGGED_V9)
APPEND_TAGGED_ONE_V10: Final = _tenant_written(APPEND_TAGGED_ONE_V9)

#: Schema version 10: the append functions write the tenant; the trigger fills it in only for
#: an insert that leaves it out (NULL: the column has no default any more).
TENANT_COLUMN_MIGRATION: Final[list[str]] = [
    "ALTER TABLE {s}.events ALTER COLUMN tenant DROP DEFAULT",
    "DROP TRIGGER events_tenant ON {s}.events",
    "CREATE TRIGGER events_tenant BEFORE INSERT ON {s}.events "
    "FOR EACH ROW WHEN (NEW.tenant IS NULL) EXECUTE FUNCTION {s}.event_tenant()",
    _tenant_written(APPEND_EVENTS_V6),
    _tenant_written(APPEND_EVENT_V6),
    APPEND_TAGGED_V10,
    APPEND_TAGGED_ONE_V10,
]
