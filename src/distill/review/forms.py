"""The task's JSON schema as an HTML form, and a submitted form back into an answer.

One field per top-level property: integers and numbers as number inputs, booleans and enums as
selects, strings as text areas, arrays of strings one item per line, anything else as JSON. Parsing
keeps what the reviewer typed when it is not of the field's type (``"abc"`` stays a string), so the
schema validator, not the form, says what is wrong; the message is shown and nothing is saved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from distill.validate import Invalid, check

FIELD_PREFIX = "f_"


@dataclass
class FormField:
    name: str
    kind: str  # integer | number | boolean | enum | text | lines | json
    value: str
    required: bool
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    options: list[str] = field(default_factory=list)

    @property
    def input_name(self) -> str:
        return FIELD_PREFIX + self.name


def _kind(prop: dict[str, Any]) -> str:
    t = prop.get("type")
    if "enum" in prop:
        return "enum"
    if t in ("integer", "number", "boolean"):
        return t
    if t == "string":
        return "text"
    if t == "array" and (prop.get("items") or {}).get("type") == "string":
        return "lines"
    return "json"


def _show(kind: str, value: Any) -> str:
    if value is None:
        return ""
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "lines":
        return "\n".join(str(v) for v in value) if isinstance(value, list) else str(value)
    if kind == "json":
        return json.dumps(value, ensure_ascii=False, indent=1)
    return str(value)


def form_fields(schema: dict[str, Any], answer: dict[str, Any] | None) -> list[FormField]:
    required = set(schema.get("required") or [])
    fields = []
    for name, prop in (schema.get("properties") or {}).items():
        kind = _kind(prop)
        fields.append(FormField(
            name=name, kind=kind, value=_show(kind, (answer or {}).get(name)), required=name in required,
            description=prop.get("description", ""), minimum=prop.get("minimum"), maximum=prop.get("maximum"),
            max_length=prop.get("maxLength"), options=[_show("boolean", o) if isinstance(o, bool) else str(o)
                                                       for o in prop.get("enum", [])],
        ))
    return fields


def _number(text: str, integer: bool) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text  # the validator says "'abc' is not of type 'integer'"
    return int(value) if integer and value.is_integer() else value


def parse_form(schema: dict[str, Any], form: dict[str, str]) -> dict[str, Any]:
    """The answer a submitted form describes. An empty field is left out (the validator reports a
    required one as missing)."""
    answer: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        raw = form.get(FIELD_PREFIX + name)
        if raw is None:
            continue
        kind = _kind(prop)
        text = raw.strip() if kind != "text" else raw.replace("\r\n", "\n")
        if text == "" and kind != "text" or kind == "text" and text.strip() == "":
            continue
        if kind in ("integer", "number"):
            answer[name] = _number(text, kind == "integer")
        elif kind == "boolean":
            answer[name] = {"true": True, "false": False}.get(text.lower(), text)
        elif kind == "enum":
            answer[name] = next((o for o in prop["enum"] if _show("boolean", o) == text or str(o) == text), text)
        elif kind == "lines":
            answer[name] = [line.strip() for line in text.splitlines() if line.strip()]
        elif kind == "json":
            try:
                answer[name] = json.loads(text)
            except json.JSONDecodeError:
                answer[name] = text
        else:
            answer[name] = text
    return answer


def validation_error(schema: dict[str, Any], answer: dict[str, Any]) -> str | None:
    """The schema validator's message for an answer, None when it is valid."""
    outcome = check(json.dumps(answer, ensure_ascii=False), schema)
    return outcome.detail if isinstance(outcome, Invalid) else None
