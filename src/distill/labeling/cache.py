"""A content-addressed, per-request response cache in SQLite (WAL mode).

It lives outside the DVC outputs (DVC deletes a stage's outputs before running it) so paid answers
survive reruns, edits and crashes. Each response is committed as soon as it arrives: a run killed at
any moment loses at most the requests that were in flight.

:meth:`ResponseCache.put_async` is the engine's write path: answers that arrive in the same event-loop
tick are committed together in one transaction (one WAL append instead of one per answer), and each
caller resumes only once its answer is committed, so nothing is reported done before it is durable
against a kill. (``synchronous=NORMAL`` in WAL mode: a committed answer survives the process being
killed; only an operating-system crash or power loss can drop the last few.)

The key hashes exactly what decides an answer: provider, model, the rendered messages, the JSON schema
and the generation parameters. Changing the prompt template or the schema misses; changing weights or
tier thresholds (which the project computes afterwards) hits. Keys never contain secrets.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from distill.providers.base import ChatRequest, ChatResponse

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


# the canonical form every key hashes: json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))

try:  # optional: 20x faster for the messages, byte for byte the same text (see _messages_json)
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None


def _messages_json(messages: Any) -> str:
    """The canonical JSON of the messages. For the usual shape, a list of dicts whose keys and values
    are all strings, orjson writes exactly the bytes of the canonical json.dumps (same escapes, UTF-8
    kept, keys sorted by code point); anything else goes through json itself."""
    if _orjson is not None and type(messages) is list and all(
        type(m) is dict and all(type(k) is str and type(v) is str for k, v in m.items()) for m in messages
    ):
        try:
            return _orjson.dumps(messages, option=_orjson.OPT_SORT_KEYS).decode("utf-8")
        except TypeError:  # e.g. a lone surrogate, which orjson refuses: let json decide
            pass
    return _CANONICAL.encode(messages)
_SCHEMA_JSON: dict[int, tuple[Any, Any, str]] = {}


def _schema_json(schema: Any) -> str:
    """The canonical JSON of a schema, memoised per schema object (and re-made if it was mutated)."""
    hit = _SCHEMA_JSON.get(id(schema))
    if hit is not None and hit[0] is schema and hit[1] == schema:
        return hit[2]
    text = _CANONICAL.encode(schema)
    if len(_SCHEMA_JSON) >= 64:
        _SCHEMA_JSON.clear()
    _SCHEMA_JSON[id(schema)] = (schema, json.loads(text), text)  # holds the schema: its id is not reused
    return text


_INSERT = "INSERT OR REPLACE INTO responses (key, provider, model, response, created_at) VALUES (?, ?, ?, ?, ?)"
_RESPONSE_JSON = json.JSONEncoder(ensure_ascii=False)  # as json.dumps(..., ensure_ascii=False)


def _row(key: str, provider: str, model: str, response: ChatResponse) -> tuple[Any, ...]:
    return (key, provider, model, _RESPONSE_JSON.encode(response.to_json()), time.time())


def request_key(identity: dict[str, Any], request: ChatRequest) -> str:
    """sha256 of the canonical JSON of ``{**identity, messages, schema, params}``.

    Built member by member in the canonical key order, which gives exactly the bytes of one
    ``json.dumps(payload, sort_keys=True, ...)`` call, without re-serialising the (unchanging) schema
    for every request.
    """
    payload = {
        **identity,
        "messages": request.messages,
        "schema": request.schema,
        "params": request.generation_params(),
    }
    if request.context is not None:  # only a provider that reads the record sets it: others' keys are unchanged
        payload["context"] = request.context
    encode = _CANONICAL.encode
    parts = []
    for name in sorted(payload):
        value = payload[name]
        if name == "schema":
            text = _schema_json(value)
        elif name == "messages":
            text = _messages_json(value)
        else:
            text = encode(value)
        parts.append(f"{encode(name)}:{text}")
    blob = "{" + ",".join(parts) + "}"
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._pending: list[tuple[Any, ...]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._flush_scheduled = False

    def get(self, key: str) -> ChatResponse | None:
        row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return ChatResponse.from_json(json.loads(row[0])) if row else None

    def put(self, key: str, provider: str, model: str, response: ChatResponse) -> None:
        self._db.execute(_INSERT, _row(key, provider, model, response))

    async def put_async(self, key: str, provider: str, model: str, response: ChatResponse) -> None:
        """:meth:`put` for many concurrent writers on one event loop: returns once the answer is committed.

        Answers put during one loop tick are committed in one transaction at the start of the next
        (``loop.call_soon``), so a burst of answers costs one commit; a failed commit raises in every
        caller of that batch (none of them was reported done).
        """
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._pending.append(_row(key, provider, model, response))
        self._waiters.append(done)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        await done

    def _flush(self) -> None:
        rows, waiters = self._pending, self._waiters
        self._pending, self._waiters = [], []
        self._flush_scheduled = False
        if not rows:
            return
        try:
            if len(rows) == 1:
                self._db.execute(_INSERT, rows[0])  # autocommit: one statement, one transaction
            else:
                self._db.execute("BEGIN")
                try:
                    self._db.executemany(_INSERT, rows)
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
        except Exception as e:  # noqa: BLE001 - handed to every writer of the batch
            _settle(waiters, e)
            return
        _settle(waiters, None)  # a writer cancelled meanwhile still had its answer committed

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        if self._pending:  # writers whose loop stopped before the flush: commit what they handed over
            self._flush()
        self._db.close()


def _settle(waiters: list[asyncio.Future[None]], error: Exception | None) -> None:
    for w in waiters:
        if w.done():
            continue
        try:
            if error is None:
                w.set_result(None)
            else:
                w.set_exception(error)
        except RuntimeError:  # its event loop is closed: nobody is waiting any more
            pass


class ReadOnlyCache:
    """The response cache opened read-only (an estimate never creates or writes it)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        if self.path.is_file():
            self._db = sqlite3.connect(
                self.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30
            )
            try:
                self._db.execute("SELECT 1 FROM responses LIMIT 1")
            except sqlite3.DatabaseError:
                self._db.close()
                self._db = None

    @property
    def exists(self) -> bool:
        return self._db is not None

    def get(self, key: str) -> ChatResponse | None:
        if self._db is None:
            return None
        row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return ChatResponse.from_json(json.loads(row[0])) if row else None

    def output_pilot(self, provider: str, model: str) -> tuple[int, float]:
        """(answers, mean output tokens) over every cached answer of ``provider``/``model``."""
        if self._db is None:
            return 0, 0.0
        n, total = 0, 0
        rows = self._db.execute(
            "SELECT response FROM responses WHERE provider = ? AND model = ?", (provider, model)
        )
        for (blob,) in rows:
            n += 1
            total += int(json.loads(blob).get("output_tokens") or 0)
        return n, (total / n if n else 0.0)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
