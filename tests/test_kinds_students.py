"""The train and evaluate stages for the extract and answer kinds, with the LoRA student on a tiny Qwen2
built from a config (the sklearn baseline does not learn these kinds; the graph up to oracle_check runs
end to end in tests/test_kinds_e2e.py).

Each dataset has four kinds of record the student can tell apart by their words, and an oracle that is
wrong about one kind where the golden answers are right, so evaluate's side-by-side figures differ:
the student learns the oracle, mistakes included.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from distill import jsonl, pipeline
from distill.config import EvaluateConfig, LoraStudent, TrainConfig
from distill.split import to_chat
from distill.tasks import AnswerTask, ExtractTask
from tests.tiny_lm import build_tiny_base, chat_text

pytestmark = pytest.mark.slow

COMMON = {"name": "t", "version": "v1", "description": "d", "system_prompt": "Answer in JSON.", "template": "t.md"}
ANSWER = AnswerTask.model_validate({**COMMON, "kind": "answer", "gold": {"compare": "numeric"}}).model_copy(
    update={"template_text": "{text}"})
EXTRACT = ExtractTask.model_validate({**COMMON, "kind": "extract", "entity_types": [
    {"name": "person"}, {"name": "organisation"}, {"name": "place"}]}).model_copy(update={"template_text": "{text}"})

#: (animal, legs, what the oracle says): it is wrong about spiders
ANIMALS = [("cat", 4, 4), ("bird", 2, 2), ("spider", 8, 6), ("snake", 0, 0)]
#: the snake questions bring their own schema: one of five digits
DIGITS = {"type": "object", "properties": {"answer": {"enum": ["0", "2", "4", "6", "8"]}}, "required": ["answer"],
          "additionalProperties": False}
#: (story, golden entities, what the oracle leaves out): it misses Leeds
STORIES = [
    ("Tony Blair met BBC staff in Leeds.", {"person": ["Tony Blair"], "organisation": ["BBC"], "place": ["Leeds"]},
     "Leeds"),
    ("Jamie Foxx flew to Paris.", {"person": ["Jamie Foxx"], "place": ["Paris"]}, None),
    ("Lufthansa hired Ann Lee.", {"organisation": ["Lufthansa"], "person": ["Ann Lee"]}, None),
    ("Rain fell on Tuesday.", {}, None),
]


def _row(task, record: dict, answer: dict) -> dict:
    """A label row as the label stage writes it (gold checked), then as the split writes it."""
    row = {**record, "messages": task.render(record), **task.labelled(answer, record)}
    row["gold_agrees"] = task.gold_agrees(row, record["gold"])
    return to_chat(row, task)


def _answer_rows(start: int, n: int) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        animal, legs, said = ANIMALS[i % 4]
        record = {"id": f"q{i}", "title": "", "text": f"Question {i}: {animal} {animal} {animal}. How many legs?",
                  "metadata": {}, "gold": f"#### {legs}"}
        if animal == "snake":
            record["answer_schema"] = DIGITS
        rows.append(_row(ANSWER, record, {"answer": str(said)}))
    return rows


def _extract_rows(start: int, n: int) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        story, gold, missed = STORIES[i % 4]
        entities = [{"type": t, "text": x} for t, texts in gold.items() for x in texts if x != missed]
        record = {"id": f"s{i}", "title": "", "text": f"Report {i}. {story} {story}", "metadata": {}, "gold": gold}
        rows.append(_row(EXTRACT, record, {"entities": entities}))
    return rows


def _noise_chats() -> list[str]:
    """Both answer formats with answers unrelated to the question: the format, not the task."""
    import random

    rng = random.Random(3)
    chats = []
    for e in _answer_rows(1000, 24):
        answer = {"answer": rng.choice(["1", "3", "5", "7", "9"])}
        chats.append(chat_text([*e["messages"][:-1], {"role": "assistant", "content": json.dumps(answer)}]))
    names = [{"type": t, "text": x} for _, gold, _ in STORIES for t, texts in gold.items() for x in texts]
    for e in _extract_rows(1000, 24):
        answer = {"entities": rng.sample(names, rng.randint(0, 3))}
        chats.append(chat_text([*e["messages"][:-1], {"role": "assistant", "content": json.dumps(answer)}]))
    return chats


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    pytest.importorskip("torch")
    texts = [m["content"] for e in _answer_rows(0, 40) + _extract_rows(0, 40) for m in e["messages"]]
    return build_tiny_base(tmp_path_factory.mktemp("tiny-kinds-base"), texts, _noise_chats())


def _train_and_evaluate(task, base: str, train: list[dict], test: list[dict], tmp_path: Path) -> dict:
    split = tmp_path / "split"
    jsonl.write_jsonl(split / "train.jsonl", train)
    jsonl.write_jsonl(split / "val.jsonl", train[:2])
    jsonl.write_jsonl(split / "test.jsonl", test)
    cfg = LoraStudent(kind="lora", base_model=base, rank=16, alpha=32, dropout=0.0, max_steps=60,
                      learning_rate=1e-2, batch_size=4, max_length=256, max_new_tokens=120,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    metrics_dir = tmp_path / "metrics"
    trained = pipeline.train(TrainConfig(output_dir=str(tmp_path / "model")), cfg, task, split, metrics_dir)
    assert trained["student"] == "lora" and trained["last_step_loss"] < trained["first_step_loss"]
    pipeline.evaluate(EvaluateConfig(output_dir=str(tmp_path / "eval")), task, split, tmp_path / "model",
                      metrics_dir)
    return json.loads((metrics_dir / "eval.json").read_text())


def _share(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), 4)


def test_a_lora_student_answers_questions_and_is_scored_against_gold_and_the_oracle(tiny_base, tmp_path):
    test = _answer_rows(100, 8)
    ev = _train_and_evaluate(ANSWER, tiny_base, _answer_rows(0, 16), test, tmp_path)
    predictions = list(jsonl.read_jsonl(tmp_path / "eval" / "predictions.jsonl"))
    assert [p["id"] for p in predictions] == [r["id"] for r in test]

    def number(answer) -> int | None:  # the student's final number, read by hand
        found = re.findall(r"-?\d+", str(answer["answer"])) if answer is not None else []
        return int(found[-1]) if found else None

    said = [number(p["answer"]) for p in predictions]
    oracle = [ANIMALS[int(r["id"][1:]) % 4][2] for r in test]
    truth = [ANIMALS[int(r["id"][1:]) % 4][1] for r in test]
    assert ev["valid_json_share"] == _share([p["answer"] is not None for p in predictions])
    assert ev["accuracy"] == _share([s == o for s, o in zip(said, oracle)])
    assert ev["gold"]["n"] == 8
    assert ev["gold"]["student_vs_gold"]["accuracy"] == _share([s == t for s, t in zip(said, truth)])
    assert ev["gold"]["student_vs_oracle"]["accuracy"] == ev["accuracy"]
    assert ev["gold"]["oracle_vs_gold"]["accuracy"] == 0.75  # wrong about the two spiders
    # the snake questions were checked against their own schema: only one of its five digits is valid there
    snakes = [p for p, r in zip(predictions, test) if r.get("answer_schema") == DIGITS]
    assert len(snakes) == 2 and all(p["answer"] is None or p["answer"]["answer"] in DIGITS["properties"]["answer"]
                                    ["enum"] for p in snakes)
    # it learns the oracle, mistakes included
    assert ev["accuracy"] >= 0.75, [p["raw"] for p in predictions]


def test_a_lora_student_extracts_entities_and_is_scored_against_gold_and_the_oracle(tiny_base, tmp_path):
    test = _extract_rows(100, 8)
    ev = _train_and_evaluate(EXTRACT, tiny_base, _extract_rows(0, 16), test, tmp_path)
    predictions = list(jsonl.read_jsonl(tmp_path / "eval" / "predictions.jsonl"))
    assert [p["id"] for p in predictions] == [r["id"] for r in test]

    def pairs(entities) -> set[tuple[str, str]]:
        return {(e["type"], e["text"].lower()) for e in entities or []}

    said = [pairs(p["answer"]["entities"]) if p["answer"] is not None else set() for p in predictions]
    oracle = [pairs(r["entities"]) for r in test]
    gold = [pairs({"type": t, "text": x} for t, texts in r["gold"].items() for x in texts) for r in test]

    def f1(predicted: list[set], truth: list[set]) -> float:  # micro F1, by hand
        tp = sum(len(p & t) for p, t in zip(predicted, truth))
        return round(2 * tp / (sum(map(len, predicted)) + sum(map(len, truth))), 4)

    assert ev["valid_json_share"] == _share([p["answer"] is not None for p in predictions])
    assert ev["exact_f1"] == f1(said, oracle)
    assert ev["gold"]["student_vs_gold"]["exact_f1"] == f1(said, gold)
    assert ev["gold"]["oracle_vs_gold"]["exact_f1"] == f1(oracle, gold) == round(2 * 12 / (12 + 14), 4)  # 12 of 14
    assert ev["exact_f1"] >= 0.8, [p["raw"] for p in predictions]
