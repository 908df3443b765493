"""Close a client within a bound, even one whose close swallows a cancellation.

``asyncio.wait_for(client.close(), t)`` cancels the close after ``t`` seconds and then waits for
it to finish: a close that catches that cancellation (nats-py's does while it waits for its
reconnect task) and then waits on a socket that never reports closed holds its caller forever.
``close_within`` waits ``seconds``, cancels, waits one second more and then leaves the close
behind (logged), so shutting down never hangs on a broken connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Final

__all__ = ["GRACE", "close_within"]

log = logging.getLogger("chronik")

GRACE: Final = 1.0  # seconds a cancelled close gets to finish before it is left behind
_left: set[asyncio.Future[object]] = set()  # closes left behind, referenced until they end


def _forget(task: asyncio.Future[object]) -> None:
    """A close left behind ended: drop it (its error, if any, was no one's to see)."""
    _left.discard(task)
    if not task.cancelled():
        task.exception()


async def close_within(
    closing: Coroutine[Any, Any, object], seconds: float, what: str, *errors: type[BaseException]
) -> bool:
    """Run ``closing`` for at most ``seconds`` (then cancelled, plus ``GRACE``); whether it
    finished. Its ``errors`` are logged, not raised; any other error is raised."""
    task = asyncio.ensure_future(closing)
    try:
        for wait in (seconds, GRACE):
            done, _ = await asyncio.wait({task}, timeout=wait)
            if done:
                break
            task.cancel()
        else:
            log.warning("%s: close did not end within %.1f s: left behind", what, seconds + GRACE)
            _left.add(task)
            task.add_done_callback(_forget)
            return False
    except asyncio.CancelledError:  # the caller is cancelled: so is its close
        task.cancel()
        raise
    if task.cancelled():
        return False
    exc = task.exception()
    if exc is None:
        return True
    if isinstance(exc, errors):
        log.warning("%s: close failed: %r", what, exc)
        return False
    raise exc
