"""Small, dependable JSONL and JSON file helpers shared by every stage."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from typing_extensions import Self

_LINE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(obj: Any) -> str:
    """One canonical JSON line: UTF-8 text kept as is, no trailing newline."""
    return _LINE.encode(obj)


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield the objects of a JSONL file written by this project (trusted, so no quarantine)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def _remove_stale_temp_files(path: Path) -> None:
    """Temporary files a killed writer of ``path`` left behind (its pid no longer runs)."""
    for stale in path.parent.glob(_tmp_prefix(path) + "*"):
        pid = stale.name.removeprefix(_tmp_prefix(path)).split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                stale.unlink(missing_ok=True)
            except PermissionError:  # another user's live process
                pass


class AtomicWriter:
    """Write a file under a temporary name and move it into place on success.

    A stage killed half way never leaves a truncated output that looks complete. The temporary file
    is named after the writer's pid (``.<name>.tmp-<pid>.<random>``), so the next writer of the same
    output removes what a killed one left; the finished file gets the mode a plain ``open`` would
    have given it (0666 less the umask), not the temporary file's 0600.
    """

    def __init__(self, path: str | os.PathLike, errors: str = "strict"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temp_files(self.path)
        fd, tmp = tempfile.mkstemp(prefix=f"{_tmp_prefix(self.path)}{os.getpid()}.", dir=self.path.parent)
        os.fchmod(fd, 0o666 & ~_umask())
        self._tmp = Path(tmp)
        # errors="surrogateescape" writes bytes that were not UTF-8 back as they were read (source snapshots)
        self._fh = os.fdopen(fd, "w", encoding="utf-8", errors=errors, newline="\n")
        self.count = 0

    def write(self, obj: Any) -> None:
        self._fh.write(_LINE.encode(obj) + "\n")
        self.count += 1

    def write_line(self, line: str) -> None:
        """Write one already-encoded JSON line (no trailing newline)."""
        self._fh.write(line + "\n")
        self.count += 1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._fh.close()
        if exc_type is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    with AtomicWriter(path) as out:
        for row in rows:
            out.write(row)
        return out.count


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write a small JSON document (metrics, reports) atomically, pretty-printed and key-sorted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{_tmp_prefix(path)}{os.getpid()}")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
