"""Client-side rate limiting: pacing by requests and tokens, adaptive concurrency, server back-off.

- :class:`Pacer` is a GCRA (generic cell rate algorithm) limiter: each acquisition of ``amount`` units
  advances a theoretical arrival time by ``amount / rate``; a caller waits until its turn. With no
  burst allowance this spaces requests evenly, so no window of ``1 / rate`` seconds ever holds more
  than its share, and throughput sits at the limit rather than bursting and stalling. Token limits
  book an estimate up front, calibrated by what earlier answers really used (:class:`Calibration`),
  and are trued up from the response's usage (:meth:`Pacer.adjust`); a give-back wakes the caller
  waiting at the head of the queue.
- :class:`AdaptiveConcurrency` caps in-flight requests with additive increase / multiplicative
  decrease: a 429 halves the cap (at most once per cool-down), each success adds ``1 / cap`` so the cap
  grows by about one per round trip, back up to the configured maximum.
- :class:`Scheduler` combines them with a global pause that honours ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from distill.providers.base import RateLimits


class Pacer:
    """GCRA pacing with reservations that can be trued up while callers wait.

    ``_tat`` (the theoretical arrival time) is when the capacity booked so far is used up. The
    caller at the head of the FIFO queue waits until ``_tat`` (less the burst allowance), then books
    its amount; a later true-up that gives capacity back (:meth:`adjust` with a negative delta) wakes
    it early, so an answer that used less than it reserved speeds up the very next request even if
    the answer arrives long after the request left. Capacity that lies in the past cannot be spent:
    a give-back never moves ``_tat`` before now, and an idle pacer books from now. Only a timer that
    fired late is caught up (up to ``slack_s``), so a loaded event loop does not drift behind the
    schedule.
    """

    def __init__(self, rate_per_s: float, burst: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 slack_s: float = 0.05):
        if rate_per_s <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate_per_s
        self.burst = burst  # in units: how far ahead of schedule a caller may run
        self.clock = clock
        self.slack_s = slack_s
        self._tat = clock()
        self._lock = asyncio.Lock()
        self._wake: asyncio.Future[None] | None = None

    def wait_time(self) -> float:
        """Seconds until the head of the queue may book (0 when it may go now)."""
        return max(0.0, self._tat - self.burst / self.rate - self.clock())

    def book(self, amount: float) -> None:
        now = self.clock()
        base = self._tat if self._tat >= now - self.slack_s else now
        self._tat = base + amount / self.rate

    def reserve(self, amount: float) -> float:
        """Book ``amount`` units now; return how many seconds the caller must wait before using them
        (the synchronous form of :meth:`acquire`, without the early wake-up)."""
        wait = self.wait_time()
        self.book(amount)
        return wait

    async def acquire(self, amount: float | Callable[[], float] = 1.0) -> float:
        """Wait for the caller's turn, then book ``amount`` units and return it. A callable amount is
        evaluated at the head of the queue, when the caller goes: a calibrated estimate is then as
        fresh as the answers that came back while it waited."""
        async with self._lock:  # FIFO: callers are served in the order they asked
            while (wait := self.wait_time()) > 0:
                await self._sleep(wait)
            units = amount() if callable(amount) else amount
            self.book(units)
            return units

    async def _sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._wake = wake = loop.create_future()
        timer = loop.call_later(seconds, _resolve, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None

    def adjust(self, delta: float) -> None:
        """True up a reservation by ``delta`` units (actual minus booked). More than booked is a debt
        charged from now at the latest; less gives capacity back, never before now."""
        now = self.clock()
        if delta >= 0:
            self._tat = max(self._tat, now - self.slack_s) + delta / self.rate
            return
        self._tat = max(self._tat + delta / self.rate, min(self._tat, now))
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)  # the head of the queue looks again


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Calibration:
    """What a token estimate turns out to be: actual / estimated over the answers so far.

    A request books ``estimate * ratio`` (at most ``ceiling``, such as ``max_tokens`` for output)
    instead of its raw estimate, so a pessimistic estimate (``max_tokens`` of output for answers that
    use a fifth of it) costs pacing nothing once a few answers have come back; the true-up corrects
    each request to its real usage either way.
    """

    def __init__(self) -> None:
        self.estimated = 0.0
        self.actual = 0.0

    def predict(self, estimate: float, ceiling: float | None = None) -> float:
        if self.estimated <= 0:
            return estimate
        value = estimate * self.actual / self.estimated
        return min(value, ceiling) if ceiling is not None else value

    def observe(self, estimate: float, actual: float) -> None:
        self.estimated += estimate
        self.actual += actual


class AdaptiveConcurrency:
    """In-flight cap with AIMD. Waiters are served first come, first served; a released slot is handed
    straight to the next waiter (no lock or condition on the uncontended path: this runs twice per
    request at thousands of requests a second)."""

    def __init__(self, maximum: int, minimum: int = 1, clock: Callable[[], float] = time.monotonic):
        self.maximum = maximum
        self.minimum = minimum
        self.limit = float(maximum)
        self.in_flight = 0
        self.clock = clock
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._last_decrease = -1e9

    async def acquire(self) -> None:
        if not self._waiters and self.in_flight < int(self.limit):
            self.in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # resolved by _wake with the slot already counted for us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted just as we were cancelled: pass it on
                self.in_flight -= 1
                self._wake()
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            raise

    async def release(self, outcome: str, cooldown_s: float = 1.0) -> None:
        """``outcome``: "ok" (additive increase), "throttled" (multiplicative decrease) or "error"."""
        self.in_flight -= 1
        if outcome == "throttled":
            now = self.clock()
            if now - self._last_decrease >= cooldown_s:
                self.limit = max(float(self.minimum), self.limit / 2)
                self._last_decrease = now
        elif outcome == "ok":
            self.limit = min(float(self.maximum), self.limit + 1.0 / max(self.limit, 1.0))
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < int(self.limit):
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)


@dataclass
class Slot:
    scheduler: Scheduler
    est_input: float
    est_output: float
    outcome: str = "error"
    booked_input: float = 0.0  # what the token pacers booked (calibrated estimates), set on entry
    booked_output: float = 0.0
    booked_total_input: float = 0.0  # the input part of the combined tpm booking

    def settle(self, input_tokens: int, output_tokens: int) -> None:
        """A response arrived: correct the token bookings with its real usage."""
        s = self.scheduler
        if s.input_tpm:
            s.input_tpm.adjust(input_tokens - self.booked_input)
        if s.output_tpm:
            s.output_tpm.adjust(output_tokens - self.booked_output)
        if s.tpm:  # max_tokens stays counted, as the provider counted it; the input is trued up
            s.tpm.adjust(input_tokens - self.booked_total_input)
        if s.input_tpm or s.tpm:
            s.input_calibration.observe(self.est_input, input_tokens)
        if s.output_tpm:
            s.output_calibration.observe(self.est_output, output_tokens)
        self.booked_input = self.booked_output = self.booked_total_input = 0.0
        self.outcome = "ok"

    def throttled(self, retry_after_s: float | None) -> None:
        """The server said 429: back off everyone for ``retry_after_s`` (or a second)."""
        self.outcome = "throttled"
        self.scheduler.pause(retry_after_s if retry_after_s is not None else 1.0)


class Scheduler:
    def __init__(self, limits: RateLimits, concurrency: int, clock: Callable[[], float] = time.monotonic):
        cap = min(concurrency, limits.max_concurrency or concurrency)
        self.limits = limits
        self.concurrency = AdaptiveConcurrency(cap, clock=clock)
        self.rpm = Pacer(limits.rpm / 60.0, clock=clock) if limits.rpm else None
        self.rps = Pacer(limits.rps, clock=clock) if limits.rps else None
        self.input_tpm = Pacer(limits.input_tpm / 60.0, clock=clock) if limits.input_tpm else None
        self.output_tpm = Pacer(limits.output_tpm / 60.0, clock=clock) if limits.output_tpm else None
        self.tpm = Pacer(limits.tpm / 60.0, clock=clock) if limits.tpm else None
        self.input_calibration = Calibration()
        self.output_calibration = Calibration()
        self.clock = clock
        self._paused_until = 0.0
        self.throttled_count = 0

    def describe(self) -> str:
        parts = []
        lim = self.limits
        for name, value in (("rpm", lim.rpm), ("rps", lim.rps), ("input tpm", lim.input_tpm),
                            ("output tpm", lim.output_tpm), ("tpm (input + max_tokens)", lim.tpm)):
            if value:
                parts.append(f"{int(value) if float(value).is_integer() else value} {name}")
        parts.append(f"concurrency {self.concurrency.maximum} (adaptive)")
        return ", ".join(parts)

    def pause(self, seconds: float) -> None:
        self.throttled_count += 1
        self._paused_until = max(self._paused_until, self.clock() + max(0.0, seconds))

    async def _wait_pause(self) -> None:
        while (delay := self._paused_until - self.clock()) > 0:
            await asyncio.sleep(delay)

    def slot(self, est_input: float, est_output: float) -> _SlotContext:
        """``async with scheduler.slot(est_in, est_out) as slot:`` one request's turn (concurrency, pause,
        pacing); released on exit with the outcome the body recorded on ``slot``."""
        return _SlotContext(self, est_input, est_output)


class _SlotContext:
    """The async context manager behind :meth:`Scheduler.slot` (a class: cheaper than a generator)."""

    __slots__ = ("scheduler", "slot")

    def __init__(self, scheduler: Scheduler, est_input: float, est_output: float):
        self.scheduler = scheduler
        self.slot = Slot(scheduler, est_input, est_output)

    async def __aenter__(self) -> Slot:
        s = self.scheduler
        slot = self.slot
        await s.concurrency.acquire()
        try:
            if s._paused_until > s.clock():
                await s._wait_pause()
            if s.rpm is not None:
                await s.rpm.acquire(1)
            if s.rps is not None:
                await s.rps.acquire(1)
            if s.input_tpm is not None:
                slot.booked_input = await s.input_tpm.acquire(
                    lambda: s.input_calibration.predict(slot.est_input))
            if s.output_tpm is not None:
                slot.booked_output = await s.output_tpm.acquire(
                    lambda: s.output_calibration.predict(slot.est_output, ceiling=slot.est_output))
            if s.tpm is not None:
                total = await s.tpm.acquire(
                    lambda: s.input_calibration.predict(slot.est_input) + slot.est_output)
                slot.booked_total_input = total - slot.est_output
            if s._paused_until > s.clock():
                await s._wait_pause()
        except BaseException:
            await self._release()
            raise
        return slot

    async def __aexit__(self, *exc: object) -> None:
        await self._release()

    async def _release(self) -> None:
        s, slot = self.scheduler, self.slot
        if slot.booked_output and s.output_tpm is not None:  # no answer: no output tokens were used
            s.output_tpm.adjust(-slot.booked_output)
        await s.concurrency.release(slot.outcome)
