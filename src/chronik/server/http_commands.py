"""HTTP handlers of the write side: ``POST /v1/commands`` (with ``?wait=projections``).

A committed command is always answered with its result, never a 5xx. A command goes to the
credential's tenant: one without tenant gets it, one naming another tenant is 403
(``chronik.server.tenancy``). Module-level handlers
over ``chronik.server.http_state.HttpState``; imports ``http_state`` and ``http_params``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chronik.commands import CommandResult
from chronik.server import http_params as params
from chronik.server.http_state import HttpState, read_body, scope_of, state_of

__all__ = ["caught_up", "post_command", "result_json"]

log = logging.getLogger("chronik.http")


def result_json(result: CommandResult) -> dict[str, Any]:
    """A command's result as JSON (its events left out if one cannot be shown)."""
    body = {
        "command_id": result.command_id,
        "stream": str(result.stream),
        "version": result.version,
        "duplicate": result.duplicate,
    }
    try:
        return {**body, "events": [e.to_dict() for e in result.events]}
    except Exception:  # committed: answer it even if an event cannot be shown
        log.exception("cannot show the events of committed command %s", result.command_id)
        return {**body, "events": []}


async def post_command(request: Request) -> Response:
    """``POST /v1/commands``: dispatch one command; 202 if the projections are not caught up
    within the wait."""
    state = state_of(request)
    who = None if state.auth is None else state.auth.authenticate(request.headers)
    timeout = params.wait_timeout(request.query_params)
    command = await params.parse_command(await read_body(request))
    if state.auth is not None:
        state.auth.check_command(request.headers, command, who)
    command.tenant = scope_of(request).write_tenant(command.tenant)
    result = await state.app.dispatch(command)
    # committed from here on: whatever fails now, the answer is the committed result
    answer = result_json(result)
    if timeout is None:
        return JSONResponse(answer)
    if await caught_up(state, result, timeout):
        return JSONResponse({**answer, "projections": "caught_up"})
    return JSONResponse({**answer, "projections": "pending"}, status_code=202)


async def caught_up(state: HttpState, result: CommandResult, seconds: float) -> bool:
    """Whether the projections applied the command's events within ``seconds``."""
    runners = [r for r in (state.runner, state.app.runner) if r is not None]
    if not runners or result.position is None:
        return True
    try:
        async with asyncio.timeout(seconds):
            for runner in runners:  # the server's projections and the app's own
                await runner.wait_for(result.position)
    except TimeoutError:
        return False
    except Exception as exc:  # a projection stopped, the store went away: still committed
        log.warning("command %s committed; projections not confirmed: %r", result, exc)
        return False
    return True
