"""The node's limits as plain objects: token buckets, slots, refusals and their retry hints."""

from __future__ import annotations

import pytest

from chronik.errors import Overloaded, RateLimited
from chronik.server.limits import Limiter, LimitsConfig, Rate, TokenBucket


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_spends_its_burst_then_refills_at_its_rate() -> None:
    """A bucket of burst 3 at 2/s gives 3 tokens, then says when the next is there."""
    clock = Clock()
    bucket = TokenBucket(Rate(per_s=2, burst=3), clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 0.25
    assert bucket.take() == pytest.approx(0.25)
    clock.now += 0.25
    assert bucket.take() == 0.0
    clock.now += 60  # refills up to the burst, never beyond
    assert [bucket.take() for _ in range(4)][-1] > 0


def test_slots_are_bounded_and_given_back() -> None:
    """A third command past a limit of 2 is Overloaded naming the limit; a slot freed by a
    finished (or failed) command is given back; every refusal is counted and observed."""
    limiter = Limiter(LimitsConfig(max_inflight_commands=2, retry_after_ms=70))
    seen: list[tuple[str, str]] = []
    limiter.observers.append(lambda api, exc: seen.append((api, exc.limit)))
    with limiter.command(), limiter.command():
        with pytest.raises(Overloaded) as refused, limiter.command("http"):
            pass
        assert refused.value.retry_after_ms == 70
        assert "limits.max_inflight_commands" in str(refused.value)
    with pytest.raises(ValueError), limiter.command():
        raise ValueError("a failing command")
    assert limiter.inflight_commands == 0
    assert limiter.refused == {"limits.max_inflight_commands": 1}
    assert seen == [("http", "limits.max_inflight_commands")]
    unbounded = Limiter()
    with unbounded.subscription(), unbounded.subscription():
        assert unbounded.subscriptions == 2 and not unbounded.active


def test_rate_limits_are_per_key() -> None:
    """One key's empty bucket says RateLimited with its wait; other keys, and keys without a
    rate, are not affected."""
    clock = Clock()
    limiter = Limiter(None, {"a": Rate(per_s=4, burst=1), "b": Rate(per_s=4, burst=1)}, clock=clock)
    limiter.check_rate("a")
    with pytest.raises(RateLimited) as limited:
        limiter.check_rate("a")
    assert limited.value.key == "a" and limited.value.retry_after_ms == 250
    limiter.check_rate("b")
    for _ in range(100):
        limiter.check_rate("no-rate")
    clock.now += 0.25
    limiter.check_rate("a")
    assert limiter.rated and limiter.refused == {"auth.api_keys[a].rate": 1}


async def test_the_limited_handler_of_a_method_is_made_once() -> None:
    """The limit interceptor wraps a method's handler once and hands the same wrapper out
    while the server hands out the same handler; a new handler is wrapped anew."""
    import grpc

    from chronik.server.grpc_limits import COMMAND_METHOD, LimitInterceptor

    async def handle(request: object, context: object) -> object:
        return request

    first: object = grpc.unary_unary_rpc_method_handler(handle)
    current = first

    async def continuation(details: object) -> object:
        return current

    class Details:
        method = COMMAND_METHOD

    limits = LimitInterceptor(Limiter(LimitsConfig(max_inflight_commands=2)))
    made = await limits.intercept_service(continuation, Details())  # type: ignore[arg-type]
    assert made is not first
    assert await limits.intercept_service(continuation, Details()) is made  # type: ignore[arg-type]
    current = grpc.unary_unary_rpc_method_handler(handle)
    assert await limits.intercept_service(continuation, Details()) is not made  # type: ignore[arg-type]
