"""SQLite narrow read_all pages carry the schema version, or -1 for a row whose metadata,
content type or tags are set (one column for two, issue 20 W8): every event still comes out
with its own schema version and extras, on typed and untyped pages, forward and backward."""

from __future__ import annotations

from pathlib import Path

import chronik
from chronik.store.sqlite import rows


def _events() -> list[chronik.EventData]:
    """Plain and flagged events (metadata, bytes, tags) at schema versions 1..4, interleaved."""
    out = []
    for i in range(40):
        version = 1 + i % 4
        kind = i % 5
        if kind == 1:
            e = chronik.EventData("w.t", {"i": i}, metadata={"m": str(i)}, schema_version=version)
        elif kind == 2:
            e = chronik.EventData(
                "w.t", b"\x01", content_type="application/x-b", schema_version=version
            )
        elif kind == 3:
            e = chronik.EventData("w.t", {"i": i}, tags=[f"k:{i}"], schema_version=version)
        else:
            e = chronik.EventData("w.t" if i % 2 else "w.u", {"i": i}, schema_version=version)
        out.append(e)
    return out


async def test_each_event_keeps_its_schema_version_and_extras(tmp_path: Path) -> None:
    """read_all, typed or not, forward or backward, pages of 7: as get_event reads each event."""
    async with chronik.open_store(f"sqlite:///{tmp_path / 'n.db'}") as store:
        sent = _events()
        for k in range(0, len(sent), 8):
            await store.append(chronik.StreamId("w", f"s{k % 3}"), sent[k : k + 8])
        for types in (None, ["w.t"]):
            for backward in (False, True):
                if backward:
                    got = [e async for e in store.read_all(types=types, backward=True)]
                else:
                    got, after = [], None
                    while page := (await store.read_page(after, 7, None, types)).events:
                        got += page
                        after = page[-1].position
                want = [e for e in sent if types is None or e.type in types]
                assert len(got) == len(want)
                for e in got:
                    assert e == await store.get_event(e.event_id)
                    assert e.schema_version >= 1
                by_id = {e.event_id: e for e in want}
                assert all(e.schema_version == by_id[e.event_id].schema_version for e in got)
                assert {e.metadata.get("m") for e in got} >= ({None} if types else {"1", None})


def test_narrow_columns_fold_the_flag_into_the_schema_version() -> None:
    """A narrow page reads no flag column of its own: the schema version column is the flag."""
    version = "iif(coalesce(metadata, content_type, tags) IS NULL, schema_version, -1)"
    typed = f"position, stream_id, sequence, event_id, {version}, payload, recorded_at"
    assert rows.page_cols(True, False) == typed
    assert rows.page_cols(False, False) == typed.replace("event_id, ", "event_id, type, ")
