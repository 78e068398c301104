"""``passed.jsonl`` split into shards for labelling in separate processes or machines (docs/scaling.md).

A record's shard is decided by its id alone (:func:`shard_of`), so it lands in the same shard on every
run and on every machine, whatever the other records are: adding records to the corpus moves none of
the others, and each shard's cached answers stay valid. Each line is copied as it is, in input order.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from distill.errors import ConfigError, InputError


def shard_of(record_id: str, shards: int) -> int:
    """The first 8 bytes of the SHA-256 of the id (UTF-8), as a big-endian integer, modulo ``shards``."""
    return int.from_bytes(hashlib.sha256(record_id.encode("utf-8")).digest()[:8], "big") % shards


def shard_path(shard_dir: str | Path, shard: int) -> Path:
    return Path(shard_dir) / str(shard) / "passed.jsonl"


def write_shards(input_path: str | Path, shard_dir: str | Path, shards: int) -> list[int]:
    """Write ``<shard_dir>/<i>/passed.jsonl`` for i in 0 .. shards-1 (an empty file for an empty shard) and
    return the number of records in each. Shard files of an earlier run with more shards are removed."""
    if shards < 1:
        raise ConfigError(f"the number of shards must be at least 1, got {shards}")
    src = Path(input_path)
    if not src.is_file():
        raise InputError(f"{src} not found: run the prefilter stage first")
    out = Path(shard_dir)
    paths = [shard_path(out, i) for i in range(shards)]
    temps = [p.with_name(f".{p.name}.tmp-{os.getpid()}") for p in paths]
    counts = [0] * shards
    handles = []
    try:
        for t in temps:
            t.parent.mkdir(parents=True, exist_ok=True)
            handles.append(open(t, "w", encoding="utf-8", newline="\n"))  # noqa: SIM115 (closed below)
        with open(src, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rid = json.loads(line)["id"]
                except (ValueError, KeyError, TypeError) as e:
                    raise InputError(f"{src}:{n}: not a record with an id ({e}); rerun the prefilter stage") from e
                i = shard_of(str(rid), shards)
                handles[i].write(line if line.endswith("\n") else line + "\n")
                counts[i] += 1
        for h in handles:
            h.close()
        for t, p in zip(temps, paths):
            os.replace(t, p)
    finally:
        for h in handles:
            h.close()
        for t in temps:
            t.unlink(missing_ok=True)
    for stale in out.iterdir():  # shards of an earlier run with more shards must not be labelled again
        if stale.is_dir() and stale.name.isdigit() and int(stale.name) >= shards:
            (stale / "passed.jsonl").unlink(missing_ok=True)
            if not any(stale.iterdir()):
                stale.rmdir()
    return counts


def label_files(extra_dir: str | Path, shards: list[int] | None) -> list[Path]:
    """The label files the merge stage reads from ``merge.extra_dir``: with ``shards``, each shard's
    ``shard-<i>.jsonl`` (every one required) and then the others; without, all of them, sorted. A
    ``shard-<n>.jsonl`` that ``shards`` does not name (left by an earlier run with more shards, or by a
    sharded run when labelling is no longer sharded) is refused: it would be merged as another oracle's."""
    extra = Path(extra_dir)
    found = sorted(extra.glob("*.jsonl")) if extra.is_dir() else []
    wanted = [extra / f"shard-{i}.jsonl" for i in shards or []]
    stale = [p for p in found if re.fullmatch(r"shard-\d+\.jsonl", p.name) and p not in wanted]
    if stale:
        raise InputError(f"{', '.join(map(str, stale))}: shard label file(s) that label.shards ({shards}) does not "
                         "name, left by an earlier sharded run; delete them, or set label.shards to match")
    for p in wanted:
        if not p.is_file():
            raise InputError(f"{p} not found: run the label_shards stage (python stages/label.py --shard "
                             f"{p.stem.removeprefix('shard-')})")
    return [*wanted, *(p for p in found if p not in wanted)]
