"""Combine label files and drop exact duplicates by a normalised-text hash.

Normalisation (Unicode NFKC, case-folded, punctuation removed, whitespace collapsed) makes copies that
differ only in quotes, case or spacing collide. The first occurrence is kept; each drop records the id it
duplicates, so nothing disappears without a trace. The overall score and tier are recomputed from the
current filter, so changing weights or thresholds needs no new oracle call.

Reviews (``data/reviews/reviews.jsonl``) apply first: a reviewer's corrected answer replaces the
oracle's, and a record marked incorrect is dropped or kept apart (``merge.incorrect``).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from distill.filterspec import FilterSpec

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return _NON_WORD.sub(" ", text).strip()


def text_hash(text: str) -> str:
    return normalised_hash(normalise(text))


def normalised_hash(norm: str) -> str:
    """:func:`text_hash` of a text already normalised."""
    return hashlib.blake2b(norm.encode("utf-8"), digest_size=16).hexdigest()


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
    """The row with its computed label fields (scores, overall and tier; labels...) recomputed from the
    current filter."""
    return {**row, **spec.labelled(row["label"], row)}


# ----------------------------------------------------------------------------- reviews
# A review (data/reviews/reviews.jsonl, exported by `distill review`) is about one answer: it names the
# record and the hash of the answer the reviewer saw. A relabelled record has another answer, so its old
# review no longer applies (it is counted as stale) and the record needs review again.
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def answer_hash(answer: Any) -> str:
    """A stable hash of an answer (a row's ``label``): the canonical JSON, blake2b, 16 hex bytes."""
    return hashlib.blake2b(_CANONICAL.encode(answer).encode("utf-8"), digest_size=16).hexdigest()


def review_key(row: dict[str, Any]) -> tuple[str, str]:
    return row["id"], answer_hash(row["label"])


def apply_reviews(
    rows: Iterable[dict[str, Any]], reviews: dict[tuple[str, str], dict[str, Any]], counts: Counter[str],
    matched: set[tuple[str, str]],
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``("keep", row)`` or ``("rejected", row)``: a corrected answer replaces the oracle's (the
    row keeps the oracle's in ``oracle_label``), a row marked incorrect without a correction is rejected.
    ``counts`` gets corrected / confirmed / rejected rows, ``matched`` the keys of the reviews that applied."""
    for row in rows:
        key = review_key(row)
        review = reviews.get(key)
        if review is None:
            yield "keep", row
            continue
        matched.add(key)
        corrected = review.get("corrected")
        if corrected is not None:
            counts["corrected"] += 1
            yield "keep", {**row, "label": corrected, "oracle_label": row["label"], "reviewed": "corrected"}
        elif review.get("is_correct") is False:
            counts["rejected"] += 1
            yield "rejected", {**row, "reviewed": "incorrect", "review_note": review.get("note", "")}
        elif review.get("is_correct") is True:
            counts["confirmed"] += 1
            yield "keep", {**row, "reviewed": "correct"}
        else:
            yield "keep", row
