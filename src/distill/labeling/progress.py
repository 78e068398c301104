"""Live progress for the label stage: a rich panel on a terminal, plain log lines elsewhere.

The panel shows progress against the target, throughput, pass / retry / fail counts, tokens, dollars
spent and projected, the ETA, the active limits and the latest events. When stderr is not a terminal
(CI, ``dvc exp run --queue``) the same numbers go to the log every ``interval`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

log = logging.getLogger("distill")


class Progress:
    #: the rich Console the panel draws on; None: a new one on stderr (tests set a recording one)
    console = None

    def __init__(self, total: int, labeler, mode: str = "auto", interval_s: float = 10.0, limits: str = ""):
        if mode == "auto":
            mode = "panel" if sys.stderr.isatty() else "log"
        self.mode = mode
        self.total = total
        self.labeler = labeler
        self.interval = interval_s if mode == "log" else 0.5
        self.limits = limits
        self.valid = 0
        self.invalid = 0
        self.t0 = time.perf_counter()
        self._live = None

    def record(self, kind: str) -> None:
        if kind == "valid":
            self.valid += 1
        elif kind == "invalid":
            self.invalid += 1

    def snapshot(self) -> dict[str, Any]:
        s = self.labeler.stats
        budget = self.labeler.budget
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        done = self.valid + self.invalid
        rate = done / elapsed
        remaining = max(self.total - done, 0)
        paid_done = max(s.requests, 1)
        projected = s.cost_usd + (s.cost_usd / paid_done) * remaining if s.requests else 0.0
        return {
            "done": done, "total": self.total, "valid": self.valid, "invalid": self.invalid,
            "records_per_s": rate, "requests": s.requests, "cache_hits": s.cache_hits,
            "retries": s.transport_retries, "rate_limited": s.rate_limited,
            "input_tokens": s.input_tokens, "output_tokens": s.output_tokens,
            "spent_usd": s.cost_usd, "projected_usd": projected, "budget_usd": budget.cap,
            "eta_s": remaining / rate if rate > 0 else None, "elapsed_s": elapsed,
        }

    def line(self) -> str:
        p = self.snapshot()
        eta = f"{p['eta_s']:.0f}s" if p["eta_s"] is not None else "?"
        budget = f" of ${p['budget_usd']:.2f}" if p["budget_usd"] is not None else ""
        return (
            f"label: {p['done']}/{p['total']} (valid {p['valid']}, invalid {p['invalid']}); "
            f"{p['records_per_s']:.2f} records/s; {p['requests']} paid, {p['cache_hits']} cached, "
            f"{p['retries']} retries, {p['rate_limited']} rate-limited; tokens {p['input_tokens']} in / "
            f"{p['output_tokens']} out; ${p['spent_usd']:.4f}{budget} spent, "
            f"${p['projected_usd']:.4f} projected; ETA {eta}"
        )

    def _panel(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        p = self.snapshot()
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_row("progress", f"{p['done']}/{p['total']}  valid {p['valid']}  invalid {p['invalid']}")
        table.add_row(
            "throughput",
            f"{p['records_per_s']:.2f} records/s   elapsed {p['elapsed_s']:.0f}s   ETA {p['eta_s']:.0f}s"
            if p["eta_s"] is not None
            else f"{p['records_per_s']:.2f} records/s",
        )
        table.add_row(
            "requests",
            f"{p['requests']} paid  {p['cache_hits']} cached  {p['retries']} retries  {p['rate_limited']} rate-limited",
        )
        table.add_row("tokens", f"{p['input_tokens']:,} in  {p['output_tokens']:,} out")
        budget = f" of ${p['budget_usd']:.2f}" if p["budget_usd"] is not None else ""
        table.add_row("spend", f"${p['spent_usd']:.4f}{budget}   projected ${p['projected_usd']:.4f}")
        if self.limits:
            table.add_row("limits", self.limits)
        for e in list(self.labeler.events.last)[-5:]:
            detail = ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("t", "event"))
            table.add_row("event", f"{e['event']}: {detail}"[:120])
        bar = ProgressBar(total=max(p["total"], 1), completed=p["done"], width=60)
        return Group(bar, table)

    async def run(self) -> None:
        """Refresh until cancelled."""
        if self.mode == "off":
            return
        if self.mode == "panel":
            from rich.console import Console
            from rich.live import Live

            console = self.console or Console(stderr=True)
            with Live(self._panel(), console=console, refresh_per_second=4) as live:
                self._live = live
                try:
                    while True:
                        await asyncio.sleep(self.interval)
                        live.update(self._panel())
                finally:
                    live.update(self._panel())
            return
        while True:
            await asyncio.sleep(self.interval)
            log.info(self.line())

    def finish(self) -> None:
        if self.mode != "off":
            log.info(self.line())
