"""The batch runner's job ledger: every submitted batch job and its request ids, in SQLite next to the
response cache (``<cache_path>.batches.sqlite``, outside the DVC outputs like the cache). A job stays
open until its results are cached, so a rerun polls pending jobs instead of resubmitting them."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.providers.base import PENDING


def ledger_path(cache_path: str | Path) -> Path:
    return Path(f"{cache_path}.batches.sqlite")


# ----------------------------------------------------------------------------- the ledger
_LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    oracle TEXT NOT NULL,
    round INTEGER NOT NULL,
    state TEXT NOT NULL,
    collected INTEGER NOT NULL DEFAULT 0,
    items INTEGER NOT NULL,
    answered INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    reserved_usd REAL NOT NULL DEFAULT 0,
    input_file TEXT,
    detail TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS job_items (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX IF NOT EXISTS job_items_custom_id ON job_items (custom_id);
"""


@dataclass
class Job:
    job_id: str
    backend: str
    oracle: str
    round: int
    keys: list[str]
    reserved_usd: float = 0.0
    state: str = PENDING
    provider_state: str | None = None  # last seen while pending (kept in the ledger's detail)


class Ledger:
    """Submitted batch jobs and their request ids; a job stays open until its results are cached."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_LEDGER_SCHEMA)
        self._db.commit()

    def add(self, job: Job, input_file: str | None = None) -> None:
        now = time.time()
        with self._db:
            self._db.execute(
                "INSERT INTO jobs (job_id, backend, oracle, round, state, items, reserved_usd,"
                " input_file, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.job_id,
                    job.backend,
                    job.oracle,
                    job.round,
                    job.state,
                    len(job.keys),
                    job.reserved_usd,
                    input_file,
                    now,
                    now,
                ),
            )
            self._db.executemany(
                "INSERT INTO job_items (job_id, seq, custom_id) VALUES (?, ?, ?)",
                [(job.job_id, i, k) for i, k in enumerate(job.keys)],
            )

    def open_jobs(self) -> list[Job]:
        rows = self._db.execute(
            "SELECT job_id, backend, oracle, round, reserved_usd, state, detail FROM jobs"
            " WHERE collected = 0 ORDER BY created_at"
        ).fetchall()
        jobs = []
        for job_id, backend, oracle, rnd, reserved, state, detail in rows:
            keys = [
                k
                for (k,) in self._db.execute(
                    "SELECT custom_id FROM job_items WHERE job_id = ? ORDER BY seq", (job_id,)
                )
            ]
            jobs.append(Job(job_id, backend, oracle, rnd, keys, reserved, state, detail))
        return jobs

    def set_state(self, job_id: str, state: str, detail: str | None = None) -> None:
        with self._db:
            self._db.execute(
                "UPDATE jobs SET state = ?, detail = COALESCE(?, detail), updated_at = ?"
                " WHERE job_id = ?",
                (state, detail, time.time(), job_id),
            )

    def close_job(
        self, job_id: str, state: str, answered: int, failed: int, detail: str | None
    ) -> None:
        with self._db:
            self._db.execute(
                "UPDATE jobs SET state = ?, collected = 1, answered = ?, failed = ?, detail = ?,"
                " updated_at = ? WHERE job_id = ?",
                (state, answered, failed, detail, time.time(), job_id),
            )

    def max_round(self) -> int:
        return self._db.execute("SELECT COALESCE(MAX(round), 0) FROM jobs").fetchone()[0]

    def jobs(self) -> list[dict[str, Any]]:
        cur = self._db.execute("SELECT * FROM jobs ORDER BY created_at")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def close(self) -> None:
        self._db.close()
