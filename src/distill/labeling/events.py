"""The label stage's event stream: ``events.jsonl`` (one JSON object a line, written as it happens,
so a dashboard or ``tail -f`` sees a run live and a killed run keeps every event up to the kill)."""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

_EVENT_JSON = json.JSONEncoder(
    ensure_ascii=False
)  # json.dumps(row, ensure_ascii=False), without a new encoder per line


class Events:
    """Append-only JSON lines (one per request done, retry, rate limit, invalid record, budget stop),
    plus in-process listeners (the live progress panel). ``path=None`` keeps them in memory only."""

    def __init__(self, path: str | Path | None = None, keep_last: int = 8):
        self.path = Path(path) if path else None
        self._fh = None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # line-buffered: each event reaches the file when it happens (a few µs a line)
            self._fh = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed by close()
        self.last: deque[dict[str, Any]] = deque(maxlen=keep_last)
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    def emit(self, event: str, **fields: Any) -> None:
        row = {"t": round(time.time(), 3), "event": event, **fields}
        if event != "request_done":
            self.last.append(row)
        if self._fh:
            self._fh.write(_EVENT_JSON.encode(row) + "\n")
        for listener in self.listeners:
            listener(row)

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None
