"""A content-addressed, per-request response cache in SQLite (WAL mode).

It lives outside the DVC outputs (DVC deletes a stage's outputs before running it) so paid answers
survive reruns, edits and crashes. Each response is committed as soon as it arrives: a run killed at
any moment loses at most the requests that were in flight.

The key hashes exactly what decides an answer: provider, model, the rendered messages, the JSON schema
and the generation parameters. Changing the prompt template or the schema misses; changing weights or
tier thresholds (which the project computes afterwards) hits. Keys never contain secrets.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from distill.oracle.base import ChatRequest, ChatResponse

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


def request_key(identity: dict[str, Any], request: ChatRequest) -> str:
    payload = {
        **identity,
        "messages": request.messages,
        "schema": request.schema,
        "params": request.generation_params(),
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def get(self, key: str) -> ChatResponse | None:
        row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return ChatResponse.from_json(json.loads(row[0])) if row else None

    def put(self, key: str, provider: str, model: str, response: ChatResponse) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO responses (key, provider, model, response, created_at) VALUES (?, ?, ?, ?, ?)",
            (key, provider, model, json.dumps(response.to_json(), ensure_ascii=False), time.time()),
        )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._db.close()
