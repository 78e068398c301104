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
    stratum: Callable[[dict[str, Any]], str | None] = _tier, groups: dict[str, str] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Each stratum (``stratum(row)``: the task's tier or label; one stratum when it gives None) split
    by the fractions, in a seeded order that depends on neither the input order nor the other strata.

    ``groups`` (id -> cluster key) keeps each cluster of near duplicates in one split: the unit shuffled
    and assigned is the cluster (in the stratum of its first id), and a split takes whole clusters until
    it holds its share of the stratum's records (a large cluster may take it a little past). With no
    groups, or only clusters of one, this is the record-by-record split."""
    units: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["id"]):
        units[(groups or {}).get(row["id"], row["id"])].append(row)
    by_tier: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for unit in sorted(units.values(), key=lambda u: u[0]["id"]):
        by_tier[stratum(unit[0]) or ""].append(unit)
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for tier in sorted(by_tier):
        group = by_tier[tier]
        random.Random(f"{seed}:{tier}").shuffle(group)
        counts = allocate(sum(len(u) for u in group), fractions)
        filled = {s: 0 for s in SPLITS}
        for unit in group:
            target = next((s for s in ("test", "val") if filled[s] < counts[s]), "train")
            out[target].extend(unit)
            filled[target] += len(unit)
    for s in SPLITS:
        random.Random(f"{seed}:{s}").shuffle(out[s])
    return out


def same_group_links(rows: list[dict[str, Any]], group: Callable[[dict[str, Any]], str | None]
                     ) -> list[tuple[int, int, float]]:
    """Pairs (first row of the group, row, 1.0) joining the rows of each group (``group(row)``; None: a
    row on its own), in the shape of near-duplicate pairs, so both can feed one connected-components pass."""
    first: dict[str, int] = {}
    links = []
    for i, row in enumerate(rows):
        key = group(row)
        if key is not None and first.setdefault(key, i) != i:
            links.append((first[key], i, 1.0))
    return links


#: what a split row carries besides id and messages: the task's computed label fields, and gold
_CARRIED = ("tier", "overall", "scores", "labels", "gold", "gold_agrees")


def to_chat(row: dict[str, Any], spec=None) -> dict[str, Any]:
    """A label row as a training example: the oracle's prompt, then its validated answer as the
    assistant turn, with the task's label fields (``spec.labelled``) for evaluation."""
    assistant = json.dumps(row["label"], ensure_ascii=False)
    fields = spec.labelled(row["label"], row) if spec is not None else row
    carried = {k: fields[k] for k in fields if k != "label" and (spec is not None or k in _CARRIED)}
    carried.update({k: row[k] for k in ("gold", "gold_agrees", "reviewed") if k in row})
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
