"""The topic tree of a generate job: what the oracle is asked to split a topic into, and how its
answer is checked (distinct subtopics, each named)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distill.labeling.conversation import schema_validator
from distill.merge import normalise
from distill.validate import Invalid

TOPIC_SYSTEM = ("You organise a domain into topics for a synthetic training set: specific, distinct, and "
                "together covering the domain. Reply with one JSON object and nothing else.")
#: the topic of a tree of depth 0 (the domain itself)
WHOLE_DOMAIN = "general"


@dataclass
class Topic:
    path: tuple[str, ...]
    children: list[Topic] = field(default_factory=list)
    #: None: expanded, or a leaf by design; else why it was not expanded
    problem: str | None = None

    @property
    def name(self) -> str:
        return " > ".join(self.path) or WHOLE_DOMAIN

    def leaves(self) -> list[Topic]:
        return [leaf for c in self.children for leaf in c.leaves()] if self.children else [self]

    def lines(self, indent: int = 0) -> list[str]:
        label = self.path[-1] if self.path else "(domain)"
        note = f"  [not expanded: {self.problem}]" if self.problem else ""
        return [f"{'  ' * indent}{label}{note}"] + [ln for c in self.children for ln in c.lines(indent + 1)]


def expansion_messages(domain: str, path: tuple[str, ...], breadth: int) -> list[dict[str, str]]:
    where = " > ".join(path)
    ask = f'subtopics of "{path[-1]}" within this domain' if path else "subtopics of this domain"
    user = (f"Domain: {domain}\nTopic: {where or '(the whole domain)'}\n\n"
            f"List {breadth} distinct, specific {ask}, each a short phrase (at most eight words) that does "
            f'not repeat the topic\'s own name.\n\nReply with one JSON object {{"subtopics": [...]}} holding '
            f"{breadth} strings, and nothing else.")
    return [{"role": "system", "content": TOPIC_SYSTEM}, {"role": "user", "content": user}]


def expansion_schema(breadth: int) -> dict[str, Any]:
    return {"type": "object", "properties": {"subtopics": {
        "type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 120},
        "minItems": breadth, "maxItems": breadth}}, "required": ["subtopics"], "additionalProperties": False}


def distinct_subtopics(schema: dict[str, Any], breadth: int):
    validate_schema = schema_validator(schema)

    def validate(text: str | None, finish_reason: str | None):
        outcome = validate_schema(text, finish_reason)
        if isinstance(outcome, Invalid):
            return outcome
        seen: dict[str, str] = {}
        for name in outcome["subtopics"]:
            key = normalise(name)
            if not key:
                return Invalid("task", f"subtopic {name!r} has no words; give {breadth} named subtopics")
            if key in seen:
                return Invalid("task", f"subtopic {name!r} repeats {seen[key]!r}; give {breadth} different ones")
            seen[key] = name
        return outcome

    return validate
