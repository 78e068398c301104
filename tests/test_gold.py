"""Golden answers check the oracle: the label stage's agreement with gold (metrics/label.json), the
disagreements kept apart (gold_mismatch.jsonl), label.on_gold_mismatch (drop / keep / keep_gold), and
evaluate's student-vs-gold, student-vs-oracle and oracle-vs-gold side by side. Real GSM8K questions
against the fake OpenAI server; a classification through the same code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill import jsonl, pipeline
from distill.config import LabelConfig
from distill.evaluate import against_gold, format_table
from distill.filterspec import load_filter_at
from distill.labeling.gold import GoldPolicy
from distill.split import to_chat
from distill.tasks import ClassifyTask
from tests.conftest import ROOT
from tests.fakes.openai_server import FakeOpenAI, first_user_message
from tests.oracle_harness import checked, fake_oracle, set_key

SPEC = load_filter_at(ROOT / "filters", "math_word_problems", "v1")
KEY_ENV = "GOLD_TEST_KEY"


@pytest.fixture
def oracle(monkeypatch):
    set_key(monkeypatch, KEY_ENV, "sk-gold-")
    yield from checked(FakeOpenAI())


@pytest.fixture
def questions(shared_data, tmp_path) -> list[dict]:
    """Five GSM8K test questions as prefiltered records, gold = GSM8K's answer; the last one's gold has
    no number (a broken gold column: the task cannot read it)."""
    rows = [json.loads(x) for x in (shared_data / "questions" / "gsm8k_test.jsonl").read_text().splitlines()[:5]]
    records = [{"id": f"q{i}", "title": "", "text": r["question"], "metadata": {}, "gold": r["answer"]}
               for i, r in enumerate(rows)]
    records[4]["gold"] = "unknown"
    jsonl.write_jsonl(tmp_path / "passed.jsonl", records)
    return records


#: what the fake oracle answers, by question: right for q0 and q2 (GSM8K: 18 and 70000), wrong for q1 and q3
ORACLE = {0: "$18", 1: "4 bolts", 2: "70,000.00", 3: "500", 4: "460"}


def _answering(records: list[dict]):
    def responder(body):
        i = next(i for i, r in enumerate(records) if r["text"] in first_user_message(body))
        return {"reasoning": f"working for question {i}", "answer": ORACLE[i]}

    return responder


def _label(tmp_path: Path, oracle: FakeOpenAI, policy: str) -> tuple[list[dict], list[dict], dict]:
    out = tmp_path / f"labels_{policy}"
    cfg = LabelConfig(max_words=500, cache_path=str(tmp_path / "cache.sqlite"), output_dir=str(out),
                      progress="off", on_gold_mismatch=policy)
    metrics_dir = tmp_path / f"metrics_{policy}"
    pipeline.label(cfg, fake_oracle("openai", "fake", oracle.base_url, KEY_ENV), SPEC, tmp_path / "passed.jsonl",
                   metrics_dir=metrics_dir)
    return (list(jsonl.read_jsonl(out / "labels.jsonl")), list(jsonl.read_jsonl(out / "gold_mismatch.jsonl")),
            json.loads((metrics_dir / "label.json").read_text()))


GSM8K_WORKING = {  # the text before "####" of GSM8K's answers to q1 and q3
    "q1": ("It takes 2/2=<<2/2=1>>1 bolt of white fiber\n"
           "So the total amount of fabric is 2+1=<<2+1=3>>3 bolts of fabric"),
    "q3": "He sprints 3*3=<<3*3=9>>9 times\nSo he runs 9*60=<<9*60=540>>540 meters",
}


def test_the_label_stage_reports_gold_agreement_and_keeps_disagreements_apart(oracle, questions, tmp_path):
    oracle.responder = _answering(questions)
    labels, apart, metrics = _label(tmp_path, oracle, "keep")
    assert metrics["gold"] == {"checked": 4, "agreed": 2, "share": 0.5, "unusable": 1, "on_mismatch": "keep",
                               "mismatched": 2, "dropped": 0, "replaced": 0}
    assert [r["id"] for r in labels] == ["q0", "q1", "q2", "q3", "q4"]
    assert [r.get("gold_agrees") for r in labels] == [True, False, True, False, None]
    assert "gold" not in labels[4]  # a gold the task cannot read is counted, not compared
    assert [r["id"] for r in apart] == ["q1", "q3"]
    # both answers: the oracle's, the gold as it came, and the gold in the answer's form
    assert apart[0]["label"] == {"reasoning": "working for question 1", "answer": "4 bolts"}
    assert apart[0]["gold"] == questions[1]["gold"]
    assert apart[0]["gold_label"] == {"reasoning": GSM8K_WORKING["q1"], "answer": "3"}
    assert apart[1]["gold_label"] == {"reasoning": GSM8K_WORKING["q3"], "answer": "540"}
    assert oracle.count == 5


def test_drop_leaves_the_disagreements_out_of_the_labels(oracle, questions, tmp_path):
    oracle.responder = _answering(questions)
    _label(tmp_path, oracle, "keep")
    labels, apart, metrics = _label(tmp_path, oracle, "drop")
    assert [r["id"] for r in labels] == ["q0", "q2", "q4"] and [r["id"] for r in apart] == ["q1", "q3"]
    assert metrics["gold"]["dropped"] == 2 and metrics["gold"]["replaced"] == 0 and metrics["valid"] == 5
    assert oracle.count == 5  # the policy decides what is written: the answers come from the cache


def test_keep_gold_trains_on_the_golden_answer_and_keeps_the_oracles_beside_it(oracle, questions, tmp_path):
    oracle.responder = _answering(questions)
    labels, apart, metrics = _label(tmp_path, oracle, "keep_gold")
    by_id = {r["id"]: r for r in labels}
    assert list(by_id) == ["q0", "q1", "q2", "q3", "q4"] and metrics["gold"]["replaced"] == 2
    assert by_id["q1"]["label"] == {"reasoning": GSM8K_WORKING["q1"], "answer": "3"}
    assert by_id["q1"]["answer_text"] == "3" and by_id["q1"]["gold_replaced"] is True
    assert by_id["q1"]["oracle_label"] == {"reasoning": "working for question 1", "answer": "4 bolts"}
    assert by_id["q3"]["label"]["answer"] == "540"
    assert by_id["q0"]["label"] == {"reasoning": "working for question 0", "answer": "$18"}  # agreed: untouched
    assert "gold_replaced" not in by_id["q0"] and [r["id"] for r in apart] == ["q1", "q3"]
    # the student learns the golden answer: the split's assistant turn is it
    assert json.loads(to_chat(by_id["q1"], SPEC)["messages"][-1]["content"]) == by_id["q1"]["label"]


def test_evaluate_puts_the_student_against_gold_and_the_oracle_side_by_side(oracle, questions, tmp_path):
    oracle.responder = _answering(questions)
    labels, _, _ = _label(tmp_path, oracle, "keep")
    test_rows = [to_chat(r, SPEC) for r in labels]
    assert [r.get("gold_agrees") for r in test_rows] == [True, False, True, False, None]

    def said(rid, answer):
        return {"id": rid, "answer": None if answer is None else {"reasoning": "", "answer": answer}, "raw": "",
                "invalid_reason": None if answer else "bad_json"}

    # q0 right; q1 the oracle's wrong answer; q2 wrong; q3 invalid; q4 (no readable gold) the oracle's
    predictions = [said("q0", "18"), said("q1", "4"), said("q2", "7"), said("q3", None), said("q4", "460")]
    metrics, _, _ = SPEC.evaluate(test_rows, predictions)
    assert metrics["accuracy"] == 0.6  # against the oracle, on all five
    gold = against_gold(test_rows, predictions, SPEC)
    assert gold["n"] == 4
    assert gold["student_vs_gold"]["accuracy"] == 0.25  # q0
    assert gold["student_vs_oracle"]["accuracy"] == 0.5  # q0, q1
    assert gold["oracle_vs_gold"]["accuracy"] == 0.5  # q0, q2: the label stage's share
    assert gold["oracle_vs_gold"]["valid_json_share"] == 1.0 and gold["student_vs_gold"]["valid_json_share"] == 0.75
    table = format_table({**metrics, "gold": gold}, spec=SPEC)
    assert "on the 4 test items with gold:" in table
    side_by_side = table.split("on the 4 test items with gold:")[1].splitlines()
    assert side_by_side[1].split() == ["metric", "student", "vs", "gold", "student", "vs", "oracle", "oracle", "vs",
                                       "gold"]
    assert side_by_side[3].split() == ["accuracy", "0.25", "0.5", "0.5"]
    assert against_gold([r for r in test_rows if r["id"] == "q4"], predictions, SPEC) is None


# ----------------------------------------------------------------------------- the same code, classifying
TOPICS = ClassifyTask.model_validate({
    "kind": "classify", "name": "topics", "version": "v1", "description": "d", "system_prompt": "s",
    "template": "t.md", "rationale": False, "labels": [{"name": n} for n in ("business", "politics", "sport")]})


def test_a_classification_gets_the_same_gold_treatment():
    def row(rid, oracle_label, gold):
        r = {"id": rid, **TOPICS.labelled({"label": oracle_label}), "gold": gold, "messages": [{"role": "user",
                                                                                              "content": rid}]}
        return {**r, "gold_agrees": TOPICS.gold_agrees(r, gold)}

    rows = [row("a", "sport", "Sport"), row("b", "business", "politics"), row("c", "politics", "politics")]
    assert [r["gold_agrees"] for r in rows] == [True, False, True]
    kept: list[dict] = []
    policy = GoldPolicy(TOPICS, "keep_gold")
    out = [policy.apply(r, kept.append) for r in rows]
    assert out[1]["label"] == {"label": "politics"} and out[1]["oracle_label"] == {"label": "business"}
    assert [r["id"] for r in kept] == ["b"] and kept[0]["gold_label"] == {"label": "politics"}
    assert out[0] is rows[0] and policy.counts == {"mismatched": 1, "replaced": 1}

    test_rows = [to_chat(r, TOPICS) for r in rows]
    predictions = [{"id": i, "answer": {"label": lab}} for i, lab in (("a", "sport"), ("b", "business"),
                                                                      ("c", "business"))]
    gold = against_gold(test_rows, predictions, TOPICS)
    assert gold["n"] == 3
    assert gold["student_vs_gold"]["accuracy"] == 0.3333  # a
    assert gold["student_vs_oracle"]["accuracy"] == 0.6667  # a, b
    assert gold["oracle_vs_gold"]["accuracy"] == 0.6667  # a, c


def test_keep_gold_leaves_a_row_whose_schema_has_no_place_for_the_gold(tmp_path):
    """A record's own schema without the compared field: nothing to put the gold in, so the oracle's
    answer stays, and is counted as mismatched, not replaced."""
    own = {"type": "object", "properties": {"total": {"type": "string"}}, "required": ["total"]}
    row = {"id": "q", "answer_schema": own, "label": {"reasoning": "r", "total": "4"},
           **SPEC.labelled({"reasoning": "r", "total": "4"}, {"answer_schema": own}), "gold": "#### 3"}
    row["gold_agrees"] = SPEC.gold_agrees(row, row["gold"])
    assert row["gold_agrees"] is False and row["answer_text"] == "4"  # the only field but reasoning is compared
    apart: list[dict] = []
    policy = GoldPolicy(SPEC, "keep_gold")
    assert policy.apply(row, apart.append) is row
    assert apart[0]["gold_label"] is None and policy.counts == {"mismatched": 1}
