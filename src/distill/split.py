"""Seeded, tier-stratified train / val / test split with a balance report and a leakage check.

Each example is written in chat format (system, user, assistant) where the user message is exactly the
prompt the oracle was sent and the assistant message is the validated oracle JSON: the student learns
to read what the oracle read and answer what the oracle answered.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from typing import Any

from distill.merge import text_hash

SPLITS = ("train", "val", "test")


def allocate(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """How many of ``n`` items go to each split; at least one test item whenever n >= 3."""
    test = round(n * fractions["test"])
    val = round(n * fractions["val"])
    if n >= 3 and fractions["test"] > 0 and test == 0:
        test = 1
    if n >= 3 and fractions["val"] > 0 and val == 0 and n - test >= 3:
        val = 1
    test, val = min(test, n), min(val, max(0, n - test))
    return {"train": n - test - val, "val": val, "test": test}


def stratified_split(
    rows: list[dict[str, Any]], fractions: dict[str, float], seed: int
) -> dict[str, list[dict[str, Any]]]:
    by_tier: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["id"]):
        by_tier[row["tier"]].append(row)
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for tier in sorted(by_tier):
        group = by_tier[tier]
        random.Random(f"{seed}:{tier}").shuffle(group)
        counts = allocate(len(group), fractions)
        out["test"].extend(group[: counts["test"]])
        out["val"].extend(group[counts["test"] : counts["test"] + counts["val"]])
        out["train"].extend(group[counts["test"] + counts["val"] :])
    for s in SPLITS:
        random.Random(f"{seed}:{s}").shuffle(out[s])
    return out


def to_chat(row: dict[str, Any]) -> dict[str, Any]:
    assistant = json.dumps(row["label"], ensure_ascii=False)
    return {
        "id": row["id"],
        "tier": row["tier"],
        "overall": row["overall"],
        "scores": row["scores"],
        "messages": [*row["messages"], {"role": "assistant", "content": assistant}],
    }


def balance_report(
    splits: dict[str, list[dict[str, Any]]], tiers: list[str], min_share: float, max_share: float
) -> dict[str, Any]:
    total = Counter(r["tier"] for rows in splits.values() for r in rows)
    n = sum(total.values())
    per_split = {s: {t: sum(1 for r in rows if r["tier"] == t) for t in tiers} for s, rows in splits.items()}
    shares = {t: (total[t] / n if n else 0.0) for t in tiers}
    violations = []
    for t in tiers:
        if shares[t] < min_share:
            violations.append(f"tier {t} is {shares[t]:.0%} of the data (below {min_share:.0%})")
        elif shares[t] > max_share:
            violations.append(f"tier {t} is {shares[t]:.0%} of the data (above {max_share:.0%})")
    return {"counts": per_split, "shares": {t: round(v, 4) for t, v in shares.items()}, "violations": violations}


def leakage(splits: dict[str, list[dict[str, Any]]]) -> int:
    """Number of user prompts (normalised) that occur in more than one split."""
    seen: dict[str, set[str]] = defaultdict(set)
    for s, rows in splits.items():
        for r in rows:
            seen[text_hash(r["messages"][1]["content"])].add(s)
    return sum(1 for where in seen.values() if len(where) > 1)
