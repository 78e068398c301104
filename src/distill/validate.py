"""Parse and validate an oracle answer against the filter's JSON schema.

``check(text, schema)`` returns the parsed object or a :class:`Invalid` whose ``feedback`` is what the
oracle is told in the follow-up message when it is re-asked.

Speed: jsonschema is the judge, but it costs about 100 µs per answer for a filter's flat schema, which
is a large share of the label stage's CPU time at thousands of answers a second. So a flat object
schema (typed, bounded scalar properties, ``required``, ``additionalProperties``) is also compiled to a
plain-Python pre-check that can only say "surely valid": when it does, jsonschema is skipped; when it
does not (or the schema uses anything else), jsonschema decides and writes the error messages, exactly
as before. Validators are looked up by schema object (and checked for equality with a snapshot, so a
mutated schema is recompiled) instead of serialising the schema on every call.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
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


# ----------------------------------------------------------------------------- the fast pre-check
_SCALAR_KEYS = frozenset({"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                          "minLength", "maxLength", "title", "description"})
_OBJECT_KEYS = frozenset({"type", "properties", "required", "additionalProperties", "title", "description",
                          "$schema"})


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scalar_check(prop: Any) -> Callable[[Any], bool] | None:
    """``value -> surely valid`` for one property schema, or None when it is not a bounded scalar."""
    if not isinstance(prop, dict) or not set(prop) <= _SCALAR_KEYS:
        return None
    kind = prop.get("type")
    bounds = [prop.get(k) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")]
    lengths = [prop.get(k) for k in ("minLength", "maxLength")]
    if not all(b is None or _number(b) for b in bounds) or not all(n is None or type(n) is int for n in lengths):
        return None
    lo, hi, xlo, xhi = bounds
    if kind in ("integer", "number"):
        if any(n is not None for n in lengths):
            return None
        # bool is not a number in JSON schema; a float with an integral value is an integer there, but
        # the pre-check leaves such rare answers to jsonschema (it only ever says "surely valid")
        types = (int,) if kind == "integer" else (int, float)

        def check_number(v: Any) -> bool:
            return (type(v) in types and (lo is None or v >= lo) and (hi is None or v <= hi)
                    and (xlo is None or v > xlo) and (xhi is None or v < xhi))

        return check_number
    if kind == "string":
        if any(b is not None for b in bounds):
            return None
        min_len, max_len = lengths

        def check_string(v: Any) -> bool:
            return type(v) is str and (min_len is None or len(v) >= min_len) and (max_len is None or len(v) <= max_len)

        return check_string
    if kind == "boolean" and all(b is None for b in bounds) and all(n is None for n in lengths):
        return lambda v: type(v) is bool
    return None


def compile_precheck(schema: Any) -> Callable[[Any], bool] | None:
    """A plain-Python check for a flat object schema that returns True only for objects that satisfy it
    (False means "ask jsonschema"), or None when the schema uses a keyword it does not handle."""
    if not isinstance(schema, dict) or schema.get("type") != "object" or not set(schema) <= _OBJECT_KEYS:
        return None
    props = schema.get("properties", {})
    required = schema.get("required", [])
    extra = schema.get("additionalProperties", True)
    if not isinstance(props, dict) or not isinstance(required, list) or extra not in (True, False):
        return None
    if not all(isinstance(r, str) for r in required):
        return None
    checks = {}
    for name, prop in props.items():
        fn = _scalar_check(prop)
        if fn is None:
            return None
        checks[name] = fn
    required_t = tuple(required)
    closed = extra is False

    def precheck(obj: Any) -> bool:
        if type(obj) is not dict:
            return False
        for name in required_t:
            if name not in obj:
                return False
        for name, value in obj.items():
            fn = checks.get(name)
            if fn is None:
                if closed:
                    return False
            elif not fn(value):
                return False
        return True

    return precheck


_COMPILED: dict[int, tuple[dict[str, Any], Draft202012Validator, Callable[[Any], bool] | None, Any]] = {}


def _compiled(schema: dict[str, Any]) -> tuple[Any, Draft202012Validator, Callable[[Any], bool] | None]:
    """(snapshot, jsonschema validator, pre-check) for a schema object; rebuilt if it changed."""
    hit = _COMPILED.get(id(schema))
    if hit is not None and hit[3] is schema and hit[0] == schema:
        return hit[0], hit[1], hit[2]
    snapshot = copy.deepcopy(schema)
    entry = (snapshot, _validator(json.dumps(schema, sort_keys=True)), compile_precheck(snapshot), schema)
    if len(_COMPILED) >= 64:
        _COMPILED.clear()
    _COMPILED[id(schema)] = entry  # the entry holds the schema, so its id cannot be reused meanwhile
    return entry[0], entry[1], entry[2]


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
    if finish_reason in ("refusal", "content_filter"):
        return Invalid("refusal", f"the answer was withheld ({finish_reason}); rate the article as instructed")
    if text is None or not text.strip():
        return Invalid("empty", "the answer was empty")
    try:
        obj = json.loads(extract_json(text))
    except json.JSONDecodeError as e:
        if finish_reason == "length":
            return Invalid("truncated", "the answer was cut off at the token limit before the JSON ended; be shorter")
        return Invalid("bad_json", f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})")
    _, validator, precheck = _compiled(schema)
    if precheck is not None and precheck(obj):
        return obj
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        parts = []
        for err in errors[:5]:
            where = "/".join(str(p) for p in err.absolute_path) or "(root)"
            parts.append(f"at {where}: {err.message}")
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return Invalid("schema", "; ".join(parts) + more)
    return obj


def schema_problem(schema: Any, object_root: bool = False) -> str | None:
    """Why ``schema`` is not a JSON schema (draft 2020-12) an answer can be checked against, None when it
    is; ``object_root``: the answer must be a JSON object (what every provider's structured output asks
    for), so the schema must say ``type: object``."""
    from jsonschema.exceptions import SchemaError

    if not isinstance(schema, dict):
        return f"expected a JSON schema (a mapping), got {type(schema).__name__}"
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        return f"not a valid JSON schema at {where}: {e.message}"
    if object_root and schema.get("type") != "object":
        return f"the answer must be a JSON object: the schema needs type: object at the top, got {schema.get('type')!r}"
    return None
