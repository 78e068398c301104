"""What a reviewer looks at: every labelled record with what is known about it.

Read from the pipeline's files (paths from ``params.yaml``): the label stage's rows and invalid records,
the label files in ``merge.extra_dir`` (other oracles; rows whose ``oracle`` starts with ``gold`` or
``human`` are gold answers), and once a student exists its predictions and tier confusion. Written
against a row's ``label`` and the task's JSON schema, not against rubric fields: a row's category is
its ``tier`` when the task computes one, else the first categorical field of its answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill import jsonl
from distill.config import read_params, section
from distill.filterspec import FilterSpec, load_filter_at
from distill.merge import answer_hash

GOLD_PREFIXES = ("gold", "human")

#: table filters: flag -> what it means (shown in the filter form)
FLAGS = {
    "reasked": "re-asked (attempts > 1)",
    "invalid": "validation failure (no valid answer)",
    "gold_disagrees": "disagrees with gold",
    "oracles_disagree": "oracles disagree",
    "student_error": "student's error",
}


@dataclass
class Item:
    id: str
    #: the label row reviewed (None for an invalid record: no answer to review)
    row: dict[str, Any] | None
    invalid: dict[str, Any] | None = None
    others: list[dict[str, Any]] = field(default_factory=list)
    gold: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    #: the student's predicted category and the oracle's, from the evaluation's confusion rows
    confusion: dict[str, Any] | None = None
    flags: set[str] = field(default_factory=set)

    @property
    def key(self) -> str | None:
        return answer_hash(self.row["label"]) if self.row else None

    @property
    def label(self) -> dict[str, Any] | None:
        return self.row["label"] if self.row else None

    @property
    def oracle(self) -> str:
        return (self.row or self.invalid or {}).get("oracle", "")

    @property
    def title(self) -> str:
        return (self.row or {}).get("title") or ""

    @property
    def messages(self) -> list[dict[str, str]]:
        return (self.row or self.invalid or {}).get("messages") or []

    @property
    def user_text(self) -> str:
        """The text the oracle read: the first user message, exactly as sent."""
        return next((m["content"] for m in self.messages if m.get("role") == "user"), "")

    @property
    def attempts(self) -> int:
        if self.row:
            return int(self.row.get("attempts") or 1)
        return len((self.invalid or {}).get("attempts") or [])


class Dataset:
    """The records of one project, loaded once; :meth:`reload` after the pipeline ran again."""

    def __init__(self, params_path: str | Path = "params.yaml"):
        self.params_path = Path(params_path)
        self.reload()

    def reload(self) -> None:
        params = read_params(self.params_path)
        ref = section(params, "filter", self.params_path)
        self.spec: FilterSpec = load_filter_at(ref.root, ref.name, ref.version)
        self.schema: dict[str, Any] = self.spec.json_schema
        self.label_dir = Path(section(params, "label", self.params_path).output_dir)
        merge = section(params, "merge", self.params_path)
        self.extra_dir = Path(merge.extra_dir)
        self.reviews_path = Path(merge.reviews)
        self.eval_dir = Path(section(params, "evaluate", self.params_path).output_dir)
        self.items: dict[str, Item] = {}
        for row in _read(self.label_dir / "labels.jsonl"):
            self.items.setdefault(row["id"], Item(row["id"], row))
        for row in _read(self.label_dir / "invalid.jsonl"):
            self.items.setdefault(row["id"], Item(row["id"], None, invalid=row))
        for path in sorted(self.extra_dir.glob("*.jsonl")) if self.extra_dir.is_dir() else []:
            for row in _read(path):
                if "label" not in row:
                    continue
                item = self.items.get(row["id"])
                if str(row.get("oracle", "")).startswith(GOLD_PREFIXES):
                    if item is not None:
                        item.gold = item.gold or row
                elif item is None:
                    self.items[row["id"]] = Item(row["id"], row)
                elif item.row is None:  # another oracle answered what this one could not
                    item.row = row
                else:
                    item.others.append(row)
        for p in _read(self.eval_dir / "predictions.jsonl"):
            if p.get("id") in self.items:
                self.items[p["id"]].prediction = p
        confusion = self.eval_dir / "confusion.json"
        if confusion.is_file():
            for c in json.loads(confusion.read_text(encoding="utf-8")):
                if c.get("id") in self.items:
                    self.items[c["id"]].confusion = c
        for item in self.items.values():
            item.flags = self._flags(item)

    # ------------------------------------------------------------------ the task, generically
    def category(self, answer: dict[str, Any] | None) -> str | None:
        """What an answer amounts to: the tier the task computes from it, else its first categorical
        field's value (an enum, a boolean or a short string), else None."""
        if answer is None:
            return None
        try:
            labelled = self.spec.labelled(answer)
        except (KeyError, TypeError, ValueError):
            labelled = {}
        if labelled.get("tier") is not None:
            return str(labelled["tier"])
        for name in categorical_fields(self.schema):
            if name in answer:
                return str(answer[name])
        return None

    def row_category(self, row: dict[str, Any] | None) -> str | None:
        if row is None:
            return None
        return str(row["tier"]) if row.get("tier") is not None else self.category(row.get("label"))

    def disagree(self, a: dict[str, Any], b: dict[str, Any]) -> bool:
        """Two answers disagree when their categories differ (or, without one, any criterion differs)."""
        ca, cb = self.category(a), self.category(b)
        if ca is not None or cb is not None:
            return ca != cb
        return any(a.get(c) != b.get(c) for c in criteria(self.schema))

    def _flags(self, item: Item) -> set[str]:
        flags = set()
        if item.invalid is not None:
            flags.add("invalid")
        if item.attempts > 1 and item.row is not None:
            flags.add("reasked")
        if item.row is None:
            return flags
        if item.gold is not None and self.disagree(item.label, item.gold["label"]):
            flags.add("gold_disagrees")
        if any(self.disagree(item.label, o["label"]) for o in item.others):
            flags.add("oracles_disagree")
        if item.prediction is not None and self.student_error(item):
            flags.add("student_error")
        return flags

    def student_category(self, item: Item) -> str | None:
        if item.confusion is not None:
            return item.confusion.get("predicted")
        if item.prediction is not None and item.prediction.get("scores") is None:
            return "invalid"
        return None

    def student_error(self, item: Item) -> bool:
        predicted = self.student_category(item)
        return predicted is not None and predicted != self.row_category(item.row)

    # ------------------------------------------------------------------ views
    def ordered(self) -> list[Item]:
        return list(self.items.values())

    def categories(self) -> list[str]:
        seen = {self.row_category(i.row) for i in self.items.values()} - {None}
        order = getattr(self.spec, "tier_names", [])
        return [c for c in order if c in seen] + sorted(seen - set(order))

    def oracles(self) -> list[str]:
        return sorted({i.oracle for i in self.items.values() if i.oracle})

    def boundaries(self) -> list[float]:
        """Score thresholds between categories, when the task has them (a rubric's tiers)."""
        tiers = getattr(self.spec, "tiers", None) or []
        return [float(t.min_score) for t in tiers if t.min_score > 0]


def _read(path: Path) -> list[dict[str, Any]]:
    return list(jsonl.read_jsonl(path)) if path.is_file() else []


# ----------------------------------------------------------------------------- schema helpers
FREE_TEXT_MIN = 60  # a string field allowing more than this many characters is free text, not a criterion


def _is_categorical(prop: dict[str, Any]) -> bool:
    t = prop.get("type")
    if "enum" in prop or t == "boolean":
        return True
    return t == "string" and prop.get("maxLength", FREE_TEXT_MIN + 1) <= FREE_TEXT_MIN


def categorical_fields(schema: dict[str, Any]) -> list[str]:
    return [n for n, p in (schema.get("properties") or {}).items() if _is_categorical(p)]


def criteria(schema: dict[str, Any]) -> list[str]:
    """What a reviewer can rate one by one: every judged field of the answer (numbers, booleans,
    enums, short strings: a rubric's dimensions, a classifier's label, a requirement), not free text."""
    out = []
    for name, prop in (schema.get("properties") or {}).items():
        if prop.get("type") in ("integer", "number") or _is_categorical(prop):
            out.append(name)
    return out
