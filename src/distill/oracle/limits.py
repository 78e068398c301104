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
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
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
    def __init__(self, maximum: int, minimum: int = 1, clock: Callable[[], float] = time.monotonic):
        self.maximum = maximum
        self.minimum = minimum
        self.limit = float(maximum)
        self.in_flight = 0
        self.clock = clock
        self._cond = asyncio.Condition()
        self._last_decrease = -1e9

    async def acquire(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1

    async def release(self, outcome: str, cooldown_s: float = 1.0) -> None:
        """``outcome``: "ok" (additive increase), "throttled" (multiplicative decrease) or "error"."""
        async with self._cond:
            self.in_flight -= 1
            if outcome == "throttled":
                now = self.clock()
                if now - self._last_decrease >= cooldown_s:
                    self.limit = max(float(self.minimum), self.limit / 2)
                    self._last_decrease = now
            elif outcome == "ok":
                self.limit = min(float(self.maximum), self.limit + 1.0 / max(self.limit, 1.0))
            self._cond.notify_all()


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

    @asynccontextmanager
    async def slot(self, est_input: float, est_output: float) -> AsyncIterator[Slot]:
        await self.concurrency.acquire()
        slot = Slot(self, est_input, est_output)
        try:
            await self._wait_pause()
            for pacer, amount in ((self.rpm, 1), (self.rps, 1), (self.input_tpm, est_input), (self.output_tpm, est_output)):
                if pacer is not None:
                    await pacer.acquire(amount)
            await self._wait_pause()
            yield slot
        finally:
            await self.concurrency.release(slot.outcome)
