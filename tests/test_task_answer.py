"""The answer kind: the comparisons (exact, numeric with GSM8K's thousands separators, choice), the
answer schema (the task's, a filter's, a record's own), the check and its re-ask, gold, the metric on a
hand-computed fixture, and a record's own schema through the prefilter and the oracle."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from distill.errors import FilterSpecError, InputError
from distill.filterspec import load_filter, load_filter_at
from distill.tasks.answer import AnswerTask, choice_letter, final_number
from tests.conftest import ROOT
from tests.fakes.openai_server import FakeOpenAI, first_user_message, turn
from tests.oracle_harness import checked, fake_oracle, label_records, set_key

SPEC = load_filter_at(ROOT / "filters", "math_word_problems", "v1")
KEY_ENV = "ANSWER_TEST_KEY"


def _task(tmp_path: Path, **changes) -> AnswerTask:
    folder = tmp_path / "math_word_problems" / "v1"
    shutil.copytree(ROOT / "filters" / "math_word_problems" / "v1", folder, dirs_exist_ok=True)
    raw = yaml.safe_load((folder / "filter.yaml").read_text())
    (folder / "filter.yaml").write_text(yaml.safe_dump({**raw, **changes}, sort_keys=False))
    return load_filter(folder)


def _truth(rid: str, text: str) -> dict:
    return {"id": rid, "answer_text": text}


def _pred(rid: str, text: str | None) -> dict:
    return {"id": rid, "answer": None if text is None else {"reasoning": "", "answer": text},
            "raw": "", "invalid_reason": None if text is not None else "schema"}


# ----------------------------------------------------------------------------- reading answers
@pytest.mark.parametrize(("text", "number"), [
    ("#### 1,600", "1600"), ("1600", "1600"), ("1,600.0", "1600"), ("She pays $1,600.00 in all.", "1600"),
    ("16-3-4=<<16-3-4=9>>9 eggs, 9*2=18\n#### 18", "18"), ("x = -5", "-5"), ("0.50 litres", "0.5"),
    ("between 3 and 4, so 4.", "4"), ("#### 1,234,567", "1234567"), ("no digits here", None),
    ("A4 paper", None),
])
def test_the_final_number_is_read_as_gsm8k_writes_it(text, number):
    assert final_number(text) == number


@pytest.mark.parametrize(("text", "letter"), [
    ("B", "B"), ("(b)", "B"), (" C. ", "C"), ("The answer is (C) because (D) is wrong", "C"),
    ("I pick option E", "E"), ("(A) or (D): (D)", "D"), ("C) 42 apples", "C"), ("A robe takes 2 bolts", None),
])
def test_the_choice_letter_is_read_from_the_answer(text, letter):
    assert choice_letter(text) == letter


def test_the_three_comparisons(tmp_path):
    numeric = SPEC
    assert numeric.same("1,600.0", "Janet pays <<800*2=1600>>1600\n#### 1,600")
    assert not numeric.same("1601", "#### 1,600") and not numeric.same("no idea", "no idea")
    exact = _task(tmp_path, gold={"compare": "exact"})
    assert exact.same("  Paris.", "paris") and exact.same("\u201cO\u2019Neil\u201d", "\"o'neil\"")
    assert not exact.same("Paris, France", "Paris")
    choice = _task(tmp_path, gold={"compare": "choice"})
    assert choice.same("The answer is (B).", "B") and not choice.same("(A)", "B")


# ----------------------------------------------------------------------------- schemas
def test_reasoning_comes_first_in_the_default_schema():
    schema = SPEC.json_schema
    assert list(schema["properties"]) == ["reasoning", "answer"]
    assert schema["required"] == ["reasoning", "answer"] and schema["additionalProperties"] is False


def test_a_filter_gives_its_own_schema_and_names_the_compared_field(tmp_path):
    own = {"type": "object", "properties": {"value": {"type": "number"}, "unit": {"type": "string"}},
           "required": ["value", "unit"], "additionalProperties": False}
    task = _task(tmp_path, answer_schema=own, answer_field="value")
    assert list(task.json_schema["properties"]) == ["reasoning", "value", "unit"]
    assert task.final_text({"reasoning": "r", "value": 1600.0, "unit": "$"}) == "1600.0"
    assert task.same(task.final_text({"value": 1600.0, "unit": "$"}), "#### 1,600")
    with pytest.raises(FilterSpecError, match="answer_field 'answer' is not a property of answer_schema; set "
                                              "answer_field to one of: value, unit"):
        _task(tmp_path, answer_schema=own, answer_field="answer")
    with pytest.raises(FilterSpecError, match="needs type: object"):
        _task(tmp_path, answer_schema={"type": "string"})


def test_a_record_brings_its_own_schema_as_json_text_or_an_object():
    own = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    for given in (own, json.dumps(own)):
        schema = SPEC.schema_for({"id": "q1", "answer_schema": given})
        assert list(schema["properties"]) == ["reasoning", "answer"] and schema["required"] == ["reasoning", "answer"]
        assert schema["properties"]["answer"] == {"type": "integer"}
    assert SPEC.schema_for({"id": "q2"}) is SPEC.json_schema
    with pytest.raises(InputError, match=r"record 'q3': answer_schema is not JSON \(Expecting value at column 1\); "
                                         "fix that column, or unmap prefilter.field_map.answer_schema"):
        SPEC.schema_for({"id": "q3", "answer_schema": "not json"})
    with pytest.raises(InputError, match="record 'q4': answer_schema not a valid JSON schema at properties/answer"):
        SPEC.schema_for({"id": "q4", "answer_schema": {"type": "object",
                                                       "properties": {"answer": {"type": "integr"}}}})


def test_the_prefilter_parses_a_schema_column_and_quarantines_one_that_is_not_a_schema(tmp_path):
    from distill.config import PrefilterConfig
    from distill.sources import read_corpus

    good = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    rows = [{"id": "q1", "q": "How many?", "schema": json.dumps(good), "a": "<p>#### 1,600</p>"},
            {"id": "q2", "q": "How many more?", "schema": "{\"type\": \"array\"}", "a": "3"},
            {"id": "q3", "q": "And now?", "schema": "{oops", "a": "4"}]
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = PrefilterConfig(input=str(path), strip_html=True,
                          field_map={"id": "id", "text": "q", "gold": "a", "answer_schema": "schema"})
    corpus = read_corpus(cfg)
    assert [r["id"] for r in corpus.records] == ["q1"]
    assert corpus.records[0]["answer_schema"] == good and corpus.records[0]["gold"] == "#### 1,600"
    quarantined = {q["line"]: (q["reason"], q["detail"]) for q in corpus.quarantine}
    assert quarantined[2] == ("bad_answer_schema", ("'schema': the answer must be a JSON object: the schema needs "
                                                    "type: object at the top, got 'array'"))
    assert quarantined[3][0] == "bad_answer_schema" and quarantined[3][1].startswith("'schema': not JSON (")


# ----------------------------------------------------------------------------- the check, through the oracle
@pytest.fixture
def oracle(monkeypatch):
    set_key(monkeypatch, KEY_ENV, "sk-answer-")
    yield from checked(FakeOpenAI())


def test_an_answer_without_a_number_is_fed_back_and_a_records_own_schema_is_what_the_oracle_is_asked(
        oracle, tmp_path):
    own = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
           "additionalProperties": False}
    records = [
        {"id": "q1", "title": "janet", "text": "Janet sells 9 eggs at $2. How much does she make?", "metadata": {},
         "gold": "Janet sells 9 eggs for 9 * 2 = <<9*2=18>>18\n#### 18"},
        {"id": "q2", "title": "robe", "text": "A robe takes 2 bolts of blue fibre and half that much white fibre. "
                                          "How many bolts in total?", "metadata": {}, "answer_schema": own,
         "gold": "#### 3"},
    ]

    def responder(body):
        if "Janet" in first_user_message(body):
            return ({"reasoning": "9 eggs at two dollars", "answer": "eighteen dollars"} if turn(body) == 0
                    else {"reasoning": "9 * 2", "answer": "$18.00"})
        return {"reasoning": "2 + 1", "answer": 4}

    oracle.responder = responder
    cfg = fake_oracle("openai", "fake", oracle.base_url, KEY_ENV)
    valid, invalid, stats = label_records(tmp_path, cfg, SPEC, records, max_words=500)
    janet, robe = valid["janet"], valid["robe"]
    assert not invalid and janet["attempts"] == 2 and robe["attempts"] == 1
    asked_again = [b for b in oracle.requests if turn(b) == 1]
    assert asked_again[0]["messages"][-1]["content"].startswith("Your previous answer was not accepted (task): no "
                                                                "number found in the answer")
    assert janet["answer_text"] == "$18.00" and janet["gold_agrees"] is True
    assert robe["answer_text"] == "4" and robe["gold_agrees"] is False and robe["answer_schema"] == own
    robe_schema = next(b for b in oracle.requests if "robe" in first_user_message(b))["response_format"]
    assert robe_schema["json_schema"]["schema"]["properties"]["answer"] == {"type": "integer"}
    assert stats["gold_checked"] == 2 and stats["gold_agreed"] == 1


# ----------------------------------------------------------------------------- gold
def test_gold_is_compared_as_the_task_says_and_with_gold_keeps_the_golds_own_working(tmp_path):
    row = {"id": "q", "label": {"reasoning": "800 + 800 = 1601", "answer": "1601"}, "answer_text": "1601"}
    gold = "Janet pays 800 * 2 = <<800*2=1600>>1,600 dollars.\n#### 1,600"
    assert SPEC.gold_agrees(row, gold) is False and SPEC.gold_agrees({**row, "answer_text": "1,600.0"}, gold)
    assert SPEC.gold_agrees(row, "no number in this gold") is None  # not compared: counted as unusable
    replaced = SPEC.with_gold(row, gold)
    assert replaced["label"] == {"reasoning": "Janet pays 800 * 2 = <<800*2=1600>>1,600 dollars.", "answer": "1600"}
    assert replaced["answer_text"] == "1600"
    numbers = _task(tmp_path, answer_schema={"type": "object", "properties": {"answer": {"type": "number"}},
                                             "required": ["answer"]}, reasoning=False)
    assert numbers.with_gold({**row, "label": {"answer": 1601}}, "#### 2.50")["label"] == {"answer": 2.5}
    assert numbers.with_gold({**row, "label": {"answer": 1601}}, gold)["label"] == {"answer": 1600}
    exact = _task(tmp_path, gold={"compare": "exact"}, reasoning=False)
    assert exact.with_gold({**row, "label": {"answer": "x"}}, "  Grind finer. ")["label"] == {"answer": "Grind finer."}


def test_every_gsm8k_answer_has_a_final_number_and_the_thousands_separators_are_read(shared_data):
    rows = [json.loads(x) for x in (shared_data / "questions" / "gsm8k_test.jsonl").read_text().splitlines()]
    assert len(rows) == 1319
    finals = [r["answer"].rsplit("####", 1)[1].strip() for r in rows]
    assert all(final_number(r["answer"]) is not None for r in rows)
    with_commas = [f for f in finals if "," in f]
    assert len(with_commas) == 14 and "1,600" in with_commas
    for f in with_commas:  # "1,600" is 1600, and the oracle's "1600" or "1,600.0" agrees with it
        assert final_number(f"#### {f}") == f.replace(",", "")
        assert SPEC.same(f.replace(",", ""), f"#### {f}") and SPEC.same(f"{f}.0", f"#### {f}")


# ----------------------------------------------------------------------------- metrics
def test_accuracy_on_a_hand_computed_fixture():
    truth = [_truth("a", "18"), _truth("b", "1600"), _truth("c", "3"), _truth("d", "42")]
    predictions = [_pred("a", "18"), _pred("b", "It is 1,600.0"), _pred("c", "4"), _pred("d", None)]
    metrics, rows, per_part = SPEC.evaluate(truth, predictions)
    assert metrics == {"n_test": 4, "valid_json_share": 0.75, "accuracy": 0.5, "accuracy_valid_only": 0.6667,
                       "compare": "numeric"}
    assert [(r["actual"], r["predicted"]) for r in rows] == [("18", "18"), ("1600", "1600"), ("3", "4"),
                                                             ("42", "invalid")]
    assert per_part == [{"name": "accuracy (numeric)", "value": 0.5, "metric": "accuracy"}]
    agreement = SPEC.agreement({i: _truth(i, t) for i, t in [("a", "18"), ("b", "7"), ("c", "x")]},
                               {i: _truth(i, t) for i, t in [("a", "18.0"), ("b", "8")]}, ["a", "b", "c"])
    assert agreement == {"n": 2, "answer_agreement": 0.5, "compare": "numeric"}


def test_a_student_is_told_the_comparison_and_the_sklearn_baseline_points_to_lora(tmp_path):
    from distill.config import SklearnStudent
    from distill.errors import ConfigError
    from distill.students import task_info, train_student

    info = task_info(SPEC)
    assert {k: info[k] for k in ("kind", "answer_field", "compare", "reasoning")} == {
        "kind": "answer", "answer_field": "answer", "compare": "numeric", "reasoning": True}
    row = {"id": "a", "messages": [{"role": "user", "content": "x"}], "answer_text": "1"}
    with pytest.raises(ConfigError, match=re.escape("use student=lora")):
        train_student(SklearnStudent(kind="sklearn"), [row], [], SPEC, tmp_path / "m")


def test_distill_oracle_check_prints_the_answer_agreement():
    from distill.labeling.oracle_check import format_agreement

    passes = {"requests": 3, "cache_hits": 1}
    result = {**SPEC.agreement({"a": _truth("a", "18"), "b": _truth("b", "7")},
                               {"a": _truth("a", "$18"), "b": _truth("b", "8")}, ["a", "b"]),
              "sampled": 2, "cost_usd": 0.0, "passes": {"first": passes, "second": passes},
              "oracles": {k: {"oracle": "openai:m", "temperature": t, "seed": s}
                          for k, t, s in (("first", 0.0, 0), ("second", 0.7, 1))}}
    lines = format_agreement(result).splitlines()
    assert lines[0] == "oracle vs oracle on 2 of 2 sampled items (both valid)"
    assert "answer_agreement" in lines[5] and lines[5].split()[-1] == "0.5"


def test_the_lora_student_is_given_each_records_own_schema(monkeypatch):
    """predict hands the LoRA child one schema per example: the record's own where it brings one, the task's
    schema object itself where it does not."""
    from distill import students

    seen = {}
    monkeypatch.setattr(students, "read_manifest", lambda model_dir: {"kind": "lora"})
    monkeypatch.setattr(students, "_in_torch_child", lambda target, doing, **kw: seen.update(kw) or [])
    own = {"type": "object", "properties": {"answer": {"enum": ["0", "2"]}}, "required": ["answer"]}
    rows = [{"id": "a", "messages": []}, {"id": "b", "messages": [], "answer_schema": own}]
    students.predict("m", rows, SPEC)
    assert seen["schemas"][0] is SPEC.json_schema
    assert seen["schemas"][1]["properties"] == {"reasoning": SPEC.json_schema["properties"]["reasoning"], **own[
        "properties"]}
    students.predict("m", rows[:1], SPEC)
    assert len(seen["schemas"]) == 1 and seen["schemas"][0] is SPEC.json_schema
