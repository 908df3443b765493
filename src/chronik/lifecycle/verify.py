"""``verify_subject``: search every place a subject's personal data could hide, report hits.

Canaries are plaintext values the caller knows the subject had (a test plants them; an
operator passes the values from the erasure request). The scan covers every event (payload and
metadata bytes), chronik's system tables (the outbox, the inbox, projection dead letters, saga
records, ...), the PostgreSQL transport's tables when they share the store's schema (messages
in flight and its dead letters, ``transport_messages``; ``transport_inbox``), every stream's
snapshot and the named read-model tables through the store's port, every table of a SQLite
database read directly, the raw bytes of the SQLite file and its WAL (free pages and old frames
included), the sealed segments of the store's archive (decompressed, ``Archive.scan``), and
any file given (exports, archive blobs). Besides the canaries it reports envelopes
of the subject that still open (in events, table rows and snapshots), i.e. a key that was not
deleted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from chronik.errors import ConfigurationError, ReadModelError
from chronik.lifecycle.subject_keys import SUBJECT_KEYS
from chronik.personal.base import KeyStore, check_subject
from chronik.personal.envelope import is_envelope
from chronik.store.base import EventStore
from chronik.store.system_tables import SYSTEM_TABLES

#: The most canary values (and table names) one verification takes.
MAX_CANARIES: Final = 32

__all__ = ["MAX_CANARIES", "TRANSPORT_TABLES", "Hit", "VerifyReport", "verify_subject"]

_dict = msgspec.json.Decoder(dict[str, Any])
#: the PostgreSQL transport's tables (messages in flight and dead letters; its inbox), scanned
#: when they live in the store's schema
TRANSPORT_TABLES = ("transport_messages", "transport_inbox")


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
    snapshots: bool = True,
) -> VerifyReport:
    """Search for ``subject``'s canaries (and still-readable envelopes) everywhere listed;
    ``snapshots`` reads every stream's snapshot (one read per stream)."""
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
    names = [t.name for t in SYSTEM_TABLES] + [SUBJECT_KEYS.name, *TRANSPORT_TABLES, *tables]
    sealed = _sealed_forms(subject)
    for name in dict.fromkeys(names):
        try:
            rows = await store.read_table(name)
        except (ReadModelError, ConfigurationError):  # never created here: nothing in it
            continue
        report.searched.append(f"table {name}")
        for row in rows:
            blob = repr(row).encode() + msgspec.json.encode(_plain(row))
            _check_blob(blob, f"table {name}", needles, sealed, readable, report)
    if snapshots:
        await _scan_snapshots(store, needles, sealed, readable, report)
    if store.archive is not None:  # its segments decompressed (events, indexes, id tables)
        report.searched.append("archive")
        forms = {form.decode("utf-8", "backslashreplace"): c for c, form in needles}
        for segment, found in await store.archive.scan([form for _, form in needles]):
            report.hits.append(Hit(f"archive segment {segment}", f"canary {forms[found]!r}"))
    if sqlite_file is not None:
        _scan_sqlite(sqlite_file, needles, report)
    for path in files:
        _scan_file(path, needles, report)
    return report


def _sealed_forms(subject: str) -> list[bytes]:
    """How an envelope of ``subject`` starts in stored bytes: as JSON, and as JSON inside a JSON
    string (a message body or row that carries a payload as text)."""
    head = msgspec.json.encode({"$enc": "v1", "s": subject})[:-1]
    return [head, msgspec.json.encode(head.decode())[1:-1]]


def _check_blob(
    blob: bytes,
    where: str,
    needles: list[tuple[str, bytes]],
    sealed: list[bytes],
    readable: bool,
    report: VerifyReport,
) -> None:
    for c in _find(blob, needles):
        report.hits.append(Hit(where, f"canary {c!r}"))
    if readable:
        count = sum(blob.count(form) for form in sealed)
        if count:
            what = f"{count} envelope(s) of the subject still open: its key exists"
            report.hits.append(Hit(where, what))


async def _scan_snapshots(
    store: EventStore,
    needles: list[tuple[str, bytes]],
    sealed: list[bytes],
    readable: bool,
    report: VerifyReport,
) -> None:
    """Every stream's snapshot (chronik's own streams have none)."""
    report.searched.append("snapshots")
    async for info in store.list_streams():
        if info.stream.domain.startswith("chronik."):
            continue
        snap = await store.load_snapshot(info.stream)
        if snap is not None:
            _check_blob(snap.state, f"snapshot {info.stream}", needles, sealed, readable, report)


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
