"""Command routing by aggregate affinity: a node forwards a command to the live member that
owns its aggregate, which keeps that aggregate's state hot in its cache.

``CommandRouter`` is a dispatch middleware of the app (so the gRPC gateway, ``POST
/v1/commands`` and every other dispatch of ``chronik serve`` go through it). For each command:

- the owner is ``HashRing.owner(key_of(tenant, domain, aggregate_id))`` over the live members
  of the node's current membership view (``chronik.cluster.ring``), rebuilt when its digest
  changes; the owner being this node (or no other live member) means: handle it here;
- a command another node forwarded (``chronik-forwarded-by`` metadata, ``routing.incoming``)
  is handled here whatever the ring says: one hop, never more;
- otherwise it is sent once to the owner's advertised gRPC address (one channel per member,
  kept, closed when the member leaves the live set) with the caller's remaining deadline, the
  same command id (given one first if it had none, so a retry anywhere is deduplicated) and the
  cluster's credentials (``chronik-cluster-secret``); the owner's answer comes back as it is:
  its result, or its error rebuilt with its class and fields (same status on the wire);
- an owner that cannot be reached (no connection within ``connect_timeout``, 1 s: gone, or
  holding its port without answering; or the call ends UNAVAILABLE, or CANCELLED while it
  stops) is skipped: the command is handled here and counted as a fallback. Optimistic
  concurrency and the command id keep that safe while ownership moves: nothing is lost,
  nothing applied twice.

Mutual TLS between nodes: when the node serves gRPC over TLS, it calls the others with its
own certificate (``TlsConfig.as_client``: the certificate needs clientAuth too) trusting its
``client_ca``. With auth configured every node needs the same ``cluster.secret``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import grpc
import msgspec

from chronik.client_stream import error_from_status
from chronik.cluster.member import Member
from chronik.cluster.ring import DEFAULT_VNODES, HashRing, key_of
from chronik.commands import CommandResult, Dispatch
from chronik.errors import AuthenticationError, ConfigurationError, ServiceUnavailable
from chronik.ids import new_event_id
from chronik.messages import Command
from chronik.server.grpc_edge import LogLimiter
from chronik.server.remote import channel_options
from chronik.server.routing import RoutingStats, current_call, router_of, set_router
from chronik.server.wire import command_to_wire, event_from_wire
from chronik.v1 import chronik_pb2 as pb
from chronik.v1 import chronik_pb2_grpc as rpc

if TYPE_CHECKING:
    from chronik.app import Chronik
    from chronik.client_tls import ClientTLS
    from chronik.cluster.membership import Membership

__all__ = [
    "CLUSTER_SECRET_KEY",
    "CONNECT_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "FORWARDED_BY_KEY",
    "CommandRouter",
    "install_router",
]

log = logging.getLogger("chronik.cluster")
FORWARDED_BY_KEY: Final = "chronik-forwarded-by"
CLUSTER_SECRET_KEY: Final = "chronik-cluster-secret"
DEFAULT_TIMEOUT: Final = 30.0  # seconds a forwarded call gets when its caller set no deadline
CONNECT_TIMEOUT: Final = 1.0  # seconds to wait for a connection to the owner before skipping it
_FALLBACK: Final = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


@dataclass(slots=True)
class _Peer:
    """One channel to another member, and the stub over it."""

    address: str
    channel: grpc.aio.Channel
    gateway: Any


class CommandRouter:
    """Forwards each command to the owner of its aggregate (see the module docstring)."""

    def __init__(
        self,
        membership: Membership,
        *,
        tls: ClientTLS | None = None,
        secret: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        vnodes: int = DEFAULT_VNODES,
    ) -> None:
        for name, value in (("timeout", timeout), ("connect_timeout", connect_timeout)):
            if not value > 0:
                raise ConfigurationError(f"CommandRouter {name}: must be > 0, got {value!r}")
        self.connect_timeout = connect_timeout
        self.membership = membership
        self.node_id = membership.node_id
        self.tls = tls
        self.timeout = timeout
        self.vnodes = vnodes
        self.stats = RoutingStats()
        self._secret = secret
        self.has_secret = secret is not None
        self._metadata: tuple[tuple[str, str], ...] = ((FORWARDED_BY_KEY, self.node_id),)
        if secret is not None:
            self._metadata += ((CLUSTER_SECRET_KEY, secret),)
        self.ring = HashRing((), vnodes)
        self._digest: str | None = None
        self._members: dict[str, Member] = {}
        self._peers: dict[str, _Peer] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._logs = LogLimiter(every=10.0)
        self.closed = False

    # --- ownership ------------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Rebuild the ring when the live set changed; close the channels of gone members."""
        view = self.membership.current
        if view is None or view.digest == self._digest:
            return
        self.ring = HashRing.of_view(view, self.vnodes)
        self._members = {m.node_id: m for m in view.live if m.grpc}
        self._digest = view.digest
        for node_id, peer in list(self._peers.items()):
            member = self._members.get(node_id)
            if member is None or member.grpc != peer.address:
                del self._peers[node_id]
                self._close_later(peer)
        log.info(
            "cluster routing: %d live members (%s), view epoch %d",
            len(self.ring),
            ", ".join(self.ring.nodes) or "-",
            view.epoch,
        )

    def owner(self, command: Command) -> Member | None:
        """The other live member owning the command's aggregate (None: this node handles it)."""
        self._refresh()
        stream = command.stream  # validates tenant, domain and aggregate id
        node_id = self.ring.owner(key_of(stream.tenant, stream.domain, stream.aggregate_id))
        if node_id is None or node_id == self.node_id:
            return None
        return self._members.get(node_id)

    # --- the middleware -------------------------------------------------------------------------

    async def __call__(self, command: Command, call_next: Dispatch) -> CommandResult:
        call = current_call()
        if call is not None and call.forwarded:
            self.stats.received += 1
            return await call_next(command)
        owner = None if self.closed else self.owner(command)
        if owner is None:
            self.stats.local += 1
            return await call_next(command)
        if not command.command_id:  # the owner, a fallback and any retry share it
            command = msgspec.structs.replace(command, command_id=new_event_id())
        try:
            request = command_to_wire(command)
        except (TypeError, ValueError, msgspec.EncodeError):  # a payload JSON cannot carry:
            self.stats.local += 1  # the local bus refuses it with its typed error
            return await call_next(command)
        remaining = None if call is None else call.remaining()
        if remaining is not None and remaining <= 0:
            raise ServiceUnavailable("the call's deadline passed before the command was sent")
        peer = self._peer(owner)
        unready = await self._connect(peer, remaining)
        if unready is not None:  # nothing was sent: handle it here
            self.stats.fallbacks += 1
            self._log_fallback(owner, unready)
            return await call_next(command)
        try:
            response = await peer.gateway.Handle(
                request,
                timeout=self.timeout if remaining is None else remaining,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _FALLBACK:
                self.stats.forwarded += 1
                raise error_from_status(exc) from None
            self.stats.fallbacks += 1
            self._log_fallback(owner, f"{exc.code().name}: {exc.details()}")
            return await call_next(command)
        self.stats.forwarded += 1
        return _result(command, response)

    async def _connect(self, peer: _Peer, remaining: float | None) -> str | None:
        """None once the channel to the owner is ready; else why it is not (connecting failed,
        or took longer than ``connect_timeout``: an owner that holds its port but does not
        answer is skipped like one that is gone)."""
        channel = peer.channel
        state = channel.get_state(try_to_connect=True)
        if state is grpc.ChannelConnectivity.READY:
            return None
        wait = self.connect_timeout if remaining is None else min(self.connect_timeout, remaining)
        try:
            async with asyncio.timeout(wait):
                while state is not grpc.ChannelConnectivity.READY:
                    if state in (
                        grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                        grpc.ChannelConnectivity.SHUTDOWN,
                    ):
                        return f"cannot connect ({state.name.lower()})"
                    await channel.wait_for_state_change(state)
                    state = channel.get_state()
        except TimeoutError:
            return f"no connection within {wait:.3g} s"
        return None

    def _log_fallback(self, owner: Member, why: str) -> None:
        dropped = self._logs.allow(owner.node_id)
        if dropped is not None:
            more = f" ({dropped} more since)" if dropped else ""
            log.warning(
                "cluster routing: owner %s at %s unreachable (%s); handling here%s",
                owner.node_id,
                owner.grpc,
                why,
                more,
            )

    # --- channels -------------------------------------------------------------------------------

    def _peer(self, member: Member) -> _Peer:
        peer = self._peers.get(member.node_id)
        if peer is None:
            options: list[tuple[str, Any]] = [
                *channel_options(),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 1000),  # also the connect timeout
                ("grpc.max_reconnect_backoff_ms", 2000),
            ]
            if self.tls is None:
                channel = grpc.aio.insecure_channel(member.grpc, options=options)
            else:
                options += self.tls.channel_options()
                channel = grpc.aio.secure_channel(
                    member.grpc, self.tls.credentials(), options=options
                )
            stub = rpc.CommandGatewayStub(channel)
            peer = self._peers[member.node_id] = _Peer(member.grpc, channel, stub)
        return peer

    def _close_later(self, peer: _Peer) -> None:
        task = asyncio.get_running_loop().create_task(peer.channel.close(grace=1.0))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @property
    def channels(self) -> dict[str, str]:
        """The open channels: node id -> address."""
        return {node_id: peer.address for node_id, peer in self._peers.items()}

    async def close(self) -> None:
        """Close every channel; commands are handled here from now on."""
        self.closed = True
        peers, self._peers = list(self._peers.values()), {}
        for peer in peers:
            self._close_later(peer)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # --- the receiving side ---------------------------------------------------------------------

    def accept(self, metadata: Iterable[tuple[str, str | bytes]]) -> bool:
        """Whether the call carries a command another node forwarded; with a cluster secret
        configured, AuthenticationError unless the call presents it."""
        sender = presented = None
        for name, value in metadata:
            if name == FORWARDED_BY_KEY:
                sender = value.decode() if isinstance(value, bytes) else value
            elif name == CLUSTER_SECRET_KEY:
                presented = value.encode() if isinstance(value, str) else value
        if sender is None:
            return False
        if self._secret is not None and (
            presented is None or not hmac.compare_digest(presented, self._secret.encode())
        ):
            raise AuthenticationError(
                f"a command forwarded by {sender[:128]!r} without the cluster's secret"
            )
        return True

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self.ring)} members"
        return (
            f"<CommandRouter {self.node_id} {state}, forwarded {self.stats.forwarded}, "
            f"fallbacks {self.stats.fallbacks}, received {self.stats.received}>"
        )


def _result(command: Command, response: pb.CommandResponse) -> CommandResult:
    """The owner's answer as the CommandResult a local dispatch would have returned."""
    return CommandResult(
        response.command_id,
        command.stream,
        [event_from_wire(e) for e in response.events],
        None if response.version < 0 else response.version,
        response.duplicate,
    )


def install_router(
    app: Chronik,
    membership: Membership,
    *,
    tls: ClientTLS | None = None,
    secret: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> CommandRouter:
    """Route ``app``'s dispatches by aggregate affinity over ``membership``'s live members
    (a dispatch middleware; the gateways find it with ``routing.router_of``)."""
    if router_of(app) is not None:
        raise ConfigurationError("this app already routes its commands by affinity")
    router = CommandRouter(membership, tls=tls, secret=secret, timeout=timeout)
    app.use(router)
    set_router(app, router)
    return router
