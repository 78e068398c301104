"""Parse and validate an oracle answer against the filter's JSON schema.

``check(text, schema)`` returns the parsed object or a :class:`Invalid` whose ``feedback`` is what the
oracle is told in the follow-up message when it is re-asked.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


@dataclass(frozen=True)
class Invalid:
    reason: str  # stable code: empty, truncated, bad_json, schema
    detail: str

    @property
    def feedback(self) -> str:
        return (
            f"Your previous answer was not accepted ({self.reason}): {self.detail}. "
            "Reply again with only one JSON object that satisfies the schema, and nothing else."
        )


@lru_cache(maxsize=64)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json))


def validator_for(schema: dict[str, Any]) -> Draft202012Validator:
    return _validator(json.dumps(schema, sort_keys=True))


def extract_json(text: str) -> str:
    """The JSON object inside an answer: strips code fences and prose around a single object."""
    text = text.strip()
    m = _FENCE.match(text)
    if m:
        text = m.group(1).strip()
    first, last = text.find("{"), text.rfind("}")
    if first != -1 and last > first:
        return text[first : last + 1]
    return text


def check(text: str | None, schema: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any] | Invalid:
    if text is None or not text.strip():
        return Invalid("empty", "the answer was empty")
    try:
        obj = json.loads(extract_json(text))
    except json.JSONDecodeError as e:
        if finish_reason == "length":
            return Invalid("truncated", "the answer was cut off at the token limit before the JSON ended; be shorter")
        return Invalid("bad_json", f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})")
    errors = sorted(validator_for(schema).iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        parts = []
        for err in errors[:5]:
            where = "/".join(str(p) for p in err.absolute_path) or "(root)"
            parts.append(f"at {where}: {err.message}")
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return Invalid("schema", "; ".join(parts) + more)
    return obj
