"""Reading an export's lines into batches of runs: what the importer commits as one unit.

A run is a stretch of consecutive lines of one stream with consecutive sequences (at most the
store's ``max_append_events``): one append, expecting the stream at the sequence before its
first event. A deletion event (``chronik.stream_deleted``) is a run of its own, imported as the
delete it records; the run after a soft delete expects the stream empty (as it reads). A
batch is a few hundred events of runs in file order: one unit of work. Memory stays bounded
by one batch whatever the size of the file.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Final

import msgspec

from chronik.errors import ValidationError
from chronik.lifecycle.format import (
    EventLine,
    Header,
    InvalidExport,
    decode_end,
    decode_event,
    decode_header,
    decode_retention,
    event_data,
    is_end,
    is_retention,
)
from chronik.messages import NO_STREAM, Expected, StreamId
from chronik.store.base import AppendRequest, EventStore, PreparedEvent
from chronik.store.deletion import STREAM_DELETED
from chronik.store.retention import Retention
from chronik.store.validation import prepare_event

__all__ = ["BATCH_BYTES", "BATCH_EVENTS", "Lines", "Reader", "Run", "numbered"]

#: A batch (one unit of work) holds at most this many events ...
BATCH_EVENTS: Final = 500
#: ... and at most about this many payload bytes.
BATCH_BYTES: Final = 4 * 1024 * 1024

Lines = Iterable[bytes | str] | AsyncIterable[bytes | str]


class _Deletion(msgspec.Struct):
    hard: bool


_deletion: Final = msgspec.json.Decoder(_Deletion)


def deletion_hard(event: PreparedEvent) -> bool | None:
    """Whether a deletion event is a hard delete (None: not a deletion event), as
    ``chronik.store.deletion.deletion_of`` reads it."""
    if event.type != STREAM_DELETED:
        return None
    try:
        return _deletion.decode(event.payload).hard
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


@dataclass(slots=True)
class Run:
    """Consecutive events of one stream, from sequence ``first``; ``lines`` are their lines."""

    stream: StreamId
    first: int
    events: list[PreparedEvent] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    #: None: ordinary events; else the run is one deletion event, a soft (False) or hard delete
    deletion: bool | None = None
    #: the run follows a soft delete of its stream: the stream reads empty before it
    fresh: bool = False

    @property
    def last(self) -> int:
        """The sequence of the run's last event."""
        return self.first + len(self.events) - 1

    def expected(self, skip: int = 0) -> Expected:
        """The expectation of an append of the run's events after the first ``skip``."""
        start = self.first + skip
        return NO_STREAM if start == 0 or (skip == 0 and self.fresh) else start - 1

    def request(self, skip: int = 0) -> AppendRequest:
        """The append of the run's events after the first ``skip``."""
        return AppendRequest(self.stream, self.events[skip:], self.expected(skip))


async def numbered(lines: Lines) -> AsyncIterator[tuple[int, bytes]]:
    """Each line as bytes with its 1-based number."""
    number = 0
    if isinstance(lines, AsyncIterable):
        async for line in lines:
            number += 1
            yield number, line.encode() if isinstance(line, str) else line
    else:
        for line in lines:
            number += 1
            yield number, line.encode() if isinstance(line, str) else line


class Reader:
    """Turns an export's lines into batches of runs, checking each line on the way."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.header: Header | None = None
        self.events = 0  # event lines read
        self.end_events: int | None = None  # what the end line says, once read
        self.streams = 0  # streams that begin in the file (their sequence 0 is in it)
        #: retention lines read and not yet taken: (line, stream, rules)
        self.retention: list[tuple[int, StreamId, Retention]] = []
        self._emptied: dict[StreamId, int] = {}  # soft-deleted streams: the next sequence
        self._rules_seen = False

    async def batches(self, lines: Lines) -> AsyncIterator[list[Run]]:
        """Batches of runs, in file order; InvalidExport names the first bad line."""
        runs: list[Run] = []
        ids: set[str] = set()
        size = 0
        limit = self.store.max_append_events
        async for number, data in numbered(lines):
            if number == 1:
                self.header = decode_header(data)
                continue
            if not data.strip():
                continue
            if self.end_events is not None:
                raise InvalidExport(number, "a line after the end line")
            if is_end(data):
                self.end_events = decode_end(number, data).chronik_export_end.events
                if self.end_events != self.events:
                    raise InvalidExport(
                        number,
                        f"the end line says {self.end_events} events, the file holds {self.events}",
                        field="events",
                    )
                continue
            if is_retention(data):
                if runs and self.retention == []:
                    yield runs  # the events before the rules: committed first
                    runs, ids, size = [], set(), 0
                self._rules_seen = True
                stream, rules = decode_retention(number, data)
                self.retention.append((number, stream, rules))
                if len(self.retention) >= BATCH_EVENTS:
                    yield []
                continue
            line = self._event(number, data)
            stream, prepared = self._prepare(number, line)
            if prepared.event_id in ids:
                raise InvalidExport(
                    number, f"event id {prepared.event_id} appears twice", field="event_id"
                )
            self.events += 1
            self._count_stream(stream, line.sequence)
            if self._rules_seen:
                raise InvalidExport(number, "an event after the retention lines")
            deletion = deletion_hard(prepared)
            last = runs[-1] if runs else None
            if (
                deletion is None
                and last is not None
                and last.deletion is None
                and last.stream == stream
                and last.last + 1 == line.sequence
                and len(last.events) < limit
            ):
                run = last
            else:
                run = Run(stream, line.sequence, deletion=deletion)
                run.fresh = self._emptied.pop(stream, None) == line.sequence
                if deletion is False:
                    self._emptied[stream] = line.sequence + 1
                runs.append(run)
            run.events.append(prepared)
            run.lines.append(number)
            ids.add(prepared.event_id)
            size += len(prepared.payload)
            if len(ids) >= BATCH_EVENTS or size >= BATCH_BYTES:
                yield runs
                runs, ids, size = [], set(), 0
        if self.header is None:
            raise InvalidExport(1, "the input is empty: not a chronik export")
        if runs or self.retention:
            yield runs

    def take_retention(self) -> list[tuple[int, StreamId, Retention]]:
        """The retention lines read since the last call."""
        taken, self.retention = self.retention, []
        return taken

    @staticmethod
    def _event(number: int, data: bytes) -> EventLine:
        try:
            return decode_event(number, data)
        except InvalidExport:
            if not data.endswith(b"\n"):
                raise InvalidExport(
                    number, "the file ends in the middle of this line: it was cut short"
                ) from None
            raise

    def _prepare(self, number: int, line: EventLine) -> tuple[StreamId, PreparedEvent]:
        stream, event = event_data(number, line)
        try:
            return stream, prepare_event(event, self.store.max_payload_bytes)
        except ValidationError as exc:
            raise InvalidExport(number, str(exc), field=exc.field) from None

    def _count_stream(self, stream: StreamId, sequence: int) -> None:
        if sequence == 0:  # the stream begins in the file: counted once, memory stays flat
            self.streams += 1
