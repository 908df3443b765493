"""``GET /v1/cluster``: the cluster's members as this node sees them (the read right).

On a node that runs a Membership the answer is its view (its epoch counts the changes this
node saw); elsewhere a one-off read of the store's members (epoch 0). Imports the HTTP state
and the cluster package.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chronik.cluster import Membership, read_view
from chronik.server.http_state import guarded, state_of

__all__ = ["cluster_routes"]


def cluster_routes(membership: Membership | None = None) -> list[Route]:
    """The ``/v1/cluster`` route, answered from ``membership`` when the node runs one."""

    async def cluster(request: Request) -> Response:
        """``GET /v1/cluster``: node id, epoch, digest and every member."""
        if membership is not None:
            view = await membership.view()
            node: str | None = membership.node_id
        else:
            view = await read_view(state_of(request).store)
            node = None
        return JSONResponse({"node_id": node, **view.to_json()})

    return [Route("/v1/cluster", guarded(cluster, "read"))]
