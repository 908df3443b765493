"""The admin UI's Cluster page: every member of the store's cluster, live and recently gone
(id, addresses, version, state and last seen, load, parts), with the live set's digest.

A module-level handler ``handler(state, request)`` over an ``AdminState``; it reads the
membership from the store (``chronik.cluster.read_view``), so the page works on any node,
whether or not it runs a Membership itself; a node that runs one reads through it
(``chronik.server.cluster.membership_of``), so a NATS KV membership shows too. Imports
``state``, never ``routes``.
"""

from __future__ import annotations

import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from chronik.cluster import Member, read_view
from chronik.server.admin.state import AdminState, render
from chronik.server.cluster import membership_of

__all__ = ["cluster"]


def _row(m: Member, at: float) -> dict[str, Any]:
    seen = datetime.datetime.fromtimestamp(m.last_seen, datetime.UTC)
    return {
        "m": m,
        "seen": f"{seen:%Y-%m-%d %H:%M:%S}",
        "ago": f"{max(0.0, at - m.last_seen):.1f}",
        "load": " ".join(f"{k}={v:g}" for k, v in sorted(m.load.items())),
    }


async def cluster(state: AdminState, request: Request) -> Response:
    """``GET /admin/cluster``: the cluster's members."""
    membership = membership_of(state.app)
    view = await (read_view(state.store) if membership is None else membership.view())
    return render(
        state,
        request,
        "cluster.html",
        page="cluster",
        view=view,
        rows=[_row(m, view.at) for m in view.members],
    )
