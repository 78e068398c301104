"""Cost of a request and the hard budget cap (``label.budget_usd``)."""

from __future__ import annotations

import asyncio
from collections import deque

from distill.providers.base import Pricing


def request_cost(price: Pricing, input_tokens: float, output_tokens: float, discount: float = 1.0) -> float:
    """US dollars for a request at ``price`` (an unknown price counts as free: a budget refuses to
    start with one, see :func:`distill.providers.prices.budget_problem`)."""
    if not price.known:
        return 0.0
    return discount * (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1e6


class Budget:
    """Admit a request only if spent + reserved in-flight cost + its own worst-case cost fits the cap.

    The worst case reserves the estimated input and the full ``max_tokens`` of output, so spend can
    never pass the cap; each reservation is trued up to the real cost when the answer arrives.
    :meth:`admit` is first come, first served: a request that does not fit waits for reservations in
    flight to settle (they usually cost less than reserved), and no later request overtakes it, even a
    cheaper one. When nothing is in flight and the head of the queue still does not fit, the budget
    closes: that request and every one after it are refused. So a run stops within one worst-case
    request of the cap, and what it labelled is a prefix of its input (a re-ask queues like any
    request, so a record whose re-ask was refused is the one exception); a rerun continues from there.
    """

    def __init__(self, cap_usd: float | None):
        self.cap = cap_usd
        self.spent = 0.0
        self.reserved = 0.0
        self.reached = False  # closed: nothing more is admitted in this run
        self._waiters: deque[tuple[float, asyncio.Future[bool]]] = deque()

    def fits(self, cost: float) -> bool:
        return self.cap is None or self.spent + self.reserved + cost <= self.cap + 1e-12

    def reserve(self, cost: float) -> bool:
        """Reserve now or refuse now (no queue): the batch runner's admission."""
        if self.reached or not self.fits(cost):
            self.reached = True
            return False
        self.reserved += cost
        return True

    async def admit(self, cost: float) -> bool:
        """Reserve ``cost`` in arrival order, waiting while reservations in flight may still shrink."""
        if self.reached:
            return False
        if not self._waiters:
            if self.fits(cost):
                self.reserved += cost
                return True
            if self.reserved <= 1e-12:  # nothing in flight can free room: closed
                self.reached = True
                return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append((cost, future))
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.result():
                self.release(cost)  # admitted, then cancelled before it could run
            raise

    def settle(self, reserved: float, actual: float) -> None:
        self.reserved -= reserved
        self.spent += actual
        self._pump()

    def release(self, reserved: float) -> None:
        self.reserved -= reserved
        self._pump()

    def _pump(self) -> None:
        """Admit waiters from the head while they fit; close when the head cannot fit at all."""
        while self._waiters:
            cost, future = self._waiters[0]
            if future.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            if self.fits(cost):
                self._waiters.popleft()
                self.reserved += cost
                future.set_result(True)
                continue
            if self.reserved <= 1e-12:
                self.reached = True
                while self._waiters:
                    _, waiting = self._waiters.popleft()
                    if not waiting.done():
                        waiting.set_result(False)
            return
