"""Question answering: the record's text is a question; the oracle answers it (with its reasoning first
when ``reasoning: true``) under the task's answer schema (``{"answer": string}`` unless filter.yaml gives
``answer_schema:``) or the record's own (an ``answer_schema`` column: a JSON schema, or its JSON text).

Answers are compared (oracle with gold, student with oracle or gold, oracle with oracle) by the value of
``answer_field`` (the whole answer but ``reasoning`` when the schema has no such field), in the mode
``gold.compare`` names:

- ``exact``: the same text once normalised (NFKC, case-folded, whitespace collapsed, quotes and dashes
  made plain, punctuation and symbols at the ends stripped: ``"Paris."`` is ``"paris"``);
- ``numeric``: the same final number: the first number after the last ``####`` (GSM8K's marker), else
  the last number in the text; thousands separators and trailing zeros do not matter (``#### 1,600``,
  ``1600`` and ``$1,600.00`` are one answer);
- ``choice``: the same choice letter A-E: the whole answer (``"B"``, ``"(b)"``, ``"B."``), else the
  last ``answer is B`` / ``answer: (B)`` / ``option B``, else the last ``(B)``, else a leading ``B)`` /
  ``B.``.

A value the mode cannot read (no number, no letter) is never equal to anything; ``check`` feeds that
back to the oracle. (An oracle-judged equivalence is not offered: it would need the oracle in the
evaluate stage, which by design asks no one.)
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from functools import cached_property, lru_cache
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from distill.errors import InputError
from distill.tasks.base import Strict, Task, normalise_text, share

_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")
_WHOLE_CHOICE = re.compile(r"^\s*\(?([A-Ea-e])\)?[.:]?\s*$")
_PAREN_CHOICE = re.compile(r"\(([A-E])\)")
_SAID_CHOICE = re.compile(r"(?i:answer(?:\s+is)?|option|choice)\s*[:\-]?\s*\(?([A-E])\b")
_LEADING_CHOICE = re.compile(r"^\s*([A-E])[).:]\s")
GSM8K_MARKER = "####"

DEFAULT_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"answer": {"type": "string", "minLength": 1}},
                                  "required": ["answer"], "additionalProperties": False}


class AnswerGold(Strict):
    compare: Literal["exact", "numeric", "choice"] = "exact"


class AnswerTask(Task):
    KIND: ClassVar[str] = "answer"
    TEMPLATE_FIELDS: ClassVar[frozenset[str]] = frozenset({"answer_schema"})
    HEADLINE: ClassVar[tuple[str, ...]] = ("n_test", "valid_json_share", "accuracy")
    FLOOR: ClassVar[tuple[str, ...]] = ("answer_agreement",)

    kind: Literal["answer"]
    #: ask for a ``reasoning`` string before the answer (kept in the answer, never compared)
    reasoning: bool = False
    reasoning_max_chars: int = Field(default=2000, ge=20)
    #: the answer's JSON schema (a JSON object); a record's own ``answer_schema`` wins
    answer_schema: dict[str, Any] | None = None
    #: the answer's property that is compared
    answer_field: str = "answer"
    gold: AnswerGold = AnswerGold()

    @model_validator(mode="after")
    def _check(self) -> AnswerTask:
        if self.answer_schema is not None:
            problem = schema_issue(self.answer_schema, self.reasoning)
            if problem:
                raise ValueError(f"answer_schema: {problem}")
            props = self.answer_schema.get("properties") or {}
            if self.answer_field not in props:
                raise ValueError(f"answer_field {self.answer_field!r} is not a property of answer_schema; set "
                                 f"answer_field to one of: {', '.join(props) or '(none)'}")
        return self

    @property
    def compare(self) -> str:
        return self.gold.compare

    # ----------------------------------------------------------------- schema
    @cached_property
    def json_schema(self) -> dict[str, Any]:
        return _with_reasoning(json.dumps(self.answer_schema or DEFAULT_SCHEMA),
                               self.reasoning_max_chars if self.reasoning else 0)

    def schema_for(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record's own ``answer_schema`` (with ``reasoning`` added as the task asks), else the task's.
        A record whose schema is not a JSON schema of an object is an :class:`InputError` naming it."""
        own = record.get("answer_schema")
        if own is None:
            return self.json_schema
        text = own if isinstance(own, str) else json.dumps(own)
        schema, problem = _own_schema(text, self.reasoning_max_chars if self.reasoning else 0)
        if problem:
            raise InputError(f"record {record.get('id')!r}: answer_schema {problem}; fix that column, or unmap "
                             "prefilter.field_map.answer_schema")
        return schema

    def template_values(self, record: dict[str, Any]) -> dict[str, Any]:
        return {"answer_schema": json.dumps(self.schema_for(record), ensure_ascii=False)}

    # ----------------------------------------------------------------- one answer
    def final_text(self, answer: dict[str, Any]) -> str:
        """The compared part of an answer as text: ``answer_field``'s value, else the answer without
        its reasoning (its only value, or its JSON)."""
        if self.answer_field in answer:
            value = answer[self.answer_field]
        else:
            rest = {k: v for k, v in answer.items() if k != "reasoning"}
            value = next(iter(rest.values())) if len(rest) == 1 else rest
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)

    def normal_form(self, text: Any) -> str | None:
        """What the comparison sees of a text (an answer's or a gold's); None when it reads nothing."""
        if isinstance(text, dict):
            text = self.final_text(text)
        elif not isinstance(text, str):
            text = json.dumps(text)
        if self.compare == "numeric":
            return final_number(text)
        if self.compare == "choice":
            return choice_letter(text)
        return normalise_text(text) or None

    def same(self, a: Any, b: Any) -> bool:
        fa = self.normal_form(a)
        return fa is not None and fa == self.normal_form(b)

    def check(self, answer: dict[str, Any], record: dict[str, Any]) -> str | None:
        if self.compare == "exact" or self.normal_form(self.final_text(answer)) is not None:
            return None
        if self.compare == "numeric":
            return "no number found in the answer: give the final answer as a number (digits)"
        return "no choice letter (A-E) found in the answer: answer with the letter of one choice"

    def labelled(self, answer: dict[str, Any], record: dict[str, Any] | None = None) -> dict[str, Any]:
        """The answer as kept, its compared part as text (``answer_text``) and the record's own schema
        when it has one (so split rows carry it to the student)."""
        out = {"label": answer, "answer_text": self.final_text(answer)}
        if record is not None and record.get("answer_schema") is not None:
            out["answer_schema"] = record["answer_schema"]
        return out

    def summary(self) -> str:
        extra = ", with reasoning" if self.reasoning else ""
        return f"answer: {self.compare} comparison of {self.answer_field!r}{extra}"

    # ----------------------------------------------------------------- gold
    def gold_agrees(self, row: dict[str, Any], gold: Any) -> bool | None:
        if self.normal_form(gold) is None:
            return None
        return self.same(row["answer_text"], gold)

    def with_gold(self, row: dict[str, Any], gold: Any) -> dict[str, Any]:
        """The gold in the answer's ``answer_field`` (the canonical number or letter in those modes, as
        a number when the schema asks for one); with reasoning, the gold's own (the text before
        ``####``), else an empty string, so no reasoning argues for another answer."""
        value = self.normal_form(gold)
        props = self.schema_for(row).get("properties") or {}
        if value is None or self.answer_field not in props:
            return row
        if self.compare == "exact":
            value = (self.final_text(gold) if isinstance(gold, dict) else str(gold)).strip()
        elif self.compare == "numeric" and props[self.answer_field].get("type") in ("number", "integer"):
            number = Decimal(value)
            value = int(number) if number == number.to_integral_value() else float(number)
        answer = {**row["label"], self.answer_field: value}
        if self.reasoning:
            text = gold if isinstance(gold, str) else ""
            answer["reasoning"] = text.rsplit(GSM8K_MARKER, 1)[0].strip() if GSM8K_MARKER in text else ""
        return {**row, **self.labelled(answer, row)}

    # ----------------------------------------------------------------- evaluation
    def evaluate(self, truth: list[dict[str, Any]], predictions: list[dict[str, Any]]
                 ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        """The share of test items whose answer equals the truth's (``accuracy``; an invalid answer is
        wrong), the valid-answer share, and per item the two normal forms (the confusion rows)."""
        by_id = {p["id"]: p for p in predictions}
        rows, right, valid = [], 0, 0
        for ex in truth:
            answer = by_id.get(ex["id"], {}).get("answer")
            actual = self.normal_form(ex["answer_text"])
            if answer is None:
                predicted = "invalid"
            else:
                valid += 1
                predicted = self.normal_form(self.final_text(answer))
                right += predicted is not None and predicted == actual
            rows.append({"id": ex["id"], "actual": actual or "-", "predicted": predicted or "-"})
        n = len(truth)
        accuracy = share(right, n)
        metrics = {"n_test": n, "valid_json_share": share(valid, n), "accuracy": accuracy,
                   "accuracy_valid_only": share(right, valid), "compare": self.compare}
        return metrics, rows, [{"name": f"accuracy ({self.compare})", "value": accuracy, "metric": "accuracy"}]

    def agreement(self, first: dict[str, dict[str, Any]], second: dict[str, dict[str, Any]],
                  order: list[str]) -> dict[str, Any]:
        ids = [i for i in order if i in first and i in second]
        same = sum(self.same(first[i]["answer_text"], second[i]["answer_text"]) for i in ids)
        return {"n": len(ids), "answer_agreement": share(same, len(ids)), "compare": self.compare}


# ----------------------------------------------------------------------------- reading answers
def final_number(text: str) -> str | None:
    """The final number of a text as a canonical decimal string (``"1600"``, ``"-2.5"``): the first
    after the last ``####``, else the last one; None when there is none."""
    if GSM8K_MARKER in text:
        found = _NUMBER.search(text.rsplit(GSM8K_MARKER, 1)[1])
    else:
        found = None
        for found in _NUMBER.finditer(text):
            pass
    if found is None:
        return None
    try:
        number = Decimal(found.group(0).replace(",", ""))
    except InvalidOperation:
        return None
    canonical = format(number.normalize(), "f")
    return "0" if canonical in ("-0", "0") else canonical


def choice_letter(text: str) -> str | None:
    """The choice letter (A-E) an answer gives, None when it gives none (the rules in the module's doc)."""
    for pattern, pick in ((_WHOLE_CHOICE, 0), (_SAID_CHOICE, -1), (_PAREN_CHOICE, -1), (_LEADING_CHOICE, 0)):
        found = pattern.findall(text)
        if found:
            return found[pick].upper()
    return None


def schema_issue(schema: Any, reasoning: bool) -> str | None:
    """Why ``schema`` cannot be an answer's schema (None when it can)."""
    from distill.validate import schema_problem

    problem = schema_problem(schema, object_root=True)
    if problem is None and reasoning and "reasoning" in (schema.get("properties") or {}):
        return "has its own 'reasoning' property while the task adds one (reasoning: true); rename it"
    return problem


@lru_cache(maxsize=1024)
def _own_schema(text: str, reasoning_max_chars: int) -> tuple[dict[str, Any] | None, str | None]:
    """A record's schema (JSON text) ready to ask for, or what is wrong with it; checked once per
    distinct schema, however many records bring it."""
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"is not JSON ({e.msg} at column {e.colno})"
    problem = schema_issue(schema, bool(reasoning_max_chars))
    return (None, problem) if problem else (_with_reasoning(text, reasoning_max_chars), None)


@lru_cache(maxsize=256)
def _with_reasoning(schema_json: str, reasoning_max_chars: int) -> dict[str, Any]:
    """The schema with a ``reasoning`` string first (0: as it is); one object per distinct schema, so
    the validator and the providers compile it once."""
    schema = json.loads(schema_json)
    if not reasoning_max_chars:
        return schema
    props = {"reasoning": {"type": "string", "maxLength": reasoning_max_chars}, **(schema.get("properties") or {})}
    return {**schema, "properties": props, "required": ["reasoning", *schema.get("required", [])]}
