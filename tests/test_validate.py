"""Checking an oracle answer: extraction from fences and prose, stable failure reasons, feedback."""

from __future__ import annotations

import json

import pytest

from distill.validate import Invalid, check, extract_json

SCHEMA = {
    "type": "object",
    "properties": {
        "scale": {"type": "integer", "minimum": 0, "maximum": 10},
        "impact": {"type": "integer", "minimum": 0, "maximum": 10},
        "reasoning": {"type": "string", "minLength": 1, "maxLength": 50},
    },
    "required": ["scale", "impact", "reasoning"],
    "additionalProperties": False,
}
GOOD = {"scale": 7, "impact": 3, "reasoning": "A 40 MW farm is running."}
GOOD_JSON = json.dumps(GOOD)


@pytest.mark.parametrize("text", [
    GOOD_JSON,
    f"  {GOOD_JSON}\n",
    f"```json\n{GOOD_JSON}\n```",
    f"```\n{GOOD_JSON}\n```",
    f"Here is my rating:\n```json\n{GOOD_JSON}\n```\nLet me know if you need more.",
    f"Sure! {GOOD_JSON}",
    f"{GOOD_JSON}\n\nI gave scale 7 because the farm is running.",
    json.dumps(GOOD, indent=2),
])
def test_fences_and_prose_are_stripped(text):
    assert check(text, SCHEMA) == GOOD


def test_braces_inside_strings_survive():
    obj = GOOD | {"reasoning": "uses {braces} and }"}
    assert check(f"Answer: {json.dumps(obj)} done", SCHEMA) == obj


@pytest.mark.parametrize("text", [None, "", "   \n\t "])
def test_empty(text):
    got = check(text, SCHEMA)
    assert isinstance(got, Invalid) and got.reason == "empty"


def test_truncated_when_the_token_limit_cut_it():
    cut = GOOD_JSON[:-12]
    got = check(cut, SCHEMA, finish_reason="length")
    assert isinstance(got, Invalid) and got.reason == "truncated"
    assert "token limit" in got.detail
    # the same text without the length signal is just bad JSON
    assert check(cut, SCHEMA).reason == "bad_json"


def test_complete_answer_with_length_finish_is_still_accepted():
    assert check(GOOD_JSON, SCHEMA, finish_reason="length") == GOOD


def test_bad_json_reports_the_position():
    got = check('{"scale": 7,, "impact": 3, "reasoning": "x"}', SCHEMA)
    assert isinstance(got, Invalid) and got.reason == "bad_json"
    assert "line 1 column 13" in got.detail
    multi = check('{\n  "scale": 7,\n  "impact": 3\n  "reasoning": "x"\n}', SCHEMA)
    assert multi.reason == "bad_json" and "line 4 column 3" in multi.detail


def test_no_json_at_all_is_bad_json():
    got = check("I cannot rate this article.", SCHEMA)
    assert isinstance(got, Invalid) and got.reason == "bad_json"


def test_schema_errors_are_listed_with_their_path():
    got = check(json.dumps({"scale": 11, "impact": -1, "reasoning": "", "tier": "x"}), SCHEMA)
    assert isinstance(got, Invalid) and got.reason == "schema"
    assert "at scale: 11 is greater than the maximum of 10" in got.detail
    assert "at impact: -1 is less than the minimum of 0" in got.detail
    assert "at reasoning:" in got.detail
    assert "at (root):" in got.detail and "'tier'" in got.detail


def test_missing_key_and_wrong_type():
    got = check(json.dumps({"scale": "7", "reasoning": "ok"}), SCHEMA)
    assert "'impact' is a required property" in got.detail
    assert "at scale: '7' is not of type 'integer'" in got.detail


def test_a_top_level_array_is_a_schema_error():
    got = check("```json\n[1, 2]\n```", SCHEMA)
    assert isinstance(got, Invalid) and got.reason == "schema"
    assert "at (root): [1, 2] is not of type 'object'" in got.detail


def test_many_errors_are_capped_and_counted():
    schema = {"type": "object", "properties": {f"d{i}": {"type": "integer"} for i in range(8)}}
    got = check(json.dumps({f"d{i}": "x" for i in range(8)}), schema)
    assert got.detail.count("at d") == 5 and "(and 3 more)" in got.detail


def test_feedback_contains_the_reason_and_the_detail():
    got = check(json.dumps({"scale": 11, "impact": 3, "reasoning": "x"}), SCHEMA)
    assert "(schema)" in got.feedback
    assert "at scale: 11 is greater than the maximum of 10" in got.feedback
    assert "JSON object" in got.feedback
    bad = check('{"scale": 7,,}', SCHEMA)
    assert bad.detail in bad.feedback and "(bad_json)" in bad.feedback


def test_extract_json_leaves_non_objects_alone():
    assert extract_json("no braces here") == "no braces here"
    assert extract_json("```json\n{\"a\": 1}\n```") == '{"a": 1}'
