"""Tracing and logs: OpenTelemetry spans from command to append to projection and saga (extra
``otel``), with the trace context carried in event metadata (``traceparent``); JSON logs.

    chronik.observability.trace_commands(app)        # a span per dispatch
    projection = chronik.observability.trace_projection(projection)   # a span per event handled

A projection's span is a child of the command span that appended the event, and commands a
saga sends from it continue the same trace.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from chronik.errors import MissingExtraError
from chronik.messages import Command, RecordedEvent

if TYPE_CHECKING:
    from chronik.app import Chronik
    from chronik.commands import CommandResult
    from chronik.projections import Projection, ReadModel

__all__ = ["JsonFormatter", "event_span", "trace_commands", "trace_projection"]

_TRACE_KEYS = ("traceparent", "tracestate")


def _otel() -> Any:
    try:
        import opentelemetry.propagate
        import opentelemetry.trace
    except ImportError:
        raise MissingExtraError("otel", "opentelemetry-api") from None
    return opentelemetry


def trace_commands(app: Chronik, tracer_provider: Any = None) -> None:
    """Open a span around every dispatch and carry its context into the events' metadata."""
    otel = _otel()
    tracer = otel.trace.get_tracer("chronik", tracer_provider=tracer_provider)

    async def traced(command: Command, call_next: Any) -> CommandResult:
        carrier = dict(command.metadata or {})
        # the caller's context if the command carries one, else the current one (e.g. a saga's)
        parent = otel.propagate.extract(carrier) if "traceparent" in carrier else None
        name = f"chronik.command {command.domain}/{command.type}"
        with tracer.start_as_current_span(
            name, context=parent, kind=otel.trace.SpanKind.SERVER
        ) as span:
            span.set_attribute("chronik.domain", command.domain)
            span.set_attribute("chronik.aggregate_id", command.aggregate_id)
            span.set_attribute("chronik.command_type", command.type)
            metadata = {k: v for k, v in carrier.items() if k not in _TRACE_KEYS}
            otel.propagate.inject(metadata)
            result: CommandResult = await call_next(
                msgspec.structs.replace(command, metadata=metadata)
            )
            span.set_attribute("chronik.events", len(result.events))
            return result

    app.use(traced)


@contextlib.contextmanager
def event_span(name: str, event: RecordedEvent, tracer_provider: Any = None) -> Iterator[Any]:
    """A span for handling ``event``: a child of the span that appended it."""
    otel = _otel()
    tracer = otel.trace.get_tracer("chronik", tracer_provider=tracer_provider)
    parent = otel.propagate.extract(dict(event.metadata))
    with tracer.start_as_current_span(
        name, context=parent, kind=otel.trace.SpanKind.CONSUMER
    ) as span:
        span.set_attribute("chronik.event_id", event.event_id)
        span.set_attribute("chronik.event_type", event.type)
        span.set_attribute("chronik.stream", str(event.stream))
        span.set_attribute("chronik.position", str(event.position))
        yield span


def trace_projection(projection: Projection, tracer_provider: Any = None) -> Projection:
    """Wrap every handler of ``projection`` in an ``event_span``; returns the projection."""
    _otel()
    name = f"chronik.project {projection.name}"
    for event_type, (fn, is_async) in list(projection.handlers.items()):

        async def handler(
            event: RecordedEvent, rm: ReadModel, fn: Any = fn, a: bool = is_async
        ) -> None:
            with event_span(name, event, tracer_provider):
                result = fn(event, rm)
                if a:
                    await result

        projection.handlers[event_type] = (handler, True)
    return projection


class JsonFormatter(logging.Formatter):
    """One JSON object per log record (time, level, logger, message, exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)
