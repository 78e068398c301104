"""Extraction: the oracle lists the typed spans of a text (entities: ``type`` from the task's entity
types, ``text`` as it appears in the text) and, optionally, typed document fields (``fields:`` name ->
JSON-schema snippet: a date, an amount, a category).

``check`` feeds back every entity whose text is not in the record's title or text (case-insensitive,
whitespace-normalised; ``require_spans_in_text``). The evaluation is entity-level precision, recall and
F1, per type and micro / macro, under two matches:

- **exact**: same type and the same normalised text (NFKC, case-folded, whitespace collapsed, quotes and
  dashes made plain, punctuation at the ends stripped);
- **partial**: same type, and one text's words appear, in order and contiguous, in the other's ("Blair"
  in "Tony Blair"), or the two share at least half of their distinct words (Jaccard overlap of the word
  sets >= 0.5: "Bank of England" and "England's central bank" do not, "Labour party" and "the Labour
  party" do). Each entity matches at most one other: the count is a maximum one-to-one matching.

An entity is a (type, normalised text) pair, counted once per record however often it is listed.
Fields are scored by exact value (strings normalised as above). An invalid answer extracts nothing.
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from distill.tasks.base import Strict, Task, mean, normalise_text, share

_TYPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_WORD = re.compile(r"\w+")
#: the share of shared words (Jaccard) from which two texts of one type match partially
PARTIAL_OVERLAP = 0.5
#: the type-confusion rows' placeholders: a true entity nobody predicted, a predicted one nobody wrote
MISSED, SPURIOUS = "(missed)", "(spurious)"


class EntityType(Strict):
    name: str
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _TYPE_NAME.match(v):
            raise ValueError(f"entity type {v!r} must start with a letter and hold only letters, digits, _ and -")
        return v


class ExtractGold(Strict):
    """When a record's golden entities agree with the oracle's: an F1 (exact or partial match) of at
    least ``min_f1`` between the two (1.0: the same entities)."""

    match: Literal["exact", "partial"] = "exact"
    min_f1: float = Field(default=1.0, gt=0, le=1)


class ExtractTask(Task):
    KIND: ClassVar[str] = "extract"
    TEMPLATE_FIELDS: ClassVar[frozenset[str]] = frozenset({"entity_types", "entity_type_names", "fields"})
    HEADLINE: ClassVar[tuple[str, ...]] = ("n_test", "valid_json_share", "exact_f1", "partial_f1",
                                           "exact_macro_f1", "partial_macro_f1")
    FLOOR: ClassVar[tuple[str, ...]] = ("exact_f1", "partial_f1")

    kind: Literal["extract"]
    entity_types: list[EntityType] = Field(min_length=1)
    #: document-level values asked for besides the entities: name -> JSON-schema snippet
    fields: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: feed back (and re-ask about) an entity whose text is not in the record's title or text
    require_spans_in_text: bool = True
    max_entities: int = Field(default=100, ge=1)
    gold: ExtractGold = ExtractGold()

    @model_validator(mode="after")
    def _check(self) -> ExtractTask:
        from distill.validate import schema_problem

        problems = []
        names = [t.name for t in self.entity_types]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"duplicate entity type(s): {', '.join(dupes)}")
        for name, snippet in self.fields.items():
            if not _FIELD_NAME.match(name) or name == "entities":
                problems.append(f"fields: {name!r} must be snake_case and not 'entities'")
            problem = schema_problem(snippet)
            if problem:
                problems.append(f"fields.{name}: {problem}")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def type_names(self) -> list[str]:
        return [t.name for t in self.entity_types]

    # ----------------------------------------------------------------- prompt and answer
    def template_values(self, record: dict[str, Any]) -> dict[str, Any]:
        types = "\n".join(f"- {t.name}: {t.description}" if t.description else f"- {t.name}"
                          for t in self.entity_types)
        fields = "\n".join(f"- {name}: {snippet.get('description', '')} (JSON schema: "
                           f"{json.dumps({k: v for k, v in snippet.items() if k != 'description'})})"
                           for name, snippet in self.fields.items())
        return {"entity_types": types, "entity_type_names": ", ".join(self.type_names), "fields": fields}

    @cached_property
    def json_schema(self) -> dict[str, Any]:
        entity = {"type": "object",
                  "properties": {"type": {"enum": self.type_names}, "text": {"type": "string", "minLength": 1}},
                  "required": ["type", "text"], "additionalProperties": False}
        props: dict[str, Any] = {"entities": {"type": "array", "items": entity, "maxItems": self.max_entities},
                                 **self.fields}
        return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}

    def check(self, answer: dict[str, Any], record: dict[str, Any]) -> str | None:
        if not self.require_spans_in_text:
            return None
        haystack = normalise_text(f"{record.get('title') or ''}\n{record['text']}", ends=False)
        missing = [e for e in answer["entities"] if normalise_text(e["text"], ends=False) not in haystack]
        if not missing:
            return None
        listed = "; ".join(f"{e['text']!r} ({e['type']})" for e in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        return (f"not found in the text: {listed}{more}. Give each entity's text exactly as it is written in "
                "the text, or leave it out")

    def labelled(self, answer: dict[str, Any], record: dict[str, Any] | None = None) -> dict[str, Any]:
        """The answer as kept, its ``entities`` once each (first spelling kept, in the answer's order)
        and its ``fields``."""
        seen: set[tuple[str, str]] = set()
        entities = []
        for e in answer["entities"]:
            key = (e["type"], normalise_text(e["text"]))
            if key not in seen and key[1]:
                seen.add(key)
                entities.append({"type": e["type"], "text": e["text"]})
        return {"label": answer, "entities": entities, "fields": {k: answer.get(k) for k in self.fields}}

    def summary(self) -> str:
        fields = f"; fields: {', '.join(self.fields)}" if self.fields else ""
        return f"extract: {', '.join(self.type_names)}{fields}"

    # ----------------------------------------------------------------- gold
    def gold_entities(self, gold: Any) -> list[dict[str, str]] | None:
        """A golden answer as entities: a list of ``{"type", "text"}``, a mapping type -> list of texts,
        either under an ``entities`` key, or their JSON text; types are matched case-insensitively. None
        when it is none of these or names a type the task does not have."""
        if isinstance(gold, str):
            try:
                gold = json.loads(gold)
            except json.JSONDecodeError:
                return None
        if isinstance(gold, dict) and "entities" in gold:
            gold = gold["entities"]
        if isinstance(gold, dict):
            gold = [{"type": t, "text": x} for t, texts in gold.items()
                    for x in (texts if isinstance(texts, list) else [texts])]
        if not isinstance(gold, list):
            return None
        by_folded = {t.casefold(): t for t in self.type_names}
        out = []
        for e in gold:
            if not isinstance(e, dict) or not isinstance(e.get("text"), str) or not isinstance(e.get("type"), str):
                return None
            kind = by_folded.get(e["type"].casefold())
            if kind is None:
                return None
            out.append({"type": kind, "text": e["text"]})
        return out

    def gold_agrees(self, row: dict[str, Any], gold: Any) -> bool | None:
        entities = self.gold_entities(gold)
        if entities is None:
            return None
        counts = self.counts([entities], [row["entities"]])[self.gold.match]
        return _prf(*_totals(counts))["f1"] >= self.gold.min_f1

    def with_gold(self, row: dict[str, Any], gold: Any) -> dict[str, Any]:
        entities = self.gold_entities(gold)
        if entities is None:
            return row
        return {**row, **self.labelled({**row["label"], "entities": entities}, row)}

    # ----------------------------------------------------------------- evaluation
    def counts(self, truth: list[list[dict[str, str]]], predicted: list[list[dict[str, str]] | None]
               ) -> dict[str, dict[str, list[int]]]:
        """Per match (``exact``, ``partial``) and type: [true positives, predicted, true] summed over
        records; ``None`` in ``predicted`` extracts nothing."""
        out = {m: {t: [0, 0, 0] for t in self.type_names} for m in ("exact", "partial")}
        for true_list, pred_list in zip(truth, predicted):
            for t in self.type_names:
                a = _texts(true_list, t)
                b = _texts(pred_list or [], t)
                for match, tp in (("exact", len(set(a) & set(b))), ("partial", _max_matching(a, b))):
                    slot = out[match][t]
                    slot[0] += tp
                    slot[1] += len(b)
                    slot[2] += len(a)
        return out

    def _scores(self, truth: list[list[dict[str, str]]], predicted: list[list[dict[str, str]] | None]
                ) -> dict[str, Any]:
        counts = self.counts(truth, predicted)
        out: dict[str, Any] = {}
        per_type: dict[str, dict[str, Any]] = {t: {} for t in self.type_names}
        for match, by_type in counts.items():
            micro = _prf(*_totals(by_type))
            for t, (tp, n_pred, n_true) in by_type.items():
                per_type[t][match] = _prf(tp, n_pred, n_true)
                per_type[t]["support"] = n_true
            out.update({f"{match}_precision": micro["precision"], f"{match}_recall": micro["recall"],
                        f"{match}_f1": micro["f1"],
                        f"{match}_macro_f1": mean([per_type[t][match]["f1"] for t in self.type_names])})
        out["per_type"] = per_type
        return out

    def evaluate(self, truth: list[dict[str, Any]], predictions: list[dict[str, Any]]
                 ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        by_id = {p["id"]: p for p in predictions}
        answers = [by_id.get(ex["id"], {}).get("answer") for ex in truth]
        predicted = [self.labelled(a)["entities"] if a is not None else None for a in answers]
        true_lists = [ex["entities"] for ex in truth]
        n = len(truth)
        metrics: dict[str, Any] = {"n_test": n, "valid_json_share": share(sum(a is not None for a in answers), n),
                                   "n_entities": sum(len(_keys(t)) for t in true_lists),
                                   **self._scores(true_lists, predicted)}
        if self.fields:
            metrics["field_accuracy"] = {
                name: share(sum(a is not None and _same_value(a.get(name), ex["fields"].get(name))
                                for a, ex in zip(answers, truth)), n)
                for name in self.fields}
        rows = [row for ex, p in zip(truth, predicted) for row in _confusion(ex["id"], ex["entities"], p)]
        per_type = [{"name": t, "value": metrics["per_type"][t]["exact"]["f1"], "metric": "f1"}
                    for t in self.type_names]
        return metrics, rows, per_type

    def agreement(self, first: dict[str, dict[str, Any]], second: dict[str, dict[str, Any]],
                  order: list[str]) -> dict[str, Any]:
        """Entity F1 of the second oracle against the first (F1 is symmetric), exact and partial."""
        ids = [i for i in order if i in first and i in second]
        scores = self._scores([first[i]["entities"] for i in ids], [second[i]["entities"] for i in ids])
        return {"n": len(ids), **scores}


# ----------------------------------------------------------------------------- matching
def _keys(entities: list[dict[str, str]]) -> set[tuple[str, str]]:
    return {(e["type"], text) for e in entities if (text := normalise_text(e["text"]))}


def _texts(entities: list[dict[str, str]], kind: str) -> list[str]:
    """The distinct normalised texts of one type, in order."""
    return list(dict.fromkeys(t for e in entities if e["type"] == kind and (t := normalise_text(e["text"]))))


def partial_match(a: str, b: str) -> bool:
    """Two normalised texts of one type match partially: equal, one's words contiguous in the
    other's, or a Jaccard overlap of their word sets of at least :data:`PARTIAL_OVERLAP`."""
    if a == b:
        return True
    wa, wb = _WORD.findall(a), _WORD.findall(b)
    if not wa or not wb:
        return False
    short, long = (wa, wb) if len(wa) <= len(wb) else (wb, wa)
    if any(long[i : i + len(short)] == short for i in range(len(long) - len(short) + 1)):
        return True
    sa, sb = set(wa), set(wb)
    return len(sa & sb) / len(sa | sb) >= PARTIAL_OVERLAP


def _max_matching(truth: list[str], predicted: list[str]) -> int:
    """The size of a maximum one-to-one matching under :func:`partial_match` (augmenting paths)."""
    edges = [[j for j, p in enumerate(predicted) if partial_match(t, p)] for t in truth]
    owner: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for j in edges[i]:
            if j not in seen:
                seen.add(j)
                if j not in owner or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return sum(augment(i, set()) for i in range(len(truth)))


def _totals(by_type: dict[str, list[int]]) -> tuple[int, int, int]:
    return (sum(v[0] for v in by_type.values()), sum(v[1] for v in by_type.values()),
            sum(v[2] for v in by_type.values()))


def _prf(tp: int, n_pred: int, n_true: int) -> dict[str, float]:
    """Precision, recall and F1; with nothing predicted precision is 1, with nothing to find recall is
    1 (so a type with neither has F1 1: nothing to get wrong)."""
    precision = tp / n_pred if n_pred else 1.0
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return normalise_text(a) == normalise_text(b)
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _confusion(rid: str, truth: list[dict[str, str]], predicted: list[dict[str, str]] | None
               ) -> list[dict[str, str]]:
    """Type confusion of one record, by normalised text: the same text with the same type, with
    another type, only true (``(missed)``) or only predicted (``(spurious)``)."""
    true_keys, pred_keys = sorted(_keys(truth)), sorted(_keys(predicted or []))
    rows = [{"id": rid, "actual": t, "predicted": t} for t, x in true_keys if (t, x) in pred_keys]
    left_true = [(t, x) for t, x in true_keys if (t, x) not in pred_keys]
    left_pred = [(t, x) for t, x in pred_keys if (t, x) not in true_keys]
    for t, x in left_true:
        other = next((p for p in left_pred if p[1] == x), None)
        if other is not None:
            left_pred.remove(other)
        rows.append({"id": rid, "actual": t, "predicted": other[0] if other else MISSED})
    rows.extend({"id": rid, "actual": SPURIOUS, "predicted": t} for t, _ in left_pred)
    return rows
