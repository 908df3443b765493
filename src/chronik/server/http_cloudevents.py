"""The CloudEvents receiver route of ``chronik serve``: ``POST /v1/cloudevents[/{topic}]``.

Mounted only when the configuration enables it (``cloudevents.receiver: true``; absent, the
paths answer 404). Binary and structured (JSON) mode; the topic is the path's ``{topic}`` or
else the CloudEvent ``type``. With auth configured the request needs the ``append`` right (an
API key with ``append: true``, or a JWT with the ``append`` scope): events enter without
business logic in between, as raw appends do. The body is bounded by ``http.max_body_bytes``
(413). Answers: 202 once the event is durable on the server's transport (see
``chronik.transports.cloudevents_receiver``), 400 naming the attribute (``field``) for a bad
event or a topic no consumer here subscribes to, 403 to a tenant-scoped credential (only an
operator's, tenant ``*``, may send: the messages carry no tenant), 503 while the consumers are
not started yet or the transport is down (the sender retries with the same id).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chronik.server.http_state import guarded, read_body
from chronik.transports.cloudevents_receiver import CloudEventsReceiver

__all__ = ["cloudevents_routes"]


def cloudevents_routes(receiver: CloudEventsReceiver) -> list[Route]:
    """The receiver's two routes (append right with auth), to pass as ``extra_routes``."""

    async def receive(request: Request) -> Response:
        body = await read_body(request)
        topic = request.path_params.get("topic")
        message = await receiver.accept(request.headers, body, topic)
        return JSONResponse({"id": message.id, "topic": message.topic}, status_code=202)

    handler = guarded(receive, "append", operator=True)  # messages carry no tenant
    return [
        Route("/v1/cloudevents", handler, methods=["POST"]),
        Route("/v1/cloudevents/{topic}", handler, methods=["POST"]),
    ]
