"""Seeded, tier-stratified train / val / test split with a balance report and a leakage check.

Each example is written in chat format (system, user, assistant) where the user message is exactly the
prompt the oracle was sent and the assistant message is the validated oracle JSON: the student learns
to read what the oracle read and answer what the oracle answered.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable
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


def _tier(row: dict[str, Any]) -> str | None:
    return row.get("tier")


def stratified_split(
    rows: list[dict[str, Any]], fractions: dict[str, float], seed: int,
    stratum: Callable[[dict[str, Any]], str | None] = _tier,
    group: Callable[[dict[str, Any]], str | None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Each stratum (``stratum(row)``: the task's tier or label; one stratum when it gives None) split
    by the fractions, in a seeded order that depends on neither the input order nor the other strata.
    With ``group``, rows of one group (a generate task's topic: they share a prompt) go to the same
    split, the fractions counting groups (a row whose group is None is a group of its own)."""
    by_tier: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["id"]):
        by_tier[stratum(row) or ""].append(row)
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for tier in sorted(by_tier):
        units: dict[tuple[str, Any], list[dict[str, Any]]] = {}  # in id order of their first row
        for i, row in enumerate(by_tier[tier]):
            key = group(row) if group is not None else None
            units.setdefault(("row", i) if key is None else ("group", key), []).append(row)
        order = list(units.values())
        random.Random(f"{seed}:{tier}").shuffle(order)
        counts = allocate(len(order), fractions)
        bounds = {"test": (0, counts["test"]), "val": (counts["test"], counts["test"] + counts["val"]),
                  "train": (counts["test"] + counts["val"], len(order))}
        for s, (lo, hi) in bounds.items():
            out[s].extend(row for unit in order[lo:hi] for row in unit)
    for s in SPLITS:
        random.Random(f"{seed}:{s}").shuffle(out[s])
    return out


#: what a split row carries besides id and messages: the task's computed label fields, and gold
_CARRIED = ("tier", "overall", "scores", "labels", "gold", "gold_agrees")


def to_chat(row: dict[str, Any], spec=None) -> dict[str, Any]:
    """A label row as a training example: the oracle's prompt, then its validated answer as the
    assistant turn, with the task's label fields (``spec.labelled``) for evaluation."""
    assistant = json.dumps(row["label"], ensure_ascii=False)
    fields = spec.labelled(row["label"], row) if spec is not None else row
    carried = {k: fields[k] for k in fields if k != "label" and (spec is not None or k in _CARRIED)}
    carried.update({k: row[k] for k in ("gold", "gold_agrees") if k in row})
    return {
        "id": row["id"],
        **carried,
        "messages": [*row["messages"], {"role": "assistant", "content": assistant}],
    }


def balance_report(
    splits: dict[str, list[dict[str, Any]]], tiers: list[str], min_share: float, max_share: float,
    stratum: Callable[[dict[str, Any]], str | None] = _tier, what: str = "tier",
) -> dict[str, Any]:
    total = Counter(stratum(r) for rows in splits.values() for r in rows)
    n = sum(total.values())
    per_split = {s: {t: sum(1 for r in rows if stratum(r) == t) for t in tiers} for s, rows in splits.items()}
    shares = {t: (total[t] / n if n else 0.0) for t in tiers}
    violations = []
    for t in tiers:
        if shares[t] < min_share:
            violations.append(f"{what} {t} is {shares[t]:.0%} of the data (below {min_share:.0%})")
        elif shares[t] > max_share:
            violations.append(f"{what} {t} is {shares[t]:.0%} of the data (above {max_share:.0%})")
    return {"counts": per_split, "shares": {t: round(v, 4) for t, v in shares.items()}, "violations": violations}


def leakage(splits: dict[str, list[dict[str, Any]]]) -> int:
    """Number of user prompts (normalised) that occur in more than one split."""
    seen: dict[str, set[str]] = defaultdict(set)
    for s, rows in splits.items():
        for r in rows:
            seen[text_hash(r["messages"][1]["content"])].add(s)
    return sum(1 for where in seen.values() if len(where) > 1)
