"""The calls of ``chronik.sdk.Client`` beyond commands and events: the schema catalog
(``describe``), the stream listing (``list_streams``) and projection administration
(``projections``, ``projection``, ``dead_letters``, ``pause``, ``resume``, ``reset``,
``rebuild``, ``retry_dead_letters``, ``drop_dead_letters``).

Reads are retried on UNAVAILABLE like every idempotent call; the projection actions are sent
once (a retried rebuild after an unknown outcome could queue a second one). The actions need
the ``admin`` right, and a server without auth refuses them unless ``grpc.admin_writes`` is
on (``AdminWritesDisabled``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from chronik.client_channel import ClientChannel
from chronik.messages import Position, StreamId, StreamInfo
from chronik.projections import DeadLetter, ProjectionStatus
from chronik.v1 import chronik_pb2 as pb

__all__ = ["AdminCalls", "dead_letter_from_wire", "status_from_wire"]


def _opt(message: Any, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def status_from_wire(s: pb.ProjectionStatus) -> ProjectionStatus:
    """A projection status as ``ProjectionAdmin.statuses`` gives it, from the wire."""
    return ProjectionStatus(
        name=s.name,
        state=s.state,
        version=s.version,
        generation=s.generation,
        building=_opt(s, "building"),
        position=_opt(s, "position"),
        build_position=_opt(s, "build_position"),
        head=_opt(s, "head"),
        lag_events=s.lag_events,
        lag_seconds=s.lag_seconds,
        events_per_s=s.events_per_s,
        processed=s.processed,
        last_error=_opt(s, "last_error"),
        heartbeat=_opt(s, "heartbeat"),
        alive=s.alive,
        owner=_opt(s, "owner"),
        dead_letters=s.dead_letters,
        horizon_events=s.horizon_events,
        horizon_seconds=s.horizon_seconds,
    )


def dead_letter_from_wire(d: pb.DeadLetter) -> DeadLetter:
    """A parked event as ``ProjectionAdmin.dead_letters`` gives it, from the wire."""
    return DeadLetter(
        d.projection,
        d.event_id,
        d.generation,
        d.position,
        d.stream,
        d.sequence,
        d.type,
        _opt(d, "error"),
        d.attempts,
        d.blocked,
        d.parked_at,
    )


class AdminCalls(ClientChannel):
    """The catalog, stream listing and projection calls of ``Client`` (over the channel,
    stubs and call loops of ``chronik.client_channel.ClientChannel``)."""

    async def describe(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> dict[str, Any]:
        """What the server accepts (Catalog.Describe): each domain's command types and every
        registered event type with its JSON Schema, as ``GET /v1/schemas`` answers it
        (``{"domains": [...], "events": [...]}``)."""
        request = pb.DescribeRequest()
        reply: pb.DescribeResponse = await self._unary(
            lambda left: self._catalog.Describe(request, timeout=left, metadata=self._metadata),
            timeout,
        )
        return {
            "domains": [
                {
                    "domain": d.domain,
                    "logic": d.logic,
                    "open": d.open,
                    "note": d.note,
                    "commands": [
                        {"type": c.type, "schema": json.loads(c.json_schema)} for c in d.commands
                    ],
                    "events": list(d.events),
                }
                for d in reply.domains
            ],
            "events": [
                {
                    "type": e.type,
                    "schema_version": e.schema_version,
                    "aliases": list(e.aliases),
                    "schema": json.loads(e.json_schema),
                    "domains": list(e.domains),
                    "versions": [
                        {
                            "version": v.version,
                            "current": v.current,
                            "upcaster": v.upcaster if v.HasField("upcaster") else None,
                            "readable": v.readable,
                        }
                        for v in e.versions
                    ],
                }
                for e in reply.events
            ],
        }

    async def list_streams(
        self,
        domain: str | None = None,
        *,
        prefix: str | None = None,
        tenant: str | None = None,
        limit: int | None = None,
        page_size: int = 100,
        timeout: float | None = None,  # noqa: ASYNC109 - each page's gRPC deadline
    ) -> AsyncIterator[StreamInfo]:
        """Streams with their versions, oldest first (EventStore.ListStreams), of ``domain``,
        whose aggregate id starts with ``prefix``, of ``tenant`` (None: every tenant), at most
        ``limit``; fetched ``page_size`` at a time, following the server's cursor."""
        cursor = ""
        left = limit
        while left is None or left > 0:
            request = pb.ListStreamsRequest(
                domain=domain or "",
                prefix=prefix or "",
                limit=page_size if left is None else min(page_size, left),
                cursor=cursor,
            )
            if tenant is not None:
                request.tenant = tenant
            reply = await self._page(request, timeout)
            for s in reply.streams:
                yield StreamInfo(StreamId(s.domain, s.aggregate_id, s.tenant), s.version)
            if left is not None:
                left -= len(reply.streams)
            if not reply.next_cursor:
                return
            cursor = reply.next_cursor

    async def _page(
        self,
        request: pb.ListStreamsRequest,
        timeout: float | None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> pb.ListStreamsResponse:
        reply: pb.ListStreamsResponse = await self._unary(
            lambda left: self._events.ListStreams(request, timeout=left, metadata=self._metadata),
            timeout,
        )
        return reply

    async def projections(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> list[ProjectionStatus]:
        """The status of every projection (Projections.List), as ``chronik projections
        status`` shows it."""
        request = pb.ListProjectionsRequest()
        reply: pb.ProjectionsResponse = await self._unary(
            lambda left: self._projections.List(request, timeout=left, metadata=self._metadata),
            timeout,
        )
        return [status_from_wire(s) for s in reply.projections]

    async def projection(
        self,
        name: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> list[ProjectionStatus]:
        """The status of one projection: one row, or one per partition of a partitioned one
        (``name/k``: that partition only). UnknownProjection if there is none."""
        request = pb.ProjectionRequest(name=name)
        reply: pb.ProjectionsResponse = await self._unary(
            lambda left: self._projections.Status(request, timeout=left, metadata=self._metadata),
            timeout,
        )
        return [status_from_wire(s) for s in reply.projections]

    async def dead_letters(
        self,
        name: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> list[DeadLetter]:
        """The events projection ``name`` parked, oldest first."""
        request = pb.ProjectionRequest(name=name)
        reply: pb.DeadLettersResponse = await self._unary(
            lambda left: self._projections.DeadLetters(
                request, timeout=left, metadata=self._metadata
            ),
            timeout,
        )
        return [dead_letter_from_wire(d) for d in reply.dead_letters]

    async def _act(
        self,
        method: str,
        request: Any,
        timeout: float | None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> Any:
        call = getattr(self._projections, method)
        return await self._unary(
            lambda left: call(request, timeout=left, metadata=self._metadata), timeout, once=True
        )

    async def pause(self, name: str, *, timeout: float | None = None) -> str:  # noqa: ASYNC109
        """Ask the processor of ``name`` to pause; returns the request id."""
        reply: pb.ActionResponse = await self._act(
            "Pause", pb.ProjectionRequest(name=name), timeout
        )
        return reply.request_id

    async def resume(self, name: str, *, timeout: float | None = None) -> str:  # noqa: ASYNC109
        """Ask the processor of ``name`` to resume; returns the request id."""
        reply: pb.ActionResponse = await self._act(
            "Resume", pb.ProjectionRequest(name=name), timeout
        )
        return reply.request_id

    async def rebuild(self, name: str, *, timeout: float | None = None) -> str:  # noqa: ASYNC109
        """Ask for a rebuild of ``name`` from the start (into new tables, served once caught
        up); returns the request id. ReplayRefused if it would repeat effects."""
        reply: pb.ActionResponse = await self._act(
            "Rebuild", pb.ProjectionRequest(name=name), timeout
        )
        return reply.request_id

    async def reset(
        self,
        name: str,
        to: Position | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> str:
        """Ask for a reset of ``name`` to the start, or to continue after ``to``; returns the
        request id. ReplayRefused if it would repeat effects."""
        request = pb.ResetRequest(name=name, to="" if to is None else str(to))
        reply: pb.ActionResponse = await self._act("Reset", request, timeout)
        return reply.request_id

    async def retry_dead_letters(
        self,
        name: str,
        event_id: str | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> str:
        """Ask the processor of ``name`` to retry its parked events (or the one ``event_id``);
        returns the request id."""
        request = pb.DeadLetterRequest(name=name, event_id=event_id or "")
        reply: pb.ActionResponse = await self._act("Retry", request, timeout)
        return reply.request_id

    async def drop_dead_letters(
        self,
        name: str,
        event_id: str | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> int:
        """Drop the parked events of ``name`` (or the one ``event_id``): they are never
        applied. Returns how many were dropped."""
        request = pb.DeadLetterRequest(name=name, event_id=event_id or "")
        reply: pb.DropResponse = await self._act("Drop", request, timeout)
        return reply.dropped
