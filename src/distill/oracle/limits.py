"""Client-side rate limiting: pacing by requests and tokens, adaptive concurrency, server back-off.

- :class:`Pacer` is a GCRA (generic cell rate algorithm) limiter: each acquisition of ``amount`` units
  advances a theoretical arrival time by ``amount / rate``; a caller waits until its turn. With no
  burst allowance this spaces requests evenly, so no window of ``1 / rate`` seconds ever holds more
  than its share, and throughput sits at the limit rather than bursting and stalling. Token limits
  reserve an estimate up front and are trued up from the response's usage (:meth:`Pacer.adjust`).
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

from distill.config import RateLimits


class Pacer:
    def __init__(self, rate_per_s: float, burst: float = 0.0, clock: Callable[[], float] = time.monotonic):
        if rate_per_s <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate_per_s
        self.burst = burst  # in units: how far ahead of schedule a caller may run
        self.clock = clock
        self._tat = clock()
        self._lock = asyncio.Lock()

    def reserve(self, amount: float) -> float:
        """Book ``amount`` units; return how many seconds the caller must wait before using them."""
        now = self.clock()
        start = max(now, self._tat - self.burst / self.rate)
        self._tat = max(self._tat, now) + amount / self.rate
        return max(0.0, start - now)

    async def acquire(self, amount: float = 1.0) -> None:
        async with self._lock:  # FIFO: callers are served in the order they asked
            wait = self.reserve(amount)
            if wait > 0:
                await asyncio.sleep(wait)

    def adjust(self, delta: float) -> None:
        """True up a reservation by ``delta`` units (actual minus estimate; negative gives capacity back)."""
        self._tat += delta / self.rate


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

    def settle(self, input_tokens: int, output_tokens: int) -> None:
        """A response arrived: correct the token reservations with its real usage."""
        s = self.scheduler
        if s.input_tpm:
            s.input_tpm.adjust(input_tokens - self.est_input)
        if s.output_tpm:
            s.output_tpm.adjust(output_tokens - self.est_output)
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
        self.clock = clock
        self._paused_until = 0.0
        self.throttled_count = 0

    def describe(self) -> str:
        parts = []
        lim = self.limits
        for name, value in (("rpm", lim.rpm), ("rps", lim.rps), ("input tpm", lim.input_tpm), ("output tpm", lim.output_tpm)):
            if value:
                parts.append(f"{value:g} {name}")
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
        await s.concurrency.acquire()
        try:
            if s._paused_until > s.clock():
                await s._wait_pause()
            for pacer, amount in ((s.rpm, 1), (s.rps, 1), (s.input_tpm, self.slot.est_input),
                                  (s.output_tpm, self.slot.est_output)):
                if pacer is not None:
                    await pacer.acquire(amount)
            if s._paused_until > s.clock():
                await s._wait_pause()
        except BaseException:
            await s.concurrency.release(self.slot.outcome)
            raise
        return self.slot

    async def __aexit__(self, *exc: object) -> None:
        await self.scheduler.concurrency.release(self.slot.outcome)
