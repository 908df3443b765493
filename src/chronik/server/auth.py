"""Optional auth for the server: static API keys or bearer tokens, with command allowlists.

A key is sent as ``x-api-key: KEY`` or ``authorization: Bearer KEY`` metadata. Each key has a
name, a map of domain -> allowed command types (or ``"*"``), whether it may read and append
events directly, and its tenant (``"*"``: every tenant; see ``chronik.server.tenancy``).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import msgspec

from chronik.errors import AuthenticationError, ConfigurationError, PermissionDenied
from chronik.server.limits import Rate
from chronik.server.tenancy import Scope, TenancyConfig, check_tenant

__all__ = ["Action", "ApiKey", "Auth"]

Action = Literal["read", "append"]


class ApiKey(msgspec.Struct, forbid_unknown_fields=True):
    """One credential and what it allows."""

    name: str
    key: str = ""
    key_env: str = ""  # read the key from this environment variable instead
    commands: dict[str, list[str] | Literal["*"]] = msgspec.field(default_factory=dict)
    read: bool = True
    append: bool = False  # EventStore.Append, when the server enables raw appends at all
    admin: bool = False  # projection actions over HTTP
    rate: Rate | None = None  # a token bucket (chronik.server.limits): RateLimited past it
    tenant: str | None = None  # the one tenant it reaches; "*": every tenant (an operator)

    def secret(self) -> str:
        """The key itself (from ``key`` or the environment)."""
        value = os.environ.get(self.key_env, "") if self.key_env else self.key
        if len(value) < 8:
            raise ConfigurationError(f"API key {self.name!r} is missing or shorter than 8 chars")
        return value


class Auth:
    """Checks call metadata against the configured keys."""

    def __init__(self, keys: Sequence[ApiKey], tenancy: TenancyConfig | None = None) -> None:
        self._keys = [(k.secret().encode(), k) for k in keys]
        if not self._keys:
            raise ConfigurationError("auth is configured without any key")
        for k in keys:
            check_tenant(k.tenant, f"API key {k.name!r}")
        self.tenancy = tenancy or TenancyConfig()

    def scope(self, key: ApiKey | None) -> Scope:
        """What ``key`` reaches (None: no credentials were checked)."""
        return Scope.of(None if key is None else key.tenant, self.tenancy)

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]]) -> ApiKey:
        """The key the call presents; AuthenticationError if none or unknown."""
        presented = ""
        for name, value in metadata:
            text = value.decode() if isinstance(value, bytes) else value
            if name == "x-api-key":
                presented = text
            elif name == "authorization" and text.lower().startswith("bearer "):
                presented = text[7:].strip()
        if not presented:
            raise AuthenticationError("missing credentials: send x-api-key or a bearer token")
        given = presented.encode()
        found = None
        for secret, key in self._keys:
            if hmac.compare_digest(secret, given):
                found = key
        if found is None:
            raise AuthenticationError("unknown credentials")
        return found

    @staticmethod
    def allow_command(key: ApiKey, domain: str, command_type: str) -> None:
        """PermissionDenied unless ``key`` may send this command."""
        allowed = key.commands.get(domain)
        if allowed is None or (allowed != "*" and command_type not in allowed):
            raise PermissionDenied(f"{key.name} may not send {domain}/{command_type}")

    @staticmethod
    def allow(key: ApiKey, action: Action) -> None:
        """PermissionDenied unless ``key`` may read or append events."""
        if not getattr(key, action):
            raise PermissionDenied(f"{key.name} may not {action} events")

    @classmethod
    def from_config(
        cls, keys: Sequence[Mapping[str, object]] | None, tenancy: TenancyConfig | None = None
    ) -> Auth | None:
        """Auth from config entries (None: no auth)."""
        if not keys:
            return None
        try:
            return cls([msgspec.convert(k, ApiKey) for k in keys], tenancy)
        except msgspec.ValidationError as exc:
            raise ConfigurationError(f"invalid auth config: {exc}") from None
