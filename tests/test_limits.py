"""Rate limiting primitives: pacing never runs ahead of the limit, AIMD concurrency, Retry-After pauses."""

from __future__ import annotations

import asyncio
import time

import pytest

from distill.labeling.limits import AdaptiveConcurrency, Pacer, Scheduler
from distill.providers import RateLimits


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


def test_pacer_give_back_wakes_the_waiting_caller():
    """A request booked 1 s of capacity; its answer gives 0.9 s back after 0.1 s: the caller waiting
    at the head of the queue goes then, not at the end of the original booking."""
    async def run():
        pacer = Pacer(10.0)
        await pacer.acquire(10)  # books 1 s
        t0 = time.monotonic()
        waiter = asyncio.ensure_future(pacer.acquire(1))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        pacer.adjust(-9)  # the answer used 1 unit of the 10 booked
        await waiter
        return time.monotonic() - t0

    waited = asyncio.run(run())
    assert 0.09 <= waited < 0.3


def test_pacer_give_back_never_reaches_into_the_past():
    clock = [0.0]
    pacer = Pacer(10.0, clock=lambda: clock[0])
    pacer.reserve(10)  # capacity used until t = 1.0
    clock[0] = 0.8
    pacer.adjust(-10)  # it used nothing, but 0.8 s have passed: the schedule restarts from now
    assert pacer.wait_time() == 0.0
    pacer.book(5)
    assert pacer.wait_time() == pytest.approx(0.5)  # not 0.5 - 0.8: no burst from the past


def test_calibration_books_what_answers_really_use():
    from distill.labeling.limits import Calibration

    cal = Calibration()
    assert cal.predict(300, ceiling=300) == 300  # nothing seen yet: the pessimistic estimate
    for _ in range(5):
        cal.observe(300, 60)
    assert cal.predict(300, ceiling=300) == pytest.approx(60)
    cal.observe(100, 2000)  # an estimate that undercounted: more than the ceiling is never booked
    assert cal.predict(300, ceiling=300) == 300
