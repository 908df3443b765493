"""HTTP auth: API keys (as for gRPC) and bearer JWTs (HS256 / RS256 allowlist, exp, nbf, aud).

A JWT's permissions are its ``scope`` claim (space-separated, or a list in ``scp``): ``read``,
``admin`` (projection actions), ``commands:DOMAIN:TYPE`` or ``commands:DOMAIN:*``. An
``authorize(principal, command)`` hook may refuse any command (raise PermissionDenied), e.g.
by tenant or by payload. Failures are logged by the gateway and answered 401 or 403.

A JWT's tenant is its ``tenant`` claim (``JwtConfig.tenant_claim``), an API key's its
``tenant``; ``scope(principal)`` is what the request reaches (``chronik.server.tenancy``). A
tenant claim that is not a tenant name (nor ``"*"``) makes the token invalid.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from chronik.errors import AuthenticationError, ConfigurationError, PermissionDenied
from chronik.messages import Command
from chronik.server.auth import ApiKey, Auth
from chronik.server.tenancy import Scope, TenancyConfig, check_tenant

__all__ = ["Authorize", "Claims", "HttpAuth", "JwtConfig", "Principal"]

ALLOWED_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512", "RS256", "RS384", "RS512"})


class JwtConfig(msgspec.Struct, forbid_unknown_fields=True):
    """How bearer JWTs are verified."""

    algorithms: list[str] = msgspec.field(default_factory=lambda: ["HS256"])
    secret: str = ""
    secret_env: str = ""
    public_key_file: str = ""
    audience: str | None = None
    issuer: str | None = None
    leeway: float = 0.0
    #: the claim naming the token's tenant ("*": every tenant); see chronik.server.tenancy
    tenant_claim: str = "tenant"

    def keys(self) -> dict[str, Any]:
        """Verification key per algorithm family."""
        bad = set(self.algorithms) - ALLOWED_ALGORITHMS
        if bad or not self.algorithms:
            raise ConfigurationError(f"JWT algorithms must be among {sorted(ALLOWED_ALGORITHMS)}")
        keys: dict[str, Any] = {}
        if any(a.startswith("HS") for a in self.algorithms):
            secret = os.environ.get(self.secret_env, "") if self.secret_env else self.secret
            if len(secret) < 16:
                raise ConfigurationError("an HS* JWT secret must have at least 16 characters")
            keys["HS"] = secret
        if any(a.startswith("RS") for a in self.algorithms):
            if not self.public_key_file:
                raise ConfigurationError("RS* JWTs need public_key_file")
            keys["RS"] = Path(self.public_key_file).read_text()
        return keys


class Claims(msgspec.Struct, frozen=True):
    """A verified JWT: its claims and scopes."""

    claims: dict[str, Any]
    scopes: frozenset[str]


Principal = ApiKey | Claims
Authorize = Callable[[Principal, Command], None]


class HttpAuth:
    """Checks request headers: ``x-api-key``, or ``authorization: Bearer`` key or JWT."""

    def __init__(
        self,
        keys: Auth | None = None,
        jwt_config: JwtConfig | None = None,
        *,
        authorize: Authorize | None = None,
        tenancy: TenancyConfig | None = None,
    ) -> None:
        if keys is None and jwt_config is None:
            raise ConfigurationError("HTTP auth needs API keys or a JWT configuration")
        self.keys = keys
        self.jwt = jwt_config
        self.authorize = authorize
        #: tenant scoping: this argument, else the API keys' (``Auth.tenancy``), else off
        self.tenancy = tenancy or (keys.tenancy if keys is not None else TenancyConfig())
        self._jwt_keys: dict[str, Any] = {}
        if jwt_config is not None:
            import jwt  # noqa: F401 - PyJWT (and cryptography, ~10 MB) only with bearer JWTs

            self._jwt_keys = jwt_config.keys()

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """Who sent the request (AuthenticationError if nobody valid), before anything of the
        request is read."""
        api_key = headers.get("x-api-key", "")
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if token.count(".") == 2 and self.jwt is not None:
            return self._verify(token)
        presented = api_key or token
        if not presented:
            raise AuthenticationError("missing credentials: send x-api-key or a bearer token")
        if self.keys is None:
            raise AuthenticationError("invalid bearer token")
        return self.keys.authenticate([("x-api-key", presented)])

    def _verify(self, token: str) -> Claims:
        assert self.jwt is not None
        import jwt  # imported by __init__ already (JWTs are configured)

        try:
            header = jwt.get_unverified_header(token)
            alg = header.get("alg", "")
            if alg not in self.jwt.algorithms:
                raise AuthenticationError(f"token algorithm {alg!r} is not allowed")
            claims = jwt.decode(
                token,
                self._jwt_keys[alg[:2]],
                algorithms=[alg],
                audience=self.jwt.audience,
                issuer=self.jwt.issuer,
                leeway=self.jwt.leeway,
                options={"require": ["exp"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"invalid token: {exc}") from None
        try:
            check_tenant(claims.get(self.jwt.tenant_claim), f"claim {self.jwt.tenant_claim!r}")
        except ConfigurationError as exc:
            raise AuthenticationError(f"invalid token: {exc}") from None
        scope = claims.get("scp") or claims.get("scope") or ""
        return Claims(claims, frozenset(scope.split() if isinstance(scope, str) else scope))

    def tenant_of(self, who: Principal) -> str | None:
        """The tenant a principal names (``"*"``: every tenant; None: none)."""
        if isinstance(who, ApiKey):
            return who.tenant
        claim = "tenant" if self.jwt is None else self.jwt.tenant_claim
        value = who.claims.get(claim)
        return value if isinstance(value, str) else None

    def scope(self, who: Principal) -> Scope:
        """What ``who`` reaches under this server's tenancy."""
        return Scope.of(self.tenant_of(who), self.tenancy)

    def check(self, headers: Mapping[str, str], action: str) -> Principal:
        """Authenticate, then require ``action`` ("read", "append" or "admin"); the principal."""
        who = self.authenticate(headers)
        if isinstance(who, ApiKey):
            allowed = {"read": who.read, "append": who.append}.get(action, who.admin)
            name = who.name
        else:
            allowed, name = action in who.scopes, str(who.claims.get("sub", "token"))
        if not allowed:
            raise PermissionDenied(f"{name} may not {action}")
        return who

    def check_command(
        self, headers: Mapping[str, str], command: Command, who: Principal | None = None
    ) -> None:
        """Authenticate (unless ``who`` already is), require permission to send this command,
        then ask the hook."""
        who = self.authenticate(headers) if who is None else who
        domain, command_type = command.domain, command.type
        if isinstance(who, ApiKey):
            Auth.allow_command(who, domain, command_type)
        elif not {f"commands:{domain}:*", f"commands:{domain}:{command_type}"} & who.scopes:
            raise PermissionDenied(f"token may not send {domain}/{command_type}")
        if self.authorize is not None:
            self.authorize(who, command)  # raises PermissionDenied to refuse
