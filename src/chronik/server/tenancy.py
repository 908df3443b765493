"""Tenant scoping at the server's edge: who may see and write which tenant's streams.

Config ``tenancy: {mode: off|required}``. A credential (an API key's ``tenant``, a JWT's tenant
claim, ``JwtConfig.tenant_claim``) names one tenant, or ``"*"`` (an operator: every tenant and
the admin actions). Its ``Scope``:

- a tenant: reads see that tenant's events only; a stream of another tenant is 404 to a read
  and 403 to a write; a command without tenant gets it, one naming another tenant is 403;
- ``"*"`` (or, with ``mode: off``, a credential without tenant; or no auth at all): everything,
  as before tenants existed;
- no tenant with ``mode: required``: nothing (reads empty or 404, writes 403), fail closed.

Admin actions (projections, personal data, retention's scavenger, the admin UI, the CloudEvents
receiver) need an operator scope whenever the credential is tenant-scoped. The reads over the
global log go through ``read_all`` / ``read_query`` here (the store's ``tenant=`` filter, and
nothing for a denied scope); subscriptions pass ``tenant=scope.filter`` to ``subscribe``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

from chronik.dcb import Query
from chronik.errors import ConfigurationError, NotFound, PermissionDenied
from chronik.messages import TENANT_RE, Position, RecordedEvent, StreamId
from chronik.store.base import EventStore

__all__ = [
    "ALL",
    "NOBODY",
    "OPERATOR",
    "Scope",
    "TenancyConfig",
    "check_tenant",
    "read_all",
    "read_query",
    "tenant_denied",
]

OPERATOR: Final = "*"


class TenancyConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``tenancy:``: ``off`` (default: a credential without tenant sees every tenant) or
    ``required`` (a credential without tenant sees nothing)."""

    mode: Literal["off", "required"] = "off"

    @property
    def required(self) -> bool:
        """Whether a credential must name a tenant to see anything."""
        return self.mode == "required"

    def check(self, has_auth: bool) -> TenancyConfig:
        """This section, checked: ``required`` needs auth (API keys or JWTs) to name tenants."""
        if self.required and not has_auth:
            raise ConfigurationError(
                "tenancy.mode: required needs auth (auth.api_keys or auth.jwt) whose "
                "credentials name a tenant"
            )
        return self


def check_tenant(value: object, where: str) -> str | None:
    """A credential's tenant: None, ``"*"`` or a TENANT_RE name; ConfigurationError else."""
    if value is None or value == OPERATOR:
        return value
    if isinstance(value, str) and TENANT_RE.fullmatch(value):
        return value
    raise ConfigurationError(
        f"invalid tenant {str(value)[:70]!r} for {where}: expected '*' or "
        "[a-z0-9][a-z0-9_.-]{0,63}"
    )


def tenant_denied(message: str) -> PermissionDenied:
    """PermissionDenied whose problem names the ``tenant`` field."""
    exc = PermissionDenied(message)
    exc.field = "tenant"  # type: ignore[attr-defined]
    return exc


@dataclass(frozen=True, slots=True)
class Scope:
    """What one request may reach: every tenant (``tenant`` None), one tenant, or nothing
    (``denied``)."""

    tenant: str | None = None
    denied: bool = False

    @classmethod
    def of(cls, tenant: str | None, tenancy: TenancyConfig) -> Scope:
        """The scope of a credential naming ``tenant`` (None: it names none)."""
        if tenant == OPERATOR:
            return ALL
        if tenant is None:
            return NOBODY if tenancy.required else ALL
        return cls(tenant)

    @property
    def operator(self) -> bool:
        """Whether every tenant (and the admin actions) are in scope."""
        return self.tenant is None and not self.denied

    def sees(self, tenant: str) -> bool:
        """Whether events of ``tenant`` are in scope."""
        return self.operator or (not self.denied and tenant == self.tenant)

    def require_operator(self, what: str) -> None:
        """PermissionDenied (naming ``tenant``) unless every tenant is in scope."""
        if not self.operator:
            raise tenant_denied(f"{what} needs an operator credential (tenant '*')")

    def write_tenant(self, given: str) -> str:
        """The tenant a write goes to: ``given`` for an operator, the scope's own when
        ``given`` is empty or the same; PermissionDenied (naming ``tenant``) otherwise."""
        if self.operator:
            return given
        if self.denied or self.tenant is None:
            raise tenant_denied("this credential has no tenant: it may not write")
        if given not in ("", self.tenant):
            raise tenant_denied(f"tenant {given[:70]!r} is not this credential's tenant")
        return self.tenant

    def read_stream(self, stream: StreamId) -> StreamId:
        """The stream a read addresses: a scoped credential's own tenant when the request
        named none (an empty tenant); NotFound for another tenant's."""
        if self.operator:
            return stream
        if not stream.tenant:
            stream = StreamId(stream.domain, stream.aggregate_id, self.tenant or "")
        if self.denied or stream.tenant != self.tenant:
            raise NotFound(f"stream {stream.domain}/{stream.aggregate_id} not found")
        return stream

    @property
    def filter(self) -> str | None:
        """The store's ``tenant=`` filter (None: every tenant); check ``denied`` first."""
        return self.tenant


ALL: Final = Scope()
NOBODY: Final = Scope(None, denied=True)


async def read_all(
    store: EventStore,
    scope: Scope,
    after: Position | None = None,
    domains: Sequence[str] | None = None,
    types: Sequence[str] | None = None,
    limit: int | None = None,
    backward: bool = False,
    before: Position | None = None,
) -> AsyncIterator[RecordedEvent]:
    """``store.read_all`` within ``scope`` (the store's tenant filter; nothing when denied)."""
    if scope.denied:
        return
    async for event in store.read_all(
        after, domains, types, limit, backward, before, tenant=scope.filter
    ):
        yield event


async def read_query(
    store: EventStore,
    scope: Scope,
    query: Query,
    after: Position | None = None,
    limit: int | None = None,
    backward: bool = False,
) -> AsyncIterator[RecordedEvent]:
    """``store.read_query`` within ``scope`` (the store's tenant filter; nothing when
    denied)."""
    if scope.denied:
        return
    async for event in store.read_query(query, after, limit, backward, tenant=scope.filter):
        yield event
