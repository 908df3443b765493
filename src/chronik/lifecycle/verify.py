"""``verify_subject``: search every place a subject's personal data could hide, report hits.

Canaries are plaintext values the caller knows the subject had (a test plants them; an
operator passes the values from the erasure request). The scan covers every event (payload and
metadata bytes), chronik's system tables and the named read-model tables through the store's
port, every table of a SQLite database read directly, the raw bytes of the SQLite file and its
WAL (free pages and old frames included), and any file given (exports, archives). Besides the
canaries it reports envelopes of the subject that still open, i.e. a key that was not deleted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from chronik.errors import ConfigurationError, ReadModelError
from chronik.lifecycle.subject_keys import SUBJECT_KEYS
from chronik.personal.base import KeyStore, check_subject
from chronik.personal.envelope import is_envelope
from chronik.store.base import EventStore
from chronik.store.system_tables import SYSTEM_TABLES

__all__ = ["Hit", "VerifyReport", "verify_subject"]

_dict = msgspec.json.Decoder(dict[str, Any])


class Hit(msgspec.Struct, frozen=True):
    """One finding: where (``event <id>``, ``table <name>``, ``file <path>``) and what."""

    where: str
    what: str


class VerifyReport(msgspec.Struct):
    """The places searched and what was found (clean: no hits)."""

    subject: str
    searched: list[str] = msgspec.field(default_factory=list)
    hits: list[Hit] = msgspec.field(default_factory=list)
    envelopes: int = 0  # the subject's envelopes seen in events (unreadable once forgotten)

    @property
    def clean(self) -> bool:
        """No canary anywhere and no envelope of the subject that still opens."""
        return not self.hits


def _needles(canaries: Iterable[str]) -> list[tuple[str, bytes]]:
    """Each canary as raw UTF-8 and as it appears inside a JSON string."""
    out: list[tuple[str, bytes]] = []
    for c in canaries:
        if not isinstance(c, str) or len(c) < 4:
            raise ConfigurationError(f"a canary must be a str of 4 characters or more: {c!r}")
        forms = {c.encode(), msgspec.json.encode(c)[1:-1]}
        out += [(c, f) for f in forms]
    return out


def _find(blob: bytes, needles: list[tuple[str, bytes]]) -> list[str]:
    return sorted({c for c, form in needles if form in blob})


async def verify_subject(
    store: EventStore,
    subject: str,
    *,
    canaries: Sequence[str] = (),
    keys: KeyStore | None = None,
    tables: Sequence[str] = (),
    sqlite_file: Path | None = None,
    files: Sequence[Path] = (),
) -> VerifyReport:
    """Search for ``subject``'s canaries (and still-readable envelopes) everywhere listed."""
    check_subject(subject)
    needles = _needles(canaries)
    report = VerifyReport(subject)
    readable = keys is not None and await keys.key_for(subject) is not None
    report.searched.append("events")
    async for event in store.read_all():
        blob = event.payload + msgspec.json.encode(dict(event.metadata))
        for c in _find(blob, needles):
            report.hits.append(Hit(f"event {event.event_id} ({event.type})", f"canary {c!r}"))
        if b'"$enc"' in event.payload:
            try:
                mine = [v for v in _dict.decode(event.payload).values() if is_envelope(v)]
            except msgspec.DecodeError:
                continue
            count = sum(1 for v in mine if v["s"] == subject)
            report.envelopes += count
            if count and readable:
                what = f"{count} envelope(s) of the subject still open: its key exists"
                report.hits.append(Hit(f"event {event.event_id} ({event.type})", what))
    names = [t.name for t in SYSTEM_TABLES] + [SUBJECT_KEYS.name, *tables]
    for name in dict.fromkeys(names):
        try:
            rows = await store.read_table(name)
        except (ReadModelError, ConfigurationError):  # never created here: nothing in it
            continue
        report.searched.append(f"table {name}")
        for row in rows:
            for c in _find(repr(row).encode() + msgspec.json.encode(_plain(row)), needles):
                report.hits.append(Hit(f"table {name}", f"canary {c!r}"))
    if sqlite_file is not None:
        _scan_sqlite(sqlite_file, needles, report)
    for path in files:
        _scan_file(path, needles, report)
    return report


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else v for k, v in row.items()}


def _scan_file(path: Path, needles: list[tuple[str, bytes]], report: VerifyReport) -> None:
    if not path.is_file():
        raise ConfigurationError(f"no file to scan at {path}")
    report.searched.append(f"file {path}")
    for c in _find(path.read_bytes(), needles):
        report.hits.append(Hit(f"file {path}", f"canary {c!r}"))


def _scan_sqlite(path: Path, needles: list[tuple[str, bytes]], report: VerifyReport) -> None:
    """Every table of the database (read only), then the raw bytes of the file and its WAL."""
    _scan_file(path, needles, report)
    wal = path.with_name(path.name + "-wal")
    if wal.is_file():
        _scan_file(wal, needles, report)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for name in names:
            report.searched.append(f"sqlite table {name}")
            quoted = '"' + name.replace('"', '""') + '"'
            for row in conn.execute(f"SELECT * FROM {quoted}"):  # names from the db itself
                blob = b"".join(
                    v if isinstance(v, bytes) else str(v).encode("utf-8", "replace") for v in row
                )
                for c in _find(blob, needles):
                    report.hits.append(Hit(f"sqlite table {name}", f"canary {c!r}"))
    finally:
        conn.close()
