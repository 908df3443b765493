"""A processor loop's idle wait (``Loop._idle``): it ends at the store's change signal, at a
wake-up or at the round's time, with no task per wait and nothing left on the signal."""

from __future__ import annotations

import asyncio
import time

import chronik
from chronik.projections.loop import Loop
from chronik.store.lifecycle import ChangeSignal


async def _idle_for(loop: Loop, signal: ChangeSignal, seconds: float) -> float:
    loop._next_poll = time.monotonic() + seconds
    start = time.monotonic()
    await loop._idle(signal)
    return time.monotonic() - start


async def test_the_wait_ends_at_the_signal_a_wake_up_or_its_time() -> None:
    """Set signal: at once; a wake-up during the wait: at once; neither: after its time."""
    async with chronik.open_store("memory://") as store:
        loop = Loop(store, "test", "test")
        signal = store.change_signal()
        assert isinstance(signal, ChangeSignal)
        asyncio.get_running_loop().call_later(0.01, store.wake_readers)  # sets it, as a commit
        assert await _idle_for(loop, signal, 5) < 1 and signal.is_set()
        asyncio.get_running_loop().call_later(0.01, loop._wake)
        assert await _idle_for(loop, store.change_signal(), 5) < 1
        assert 0.04 < await _idle_for(loop, store.change_signal(), 0.05) < 1


async def test_a_wake_up_between_waits_ends_the_next_one_at_once() -> None:
    """A wake-up while the loop works (not waiting) is kept for its next wait, once."""
    async with chronik.open_store("memory://") as store:
        loop = Loop(store, "test", "test")
        loop._wake()
        assert await _idle_for(loop, store.change_signal(), 5) < 1
        assert await _idle_for(loop, store.change_signal(), 0.05) >= 0.04


async def test_waits_that_time_out_leave_nothing_on_the_signal() -> None:
    """Many waits on one signal that is never set: no future stays registered on it."""
    async with chronik.open_store("memory://") as store:
        loop = Loop(store, "test", "test")
        signal = store.change_signal()
        assert isinstance(signal, ChangeSignal)
        for _ in range(20):
            await _idle_for(loop, signal, 0)
        assert signal._futures == []


def test_a_change_signal_resolves_what_it_was_given_once_set() -> None:
    """Futures given before the set resolve at the set; given after, at once; forgotten ones
    stay pending."""

    async def run() -> None:
        signal = ChangeSignal()
        loop = asyncio.get_running_loop()
        kept, dropped = loop.create_future(), loop.create_future()
        signal.resolve_on_set(kept)
        signal.resolve_on_set(dropped)
        signal.forget(dropped)
        signal.set()
        assert kept.done() and not dropped.done() and signal.is_set()
        late = loop.create_future()
        signal.resolve_on_set(late)
        assert late.done()

    asyncio.run(run())
