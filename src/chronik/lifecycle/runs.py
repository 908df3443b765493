"""Reading an export's lines into batches of runs: what the importer commits as one unit.

A run is a stretch of consecutive lines of one stream with consecutive sequences (at most the
store's ``max_append_events``): one append, expecting the stream at the sequence before its
first event. A batch is a few hundred events of runs in file order: one unit of work. Memory
stays bounded by one batch whatever the size of the file.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Final

from chronik.errors import ValidationError
from chronik.lifecycle.format import (
    EventLine,
    Header,
    InvalidExport,
    decode_end,
    decode_event,
    decode_header,
    event_data,
    is_end,
)
from chronik.messages import NO_STREAM, Expected, StreamId
from chronik.store.base import AppendRequest, EventStore, PreparedEvent
from chronik.store.validation import prepare_event

__all__ = ["BATCH_BYTES", "BATCH_EVENTS", "Lines", "Reader", "Run", "numbered"]

#: A batch (one unit of work) holds at most this many events ...
BATCH_EVENTS: Final = 500
#: ... and at most about this many payload bytes.
BATCH_BYTES: Final = 4 * 1024 * 1024

Lines = Iterable[bytes | str] | AsyncIterable[bytes | str]


@dataclass(slots=True)
class Run:
    """Consecutive events of one stream, from sequence ``first``; ``lines`` are their lines."""

    stream: StreamId
    first: int
    events: list[PreparedEvent] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    @property
    def last(self) -> int:
        """The sequence of the run's last event."""
        return self.first + len(self.events) - 1

    def expected(self, skip: int = 0) -> Expected:
        """The expectation of an append of the run's events after the first ``skip``."""
        start = self.first + skip
        return NO_STREAM if start == 0 else start - 1

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
            line = self._event(number, data)
            stream, prepared = self._prepare(number, line)
            if prepared.event_id in ids:
                raise InvalidExport(
                    number, f"event id {prepared.event_id} appears twice", field="event_id"
                )
            self.events += 1
            self._count_stream(stream, line.sequence)
            last = runs[-1] if runs else None
            if (
                last is not None
                and last.stream == stream
                and last.last + 1 == line.sequence
                and len(last.events) < limit
            ):
                run = last
            else:
                run = Run(stream, line.sequence)
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
        if runs:
            yield runs

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
