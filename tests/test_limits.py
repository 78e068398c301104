"""Rate limiting primitives: pacing never runs ahead of the limit, AIMD concurrency, Retry-After pauses."""

from __future__ import annotations

import asyncio
import time

import pytest

from distill.config import RateLimits
from distill.oracle.limits import AdaptiveConcurrency, Pacer, Scheduler


def test_pacer_spaces_requests_at_the_rate():
    async def run():
        pacer = Pacer(200.0)
        stamps = []
        for _ in range(60):
            await pacer.acquire()
            stamps.append(time.monotonic())
        return stamps

    stamps = asyncio.run(run())
    elapsed = stamps[-1] - stamps[0]
    assert elapsed >= 59 / 200 * 0.98  # never faster than the rate
    assert elapsed < 59 / 200 * 1.5 + 0.1  # and not much slower
    # no 0.1 s window holds more than its 20 requests (+1 for the window's closed edge)
    assert max(sum(1 for t in stamps if s <= t < s + 0.1) for s in stamps) <= 21


def test_pacer_true_up_moves_the_schedule():
    clock = [0.0]
    pacer = Pacer(10.0, clock=lambda: clock[0])
    assert pacer.reserve(5) == 0.0  # first reservation starts now, books 0.5 s
    assert pacer.reserve(1) == pytest.approx(0.5)
    pacer.adjust(-5)  # the first request used nothing: give its 0.5 s back
    assert pacer.reserve(1) == pytest.approx(0.1)
    pacer.adjust(+20)  # a response used 20 units more than reserved
    assert pacer.reserve(1) == pytest.approx(2.2)


def test_adaptive_concurrency_halves_on_throttle_and_recovers():
    async def run():
        clock = [0.0]
        ac = AdaptiveConcurrency(16, clock=lambda: clock[0])
        await ac.acquire()
        await ac.release("throttled")
        assert ac.limit == 8
        for _ in range(3):  # within the cool-down: one decrease only
            await ac.acquire()
            await ac.release("throttled")
        assert ac.limit == 8
        clock[0] += 5
        await ac.acquire()
        await ac.release("throttled")
        assert ac.limit == 4
        for _ in range(200):
            await ac.acquire()
            await ac.release("ok")
        assert ac.limit == 16  # back to the maximum, never above

    asyncio.run(run())


def test_adaptive_concurrency_bounds_in_flight():
    async def run():
        ac = AdaptiveConcurrency(3)
        peak = 0

        async def work():
            nonlocal peak
            await ac.acquire()
            peak = max(peak, ac.in_flight)
            await asyncio.sleep(0.01)
            await ac.release("ok")

        await asyncio.gather(*(work() for _ in range(30)))
        return peak

    assert asyncio.run(run()) == 3


def test_scheduler_pause_holds_every_request():
    async def run():
        sched = Scheduler(RateLimits(), concurrency=4)
        async with sched.slot(10, 10) as slot:
            slot.throttled(0.3)
        t0 = time.monotonic()
        async with sched.slot(10, 10) as slot:
            slot.settle(10, 10)
        return time.monotonic() - t0, sched

    waited, sched = asyncio.run(run())
    assert waited >= 0.25 and sched.throttled_count == 1
    assert sched.concurrency.limit == 2.5  # the 429 halved the cap (4 -> 2), the success added 1/2


def test_scheduler_describes_its_limits():
    s = Scheduler(RateLimits(rpm=600, input_tpm=100000, max_concurrency=8), concurrency=64)
    assert s.describe() == "600 rpm, 100000 input tpm, concurrency 8 (adaptive)"
