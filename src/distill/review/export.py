"""Reviews out of the store: ``data/reviews/reviews.jsonl`` (merge's input) and ``metrics/review.json``.

``reviews.jsonl`` holds every stored review, sorted by record id and answer hash, so the file changes
only when a review does (and DVC reruns merge only then). ``metrics/review.json`` is the reviewers'
estimate of the oracle's precision over the current answers: the share reviewed, the share marked
correct with a Wilson 95% interval (over all reviews, and over those from a random sample, the only
unbiased one), per oracle and per criterion, and how the student agrees with what reviewers accepted.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from distill import jsonl
from distill.review.dataset import Dataset, Item
from distill.review.store import Review, ReviewStore

METRICS_PATH = Path("metrics/review.json")
Z95 = 1.959964


def wilson(successes: int, n: int, z: float = Z95) -> list[float] | None:
    """The Wilson score interval of a proportion (sensible at 0, at n and for small n); None for n = 0."""
    if n == 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def _share(k: int, n: int) -> float | None:
    return round(k / n, 4) if n else None


def _precision(verdicts: list[bool]) -> dict[str, Any]:
    n, k = len(verdicts), sum(verdicts)
    return {"reviewed": n, "correct": k, "precision": _share(k, n), "precision_ci95": wilson(k, n)}


def current_reviews(dataset: Dataset, store: ReviewStore) -> list[tuple[Item, Review]]:
    """(item, review) for every record whose current answer has a review."""
    by_key = {(r.record_id, r.answer_hash): r for r in store.all()}
    return [(i, by_key[(i.id, i.key)]) for i in dataset.ordered() if i.row is not None and (i.id, i.key) in by_key]


def review_stats(dataset: Dataset, store: ReviewStore) -> dict[str, Any]:
    pairs = current_reviews(dataset, store)
    answered = [i for i in dataset.ordered() if i.row is not None]
    judged = [(i, r) for i, r in pairs if r.is_correct is not None]
    verdicts = [bool(r.is_correct) for _, r in judged]
    stats: dict[str, Any] = {
        "records": len(answered),
        "reviewed": len(judged),
        "share_reviewed": _share(len(judged), len(answered)),
        "incorrect": len(verdicts) - sum(verdicts),
        "corrected": sum(1 for _, r in pairs if r.corrected is not None),
        "notes": sum(1 for _, r in pairs if r.note.strip()),
        "stale": len(store.all()) - len(pairs),
        **{k: v for k, v in _precision(verdicts).items() if k != "reviewed"},
        "random_sample": _precision([bool(r.is_correct) for _, r in judged if r.source == "random"]),
    }
    by_oracle: dict[str, list[bool]] = {}
    for i, r in judged:
        by_oracle.setdefault(i.oracle, []).append(bool(r.is_correct))
    stats["by_oracle"] = {o: _precision(v) for o, v in sorted(by_oracle.items())}
    rated: dict[str, Counter[str]] = {}
    for _, r in pairs:
        for name, value in r.criteria.items():
            rated.setdefault(name, Counter())[value] += 1
    stats["criteria"] = {name: {"ok": c["ok"], "wrong": c["wrong"], "share_ok": _share(c["ok"], c["ok"] + c["wrong"])}
                         for name, c in sorted(rated.items())}
    stats["student"] = _student_agreement(dataset, pairs)
    return stats


def accepted_answer(item: Item, review: Review) -> dict[str, Any] | None:
    """What the reviewer says the answer is: the correction, the oracle's answer if marked correct, else
    unknown (marked incorrect without a correction)."""
    if review.corrected is not None:
        return review.corrected
    return item.label if review.is_correct else None


def _student_agreement(dataset: Dataset, pairs: list[tuple[Item, Review]]) -> dict[str, Any]:
    """How often the student's category is the one reviewers accepted, next to how often it is the
    oracle's (on the same reviewed records with a student prediction)."""
    n = agree_reviewed = agree_oracle = 0
    for item, review in pairs:
        predicted = dataset.student_category(item)
        truth = accepted_answer(item, review)
        if predicted is None or truth is None:
            continue
        n += 1
        agree_reviewed += predicted == dataset.category(truth)
        agree_oracle += predicted == dataset.row_category(item.row)
    return {"reviewed_with_prediction": n, "agrees_with_reviewed": _share(agree_reviewed, n),
            "agrees_with_oracle": _share(agree_oracle, n)}


def export(dataset: Dataset, store: ReviewStore, reviews_path: str | Path | None = None,
           metrics_path: str | Path = METRICS_PATH) -> dict[str, Any]:
    """Write ``reviews.jsonl`` (atomically) and ``metrics/review.json``; return the metrics."""
    path = Path(reviews_path) if reviews_path is not None else dataset.reviews_path
    jsonl.write_jsonl(path, (r.to_json() for r in store.all()))
    stats = review_stats(dataset, store)
    jsonl.write_json(metrics_path, stats)
    return stats


def import_file(store: ReviewStore, path: str | Path) -> int:
    """Load a committed ``reviews.jsonl`` into the store (reviews it lacks); returns how many were added."""
    p = Path(path)
    if not p.is_file():
        return 0
    return store.import_reviews([Review.from_json(row) for row in jsonl.read_jsonl(p)])
