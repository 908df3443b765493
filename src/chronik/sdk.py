"""Write business logic as a gRPC service, and call a chronik server, in a few lines of Python.

A service: the same Decider or Aggregate class you would run in-process::

    server, port = await chronik.sdk.serve_business_logic(customer, registry, "127.0.0.1:50061")

A client::

    async with chronik.sdk.Client("127.0.0.1:50051") as client:
        result = await client.dispatch(chronik.Command(domain="customer", ...))

Over TLS (``tls=ClientTLS(ca="ca.pem")``; with ``cert=`` and ``key=`` for mutual TLS)::

    async with chronik.sdk.Client("node-1:50051", tls=chronik.sdk.ClientTLS(ca="ca.pem")) as c:
        ...

Needs the ``grpc`` extra.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
import msgspec

from chronik.aggregate import Aggregate, AggregateModel, DomainModel
from chronik.client import Client, RemoteSubscription, error_from_status
from chronik.client_tls import ClientTLS
from chronik.codec import EventRegistry
from chronik.errors import ChronikError, CommandRejected
from chronik.messages import Snapshot
from chronik.server.grpc_edge import EdgeInterceptor, bind_error, report_bug, status_for
from chronik.server.remote import channel_options
from chronik.server.wire import command_from_wire, error_trailers, event_from_wire
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc

__all__ = [
    "BusinessLogicService",
    "Client",
    "ClientTLS",
    "RemoteSubscription",
    "error_from_status",
    "serve_business_logic",
]

log = logging.getLogger("chronik.sdk")


class BusinessLogicService(rpc.BusinessLogicServicer):
    """Serves a DomainModel (Decider or Aggregate class) as chronik's BusinessLogic service."""

    def __init__(self, model: DomainModel | type[Aggregate], registry: EventRegistry) -> None:
        if isinstance(model, type) and issubclass(model, Aggregate):
            model = AggregateModel(model)
        self.model = model
        self.registry = registry

    async def Handle(
        self, request: pb.ContextualCommand, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.BusinessResponse:
        model, registry = self.model, self.registry
        try:
            command = model.parse(command_from_wire(request.command))
            stream = command.stream
            state = model.initial(stream.aggregate_id)
            snap_seq: int | None = None
            if request.HasField("snapshot"):
                s = request.snapshot
                if (s.type, s.schema_version) == (model.state_type, model.state_version):
                    state = model.decode_state(
                        Snapshot(stream, s.sequence, s.type, s.schema_version, s.state)
                    )
                    snap_seq = s.sequence
            for event in request.events:
                state = model.evolve(state, registry.decode(event_from_wire(event)))
            events = model.decide(command, state)
            state = model.settle(state, events)
            response = pb.BusinessResponse(
                events=[
                    pb.NewEvent(
                        type=registry.name_of(e),
                        payload=msgspec.json.encode(e),
                        schema_version=registry.version_of(registry.name_of(e)),
                    )
                    for e in events
                ]
            )
        except CommandRejected as exc:
            return pb.BusinessResponse(rejection=exc.reason)
        except Exception as exc:
            await _abort(context, exc)
            raise  # pragma: no cover - abort raises
        policy = model.snapshots
        version = request.version + len(events)
        if events and policy is not None and policy.every is not None:
            base = -1 if snap_seq is None else snap_seq
            if version - base >= policy.every:
                response.snapshot.CopyFrom(
                    pb.Snapshot(
                        type=model.state_type,
                        schema_version=model.state_version,
                        state=model.encode_state(state),
                    )
                )
        return response


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    if not isinstance(exc, ChronikError):
        report_bug(exc, "business logic")
    if isinstance(exc, ChronikError):
        context.set_trailing_metadata(error_trailers(exc))
    await context.abort(status_for(exc), str(exc) if isinstance(exc, ChronikError) else repr(exc))


async def serve_business_logic(
    model: DomainModel | type[Aggregate],
    registry: EventRegistry,
    address: str = "127.0.0.1:0",
) -> tuple[grpc.aio.Server, int]:
    """Start a BusinessLogic server for ``model``; returns it and its port (stop it when done).

    A malformed request is INVALID_ARGUMENT; PortInUse if another process holds the port.
    """
    options: list[tuple[str, Any]] = [*channel_options(), ("grpc.so_reuseport", 0)]
    server = grpc.aio.server(interceptors=[EdgeInterceptor()], options=options)
    rpc.add_BusinessLogicServicer_to_server(BusinessLogicService(model, registry), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:  # grpcio >= 1.50 raises where older versions returned 0
        port = 0
    if not port:
        host, _, number = address.rpartition(":")
        raise bind_error("business logic gRPC", host, int(number) if number.isdigit() else 0)
    await server.start()
    return server, port
