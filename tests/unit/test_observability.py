"""Tracing from command to projection to saga, carried in event metadata; JSON logs."""

from __future__ import annotations

import asyncio
import json
import logging

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import chronik
from chronik.observability import JsonFormatter, trace_commands, trace_projection
from chronik.projections import ProjectionRunner
from examples.shop.app import build_app, projections

ITEMS = [{"sku": "book", "price_cents": 1500, "qty": 2}]


def cmd(domain: str, aggregate_id: str, type_: str, **payload: object) -> chronik.Command:
    return chronik.Command(domain=domain, aggregate_id=aggregate_id, type=type_, payload=payload)


async def test_one_trace_from_command_through_projection_and_saga() -> None:
    """The saga's span is a child of the command span, and the points command continues it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with build_app("memory://") as app:
        trace_commands(app, provider)
        procs = [trace_projection(p, provider) for p in projections(app)]
        async with ProjectionRunner(app.store, procs):
            await app.dispatch(cmd("customer", "c1", "CreateCustomer", name="Ada", email="a@x"))
            await app.dispatch(
                cmd("transaction", "t1", "CreateTransaction", customer_id="c1", items=ITEMS)
            )
            done = await app.dispatch(cmd("transaction", "t1", "CompleteTransaction"))
            assert "traceparent" in done.events[0].metadata
            async with asyncio.timeout(10):
                while (await app.load("customer", "c1")).points != 30:
                    await asyncio.sleep(0.01)
    spans = exporter.get_finished_spans()
    by_name = {s.name: s for s in spans}
    complete = by_name["chronik.command transaction/CompleteTransaction"]
    saga = next(s for s in spans if s.name == "chronik.project loyalty")
    points = by_name["chronik.command customer/AddLoyaltyPoints"]
    assert saga.parent is not None and saga.parent.span_id == complete.context.span_id
    assert points.parent is not None and points.parent.span_id == saga.context.span_id
    assert complete.context.trace_id == saga.context.trace_id == points.context.trace_id
    assert points.attributes is not None and points.attributes["chronik.events"] == 1


def test_json_log_lines() -> None:
    """JsonFormatter writes one parseable object per record, with the exception if any."""
    record = logging.LogRecord("chronik.test", logging.ERROR, __file__, 1, "boom %s", ("x",), None)
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "error" and line["logger"] == "chronik.test"
    assert line["message"] == "boom x" and "ValueError: bad" in line["exception"]
