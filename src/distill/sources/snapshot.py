"""The source snapshot: a database's rows exactly as read, one JSON object per line, with their count
and SHA-256. DVC cannot depend on a database, so the snapshot stands in for it: an unchanged table gives
a byte-identical snapshot, and nothing downstream reruns (README, Input)."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from typing_extensions import Self

from distill import jsonl
from distill.sources.rows import jsonable


class SnapshotWriter:
    """Write rows atomically to ``path`` (bytes that were not UTF-8 written back as read), hashing them."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = path
        self._out = jsonl.AtomicWriter(path, errors="surrogateescape")
        self._sha = hashlib.sha256()
        self.rows = 0

    def write(self, data: dict[str, Any]) -> None:
        line = jsonl.dumps(jsonable(data))
        self._sha.update(line.encode("utf-8", "surrogateescape") + b"\n")
        self._out.write_line(line)
        self.rows += 1

    def summary(self) -> dict[str, Any]:
        return {"path": str(self.path), "rows": self.rows, "sha256": self._sha.hexdigest()}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._out.__exit__(exc_type, exc, tb)
