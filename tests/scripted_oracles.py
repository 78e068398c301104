"""Deterministic oracles for the translate and generate tests: responders for ``FakeOpenAI``.

Each answers from the request alone (the prompt, the schema, the temperature, the turn), so a test
knows every answer in advance and can compute the metrics by hand.

Translate (:class:`Translator`): the "German" of a news item is ``"[de] "`` + its headline and lead;
scripted records answer the source unchanged first (re-asked, then right), a blank translation
always (invalid), or, asked again at temperature 0.7 (the oracle check's second pass), the same
translation without its last word.

Generate (:func:`generate_responder`): a topic tree ``solar`` / ``storage``, each with two leaves, and
three items per request for topic leaf L with k items listed so far: a new question (one of
:data:`QUESTIONS`, the k-th), the same question shouted (an exact duplicate after normalisation),
and a near duplicate of it (one word changed: Jaccard 0.8 over 3-word shingles) on the leaves of
:data:`NEAR_LEAVES`, else an item without its answer (schema-invalid). The first request of leaf
``panels`` with one item so far answers broken JSON first (a re-ask).
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.fakes.openai_server import Reply, first_user_message, turn

# ----------------------------------------------------------------------------- translate


def headline_and_lead(prompt: str) -> tuple[str, str]:
    head = re.search(r"^Headline: (.*)$", prompt, re.MULTILINE)
    lead = re.search(r"^Lead: (.*)$", prompt, re.MULTILINE)
    return (head.group(1).strip() if head else ""), (lead.group(1).strip() if lead else "")


def german(headline: str, lead: str) -> str:
    """The scripted oracle's translation."""
    return f"[de] {headline}\n\n{lead}"


class Translator:
    """``same_first``: headlines answered with the source unchanged at turn 0; ``blank``: always blank;
    ``shorter_second``: at temperature 0.7, the translation without its last word."""

    def __init__(self, same_first=(), blank=(), shorter_second=()):
        self.same_first, self.blank, self.shorter_second = set(same_first), set(blank), set(shorter_second)

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        headline, lead = headline_and_lead(first_user_message(body))
        if headline in self.blank:
            return {"translation": "   "}
        if headline in self.same_first and turn(body) == 0:
            return {"translation": f"{headline}\n\n{lead}"}
        text = german(headline, lead)
        if headline in self.shorter_second and body.get("temperature") == 0.7:
            text = text.rsplit(" ", 1)[0]
        return {"translation": text}


# ----------------------------------------------------------------------------- generate
TREE = {"": ["solar", "storage"], "solar": ["panels", "inverters"], "storage": ["batteries", "tanks"]}
LEAVES = ["solar > panels", "solar > inverters", "storage > batteries", "storage > tanks"]
NEAR_LEAVES = {"solar > panels", "storage > batteries"}
QUESTIONS = [
    "how much does a typical {x} installation cost for a family house",
    "which maintenance jobs keep the {x} working well for many years",
    "what public grants or subsidies can pay part of the {x} bill today",
    "how should an owner compare written quotes from {x} installers nearby",
]


def new_item(leaf: str, k: int) -> dict[str, str]:
    x = leaf.split(" > ")[-1]
    return {"question": QUESTIONS[k].format(x=x) + "?", "answer": f"It depends on the {x}; ask an installer."}


def shouted(item: dict[str, str]) -> dict[str, str]:
    return {"question": item["question"].upper().rstrip("?") + "?!", "answer": item["answer"]}


def near(item: dict[str, str]) -> dict[str, str]:
    words = item["question"].rstrip("?").split()
    return {"question": " ".join([*words[:-1], "home"]) + "?", "answer": item["answer"]}


def _topic(prompt: str) -> str:
    m = re.search(r"^Topic: (.*)$", prompt, re.MULTILINE)
    return m.group(1).strip() if m else ""


def so_far(prompt: str) -> int:
    """How many items the prompt lists as written already."""
    if "Items already written on this topic" not in prompt:
        return 0
    block = prompt.split("Items already written on this topic", 1)[1].split("\n\n", 1)[0]
    return sum(1 for line in block.splitlines() if line.startswith("- "))


def _schema(body: dict[str, Any]) -> dict[str, Any]:
    return (body.get("response_format") or {}).get("json_schema", {}).get("schema", {})


def generate_responder(body: dict[str, Any]):
    prompt = first_user_message(body)
    props = _schema(body).get("properties", {})
    topic = _topic(prompt)
    if "subtopics" in props:
        parent = "" if topic == "(the whole domain)" else topic.split(" > ")[-1]
        return {"subtopics": TREE[parent]}
    k = so_far(prompt)
    if topic == "solar > panels" and k == 1 and turn(body) == 0:
        return Reply(content='{"items": [{"question": "cut off')
    first = new_item(topic, k)
    third = near(first) if topic in NEAR_LEAVES else {"question": first["question"]}
    return {"items": [first, shouted(first), third]}


def items_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(json.dumps(r["label"])) for r in rows]
