"""Reviews, durably: SQLite in WAL mode with ``synchronous=FULL``, one row per (record id, answer hash).

A review is about one answer: the key holds the hash of the oracle answer the reviewer saw, so a
relabelled record (another answer) has no review and shows as needing one again; the old review stays
in the store. Each save is one transaction committed before the app answers, so a review the app
acknowledged survives the process being killed (WAL + FULL: also an operating-system crash).

The store also keeps the review queue (what ``--sample`` picked, in order) and the oracle's repair
proposals awaiting acceptance.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reviews (
    record_id TEXT NOT NULL,
    answer_hash TEXT NOT NULL,
    is_correct INTEGER CHECK (is_correct IN (0, 1)),
    criteria TEXT NOT NULL DEFAULT '{}',
    corrected TEXT,
    note TEXT NOT NULL DEFAULT '',
    reviewer TEXT NOT NULL DEFAULT '',
    oracle TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL,
    PRIMARY KEY (record_id, answer_hash)
);
CREATE TABLE IF NOT EXISTS queue (
    position INTEGER PRIMARY KEY,
    record_id TEXT NOT NULL,
    strategy TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS repairs (
    record_id TEXT NOT NULL,
    answer_hash TEXT NOT NULL,
    instruction TEXT NOT NULL,
    proposed TEXT NOT NULL,
    cost_usd REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    PRIMARY KEY (record_id, answer_hash)
);
"""

CRITERION_VALUES = ("ok", "wrong")


@dataclass
class Review:
    record_id: str
    answer_hash: str
    #: True: the oracle's answer is correct; False: it is not; None: not reviewed (a note may exist)
    is_correct: bool | None = None
    #: criterion (a rubric dimension, a requirement) -> "ok" | "wrong"
    criteria: dict[str, str] = field(default_factory=dict)
    #: the reviewer's answer (validated against the task's schema before it is saved), or None
    corrected: dict[str, Any] | None = None
    note: str = ""
    reviewer: str = ""
    oracle: str = ""
    #: how the record reached the reviewer: a sampling strategy, or "browse"
    source: str = ""
    updated_at: float = 0.0

    @property
    def empty(self) -> bool:
        return self.is_correct is None and self.corrected is None and not self.criteria and not self.note.strip()

    @property
    def content(self) -> tuple:
        return self.is_correct, self.criteria, self.corrected, self.note

    def to_json(self) -> dict[str, Any]:
        """The row of ``reviews.jsonl``."""
        d = asdict(self)
        return {"id": d.pop("record_id"), **d, "updated_at": round(self.updated_at, 3)}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Review:
        known = {k: row[k] for k in ("answer_hash", "is_correct", "criteria", "corrected", "note", "reviewer",
                                     "oracle", "source", "updated_at") if row.get(k) is not None}
        return cls(record_id=row["id"], **known)


def _from_row(row: sqlite3.Row) -> Review:
    return Review(
        record_id=row["record_id"], answer_hash=row["answer_hash"],
        is_correct=None if row["is_correct"] is None else bool(row["is_correct"]),
        criteria=json.loads(row["criteria"]),
        corrected=None if row["corrected"] is None else json.loads(row["corrected"]),
        note=row["note"], reviewer=row["reviewer"], oracle=row["oracle"], source=row["source"],
        updated_at=row["updated_at"],
    )


class ReviewStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()  # one connection, shared by the app's worker threads

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _all(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ reviews
    def get(self, record_id: str, answer_hash: str) -> Review | None:
        rows = self._all("SELECT * FROM reviews WHERE record_id = ? AND answer_hash = ?", (record_id, answer_hash))
        return _from_row(rows[0]) if rows else None

    def history(self, record_id: str) -> list[Review]:
        """Every review of the record, newest first (earlier answers included)."""
        return [_from_row(r) for r in self._all(
            "SELECT * FROM reviews WHERE record_id = ? ORDER BY updated_at DESC", (record_id,))]

    def all(self) -> list[Review]:
        return [_from_row(r) for r in self._all("SELECT * FROM reviews ORDER BY record_id, answer_hash")]

    def save(self, review: Review) -> Review:
        """Insert or replace the review of (record, answer), committed when this returns. An empty review
        (unreviewed, nothing noted) removes the row. ``updated_at`` changes only when the content does."""
        if review.is_correct is not None and not isinstance(review.is_correct, bool):
            raise ValueError("is_correct must be true, false or null")
        bad = {k: v for k, v in review.criteria.items() if v not in CRITERION_VALUES}
        if bad:
            raise ValueError(f"criteria must be rated {' or '.join(CRITERION_VALUES)}, got {bad}")
        with self._lock:
            cur = self._db.execute("SELECT * FROM reviews WHERE record_id = ? AND answer_hash = ?",
                                   (review.record_id, review.answer_hash)).fetchone()
            before = _from_row(cur) if cur else None
            if review.empty:
                self._db.execute("DELETE FROM reviews WHERE record_id = ? AND answer_hash = ?",
                                 (review.record_id, review.answer_hash))
                return review
            if before is not None and before.content == review.content:
                review.updated_at = before.updated_at
            else:
                review.updated_at = review.updated_at or time.time()
            self._db.execute(
                "INSERT OR REPLACE INTO reviews (record_id, answer_hash, is_correct, criteria, corrected, note, "
                "reviewer, oracle, source, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (review.record_id, review.answer_hash, None if review.is_correct is None else int(review.is_correct),
                 json.dumps(review.criteria, sort_keys=True),
                 None if review.corrected is None else json.dumps(review.corrected, ensure_ascii=False),
                 review.note, review.reviewer, review.oracle, review.source, review.updated_at),
            )
        return review

    def import_reviews(self, reviews: list[Review]) -> int:
        """Add reviews the store does not have (a teammate's, from a committed reviews.jsonl); returns how many."""
        added = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for r in reviews:
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO reviews (record_id, answer_hash, is_correct, criteria, corrected, "
                        "note, reviewer, oracle, source, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (r.record_id, r.answer_hash, None if r.is_correct is None else int(r.is_correct),
                         json.dumps(r.criteria, sort_keys=True),
                         None if r.corrected is None else json.dumps(r.corrected, ensure_ascii=False),
                         r.note, r.reviewer, r.oracle, r.source, r.updated_at or time.time()))
                    added += cur.rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return added

    # ------------------------------------------------------------------ queue
    def set_queue(self, record_ids: list[str], strategy: str) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM queue")
                self._db.executemany("INSERT INTO queue (position, record_id, strategy) VALUES (?, ?, ?)",
                                     [(i, rid, strategy) for i, rid in enumerate(record_ids)])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def queue(self) -> list[tuple[str, str]]:
        return [(r["record_id"], r["strategy"]) for r in self._all("SELECT * FROM queue ORDER BY position")]

    # ------------------------------------------------------------------ repair proposals
    def put_repair(self, record_id: str, answer_hash: str, instruction: str, proposed: dict[str, Any],
                   cost_usd: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO repairs (record_id, answer_hash, instruction, proposed, cost_usd, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (record_id, answer_hash, instruction, json.dumps(proposed, ensure_ascii=False), cost_usd, time.time()))

    def get_repair(self, record_id: str, answer_hash: str) -> dict[str, Any] | None:
        rows = self._all("SELECT * FROM repairs WHERE record_id = ? AND answer_hash = ?", (record_id, answer_hash))
        if not rows:
            return None
        r = rows[0]
        return {"instruction": r["instruction"], "proposed": json.loads(r["proposed"]), "cost_usd": r["cost_usd"]}

    def drop_repair(self, record_id: str, answer_hash: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM repairs WHERE record_id = ? AND answer_hash = ?", (record_id, answer_hash))

    def repair_cost(self) -> float:
        return float(self._all("SELECT COALESCE(SUM(cost_usd), 0) AS c FROM repairs")[0]["c"])
