"""How the admin UI authenticates a browser and refuses cross-site requests.

- Credentials: when the server has HTTP auth, every admin route needs them ("read" for pages,
  "admin" for the buttons). A browser signs in at ``/admin/login`` with an API key or a bearer
  JWT; it is kept in the ``chronik_admin`` cookie (HttpOnly, SameSite=Strict, Path=/admin,
  Secure over https) and sent on as ``Authorization: Bearer`` to the server's HttpAuth. Clients
  may instead send ``x-api-key`` or ``Authorization`` themselves, as for the /v1 API.
- CSRF: every POST must carry an ``Origin`` (or, failing that, a ``Referer``) naming the host
  and port the request was sent to (its ``Host``; the scheme is not compared, so a TLS proxy in
  front works); SameSite=Strict keeps the cookie off cross-site requests in the first place.
- Admin writes (the buttons: pause, resume, rebuild, dead-letter and outbox retry/drop) need
  the ``admin`` right when the server has auth; without auth they are refused (403
  AdminWritesDisabled) unless the HTTP app enabled them (``create_http_app(...,
  admin_writes=True)``, config ``http.admin_writes: true``).
- Tenants: the UI shows every tenant's data, so a tenant-scoped credential (one naming a
  tenant, or none with ``tenancy.mode: required``) is refused (403 naming ``tenant``); an
  operator's (tenant ``*``) is needed (``chronik.server.tenancy``).
- Every page is served with a strict Content-Security-Policy (scripts from /admin/static
  only, no inline script or style), no framing, no MIME sniffing.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from chronik.errors import AdminWritesDisabled, PermissionDenied
from chronik.server.http_auth import HttpAuth

__all__ = [
    "COOKIE",
    "SECURITY_HEADERS",
    "authorize",
    "check_same_origin",
    "clear_credential",
    "credentials",
    "safe_next",
    "set_credential",
]

COOKIE: Final = "chronik_admin"
MAX_CREDENTIAL: Final = 8192
SECURITY_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def credentials(request: Request) -> Mapping[str, str]:
    """The headers HttpAuth checks: the request's own, or the sign-in cookie as a bearer."""
    headers = request.headers
    if headers.get("x-api-key") or headers.get("authorization"):
        return headers
    token = _decode(request.cookies.get(COOKIE, ""))
    return {"authorization": f"Bearer {token}"} if token else {}


def _decode(value: str) -> str:
    """The credential kept in the cookie (base64url, so any key survives cookie quoting)."""
    if not value or len(value) > MAX_CREDENTIAL:
        return ""
    try:
        return base64.urlsafe_b64decode(value.encode("ascii")).decode()
    except (binascii.Error, UnicodeError, ValueError):
        return ""


def authorize(auth: HttpAuth | None, request: Request, action: str) -> None:
    """AuthenticationError / PermissionDenied unless ``action`` is allowed. Without auth, reads
    are allowed and admin writes only where the HTTP app enabled them (else 403)."""
    if auth is not None:
        who = auth.check(credentials(request), action)
        auth.scope(who).require_operator("the admin UI")
    elif action == "admin" and not getattr(request.app.state, "admin_writes", False):
        raise AdminWritesDisabled()


def _host(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return parts.netloc.lower()


def check_same_origin(request: Request) -> None:
    """PermissionDenied unless a POST says it comes from a page of this very origin."""
    own = request.headers.get("host", "").lower()
    claimed = request.headers.get("origin") or request.headers.get("referer") or ""
    if not own or _host(claimed) != own:
        raise PermissionDenied("cross-site request refused: Origin must be this server's")


def safe_next(target: str | None, base: str) -> str:
    """Where to go after signing in: a path under the admin UI, never another site."""
    if (
        target
        and target.startswith(f"{base}")
        and not target.startswith("//")
        and "\\" not in target
        and all(c.isprintable() for c in target)
    ):
        return target
    return base


def set_credential(response: Response, request: Request, token: str, base: str) -> None:
    """Keep the credential in the HttpOnly, SameSite=Strict sign-in cookie."""
    response.set_cookie(
        COOKIE,
        base64.urlsafe_b64encode(token.encode()).decode(),
        path=base,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_credential(response: Response, base: str) -> None:
    """Forget the sign-in cookie."""
    response.delete_cookie(COOKIE, path=base, httponly=True, samesite="strict")
