"""The admin UI's Retention page: the scavenger of this process (running, last run, progress)
and two buttons, a dry run (what would go) and a run now, each answering the refreshed
fragment with the run's report.

- ``GET /admin/retention``: the page;
- ``POST /admin/retention/{dry-run|scavenge}``: one run under the store's scavenger lease (a
  write: the admin right, or admin writes enabled without auth); a held lease is an error.

Module-level handlers ``handler(state, request)`` over an ``AdminState``; imports ``state``,
never ``routes``.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from chronik.errors import LeaseHeld, ValidationError
from chronik.lifecycle.scavenger import LEASE, Scavenger, ScavengeReport
from chronik.server.admin.state import AdminState, render, writes_shown

__all__ = ["retention", "retention_action"]

log = logging.getLogger("chronik.admin")


def _context(
    state: AdminState, request: Request, report: ScavengeReport | None = None, flash: str = ""
) -> dict[str, Any]:
    running = Scavenger.running_on(state.store)
    return {
        "page": "retention",
        "running": running,
        "health": None if running is None else running.health(),
        "defaults": {} if running is None else running.defaults,
        "report": None if report is None else msgspec.to_builtins(report),
        "writes": writes_shown(state, request),
        "flash": flash,
    }


async def retention(state: AdminState, request: Request) -> Response:
    """``GET /admin/retention``: the scavenger and its buttons."""
    return render(state, request, "retention.html", **_context(state, request))


async def retention_action(state: AdminState, request: Request) -> Response:
    """``POST /admin/retention/{dry-run|scavenge}``: one run now, its report."""
    action = request.path_params["action"]
    if action not in ("dry-run", "scavenge"):
        raise ValidationError(f"unknown action {action!r}", field="action")
    running = Scavenger.running_on(state.store)
    runner = Scavenger(state.store, None if running is None else running.defaults)
    try:
        report = await runner.run_once(dry_run=action == "dry-run")
    finally:
        await state.store.release_lease(LEASE, runner.owner)
    if report is None:
        raise LeaseHeld(LEASE, 0, runner.owner)
    verb = "would remove" if report.dry_run else "removed"
    flash = f"{verb} {report.events} events ({report.bytes} bytes) from {report.streams} streams"
    log.info("admin: scavenger %s: %s", action, flash)
    return render(state, request, "_retention.html", **_context(state, request, report, flash))
