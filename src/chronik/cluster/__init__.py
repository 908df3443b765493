"""Cluster membership: which chronik nodes run, where to reach them, what they run.

``Membership`` registers this node with a heartbeat lease and watches the others;
``read_view`` / ``members`` read the membership from any process (``chronik cluster
status``, ``GET /v1/cluster``, the admin UI's Cluster page). The member record and the live
set's digest are what command routing by aggregate affinity builds on.

Modules: ``member`` (the records and the view), ``backend`` (the ``MembershipBackend`` port),
``store_backend`` (its reference adapter on the store's leases and tables), ``nats_backend``
(``NatsMembershipBackend``: a JetStream KV bucket, for deployments with a NATS transport;
needs the ``nats`` extra, so it is imported by path, never from here), ``membership``
(the node's lifecycle and watcher), ``config`` (the ``cluster`` config section), ``parts``
(what a ``chronik serve`` node runs), ``ring`` (the consistent-hash ring of command routing by
aggregate affinity: ``HashRing``, ``key_of``). May import chronik's errors, the store and health;
never projections, the server or the CLI (it sees their objects only through callables).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chronik.cluster.backend import MembershipBackend
from chronik.cluster.config import ClusterConfig
from chronik.cluster.member import Member, MemberInfo, MembershipView, live_digest
from chronik.cluster.membership import Membership, read_view
from chronik.cluster.ring import HashRing, key_of
from chronik.cluster.store_backend import StoreMembershipBackend

if TYPE_CHECKING:
    from chronik.store.base import EventStore

__all__ = [
    "ClusterConfig",
    "HashRing",
    "Member",
    "MemberInfo",
    "Membership",
    "MembershipBackend",
    "MembershipView",
    "StoreMembershipBackend",
    "key_of",
    "live_digest",
    "members",
    "read_view",
]


async def members(
    target: EventStore | MembershipBackend,
    *,
    forget_after: float = 300.0,
) -> list[Member]:
    """The members of a store (or a MembershipBackend): live ones and those gone for at most
    ``forget_after`` seconds, ``alive`` judged by the database clock, in node id order."""
    view = await read_view(target, forget_after=forget_after)
    return list(view.members)
