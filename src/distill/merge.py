"""Combine label files and drop exact duplicates by a normalised-text hash.

Normalisation (Unicode NFKC, case-folded, punctuation removed, whitespace collapsed) makes copies that
differ only in quotes, case or spacing collide. The first occurrence is kept; each drop records the id it
duplicates, so nothing disappears without a trace. The overall score and tier are recomputed from the
current filter, so changing weights or thresholds needs no new oracle call.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any

from distill.filterspec import FilterSpec

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return _NON_WORD.sub(" ", text).strip()


def text_hash(text: str) -> str:
    return hashlib.blake2b(normalise(text).encode("utf-8"), digest_size=16).hexdigest()


def dedup_exact(
    rows: Iterable[dict[str, Any]], text_of=lambda r: r["text"]
) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Yield ``(row, None)`` for a first occurrence, ``(row, drop_info)`` for a duplicate."""
    first: dict[str, str] = {}
    for row in rows:
        h = text_hash(text_of(row))
        if h in first:
            yield row, {"id": row["id"], "duplicate_of": first[h], "hash": h, "similarity": 1.0}
        else:
            first[h] = row["id"]
            yield row, None


def rescore(row: dict[str, Any], spec: FilterSpec) -> dict[str, Any]:
    """The row with its scores, overall and tier recomputed from the current filter."""
    return {**row, **spec.labelled(row["label"])}
