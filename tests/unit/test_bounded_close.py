"""close_within: a close that swallows its cancellation cannot hold shutdown forever."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from chronik import bounded_close
from chronik.bounded_close import close_within


async def _stubborn_close(never: asyncio.Future[None]) -> None:
    """Like nats-py's close: a cancel during its first wait is swallowed, then it waits on a
    socket that never reports closed."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(60)
    await never


async def test_a_close_that_swallows_the_cancel_is_left_behind_in_time() -> None:
    """The stubborn close is cancelled twice and left behind after seconds + GRACE."""
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    start = time.monotonic()
    assert await close_within(_stubborn_close(never), 0.05, "test") is False
    assert time.monotonic() - start < 0.05 + bounded_close.GRACE + 0.5
    assert never.cancelled()  # the second cancel reached the inner wait


async def test_a_close_that_finishes_returns_true() -> None:
    """A close that finishes in time: True."""
    assert await close_within(asyncio.sleep(0.01), 1, "test") is True


async def test_listed_errors_are_logged_others_raised(caplog: pytest.LogCaptureFixture) -> None:
    """An error of the listed types is logged (False); any other is raised."""

    async def fails(exc: Exception) -> None:
        raise exc

    assert await close_within(fails(OSError("gone")), 1, "svc", OSError) is False
    assert "svc: close failed" in caplog.text
    with pytest.raises(ValueError):
        await close_within(fails(ValueError("bug")), 1, "svc", OSError)


async def test_a_cancelled_caller_cancels_its_close() -> None:
    """Cancelling the caller cancels the close it waits for."""
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(60)

    inner = asyncio.ensure_future(slow())
    caller = asyncio.ensure_future(close_within(inner, 30, "test"))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.sleep(0)
    assert inner.cancelled()
