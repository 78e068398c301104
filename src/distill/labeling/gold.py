"""Golden answers check the oracle: what the label stage does with a record whose gold disagrees.

The engine compares each valid answer with the record's golden answer (``Task.gold_agrees``) and marks
the row (``gold``, ``gold_agrees``); :class:`GoldPolicy` then routes the rows that disagree, as
``label.on_gold_mismatch`` says, and counts what it did for ``metrics/label.json`` (``gold``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from distill.filterspec import FilterSpec


class GoldPolicy:
    """What happens to a valid label row whose record's golden answer the oracle disagrees with
    (``label.on_gold_mismatch``): the row, with the gold in the task's answer form as ``gold_label``,
    goes to gold_mismatch.jsonl; labels.jsonl keeps it (``keep``), leaves it out (``drop``), or gets the
    golden answer in the oracle's place (``keep_gold``; the oracle's kept as ``oracle_label``). A gold the
    task cannot put in the answer's place (an answer schema without ``answer_field``) leaves ``gold_label``
    null and the row as the oracle answered, and is not counted as replaced."""

    def __init__(self, spec: FilterSpec, policy: str) -> None:
        self.spec, self.policy = spec, policy
        self.counts: Counter[str] = Counter()

    def apply(self, row: dict[str, Any], apart) -> dict[str, Any] | None:
        if row.get("gold_agrees") is not False:
            return row
        golden = self.spec.with_gold(row, row["gold"])
        placed = golden is not row  # the task could put the gold in the answer's place
        apart({**row, "gold_label": golden["label"] if placed else None})
        self.counts["mismatched"] += 1
        if self.policy == "drop":
            self.counts["dropped"] += 1
            return None
        if self.policy == "keep_gold" and placed:
            self.counts["replaced"] += 1
            return {**golden, "oracle_label": row["label"], "gold_replaced": True}
        return row

    def metrics(self, stats) -> dict[str, Any]:
        checked, agreed = stats.gold_checked, stats.gold_agreed
        return {"checked": checked, "agreed": agreed, "share": round(agreed / checked, 4) if checked else None,
                "unusable": stats.gold_unusable, "on_mismatch": self.policy,
                **{k: self.counts[k] for k in ("mismatched", "dropped", "replaced")}}
