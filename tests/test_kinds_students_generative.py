"""The LoRA student on translate and generate tasks, through the train and evaluate stage functions, on
tiny causal LMs built here from a config (tests/tiny_lm.py): no download, seconds of CPU.

Whatever a few CPU steps teach a tiny model, evaluate must report exactly what its answers were: the
metrics are recomputed here from the predictions file with sacrebleu and the diversity primitives.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from distill import pipeline
from distill.config import EvaluateConfig, LoraStudent, TrainConfig
from distill.filterspec import load_filter
from distill.jsonl import read_jsonl, write_jsonl
from distill.merge import text_hash
from tests.tiny_lm import build_tiny_base, chat_text

ROOT = Path(__file__).resolve().parents[1]
TRANSLATE = load_filter(ROOT / "filters" / "translate_energy_news" / "v1")
GENERATE = load_filter(ROOT / "filters" / "home_energy_qa" / "v1")

pytestmark = pytest.mark.slow

THINGS = [("solar park", "Solarpark"), ("wind farm", "Windpark"), ("heat pump plant", "Wärmepumpenanlage"),
          ("battery store", "Batteriespeicher")]
CITIES = ["Berlin", "Hamburg", "Bremen", "Kiel", "Essen", "Bonn"]


def _lora(base: str, **kw) -> LoraStudent:
    settings = {"kind": "lora", "base_model": base, "rank": 16, "alpha": 32, "dropout": 0.0, "max_steps": 30,
                "learning_rate": 1e-2, "batch_size": 4, "max_length": 512, "max_new_tokens": 60,
                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
    return LoraStudent(**{**settings, **kw})


def _split(tmp_path: Path, parts: dict[str, list[dict]]) -> Path:
    for name, rows in parts.items():
        write_jsonl(tmp_path / "split" / f"{name}.jsonl", rows)
    return tmp_path / "split"


# ----------------------------------------------------------------------------- translate
def _translate_row(i: int, gold: bool = False) -> dict:
    (en, de), city = THINGS[i % 4], CITIES[i % 6]
    record = {"id": f"tr-{i}", "title": f"New {en} in {city}", "text": f"The {en} in {city} opens."}
    translation = f"Neuer {de} in {city}. Der {de} in {city} öffnet."  # one line: a tiny model loops on \n
    row = {"id": record["id"], **TRANSLATE.labelled({"translation": translation}),
           "messages": [*TRANSLATE.render(record), {"role": "assistant",
                                                     "content": json.dumps({"translation": translation})}]}
    row.pop("label")
    return {**row, "gold": translation if i % 2 else f"Ein {de} in {city}"} if gold else row


@pytest.fixture(scope="module")
def translate_base(tmp_path_factory):
    pytest.importorskip("torch")
    rows = [_translate_row(i) for i in range(24)]
    rng = random.Random(1)
    chats = []
    for r in rows:  # short chats in the answer format, words shuffled: the shape, not the task (and cheap)
        words = r["translation"].split()
        rng.shuffle(words)
        chats.append(chat_text([{"role": "user", "content": r["messages"][1]["content"].splitlines()[-3]},
                                {"role": "assistant", "content": json.dumps({"translation": " ".join(words)})}]))
    texts = [m["content"] for r in rows for m in r["messages"]]
    return build_tiny_base(tmp_path_factory.mktemp("tiny-translate"), texts, chats, steps=150, threads=1)


def test_lora_student_on_a_translate_task(tmp_path, translate_base):
    from sacrebleu.metrics import BLEU, CHRF

    train = [_translate_row(i) for i in range(16)]
    test = [_translate_row(i, gold=True) for i in range(100, 106)]
    split_dir = _split(tmp_path, {"train": train, "val": train[:2], "test": test})
    m = pipeline.train(TrainConfig(output_dir=str(tmp_path / "model")), _lora(translate_base), TRANSLATE, split_dir,
                       metrics_dir=tmp_path)
    assert m["steps"] == 30 and m["last_step_loss"] < m["first_step_loss"]
    manifest = json.loads((tmp_path / "model" / "student.json").read_text())
    assert manifest["task"]["kind"] == "translate" and manifest["task"]["target_language"] == "German"

    ev = pipeline.evaluate(EvaluateConfig(output_dir=str(tmp_path / "eval")), TRANSLATE, split_dir,
                           tmp_path / "model", metrics_dir=tmp_path)
    predictions = list(read_jsonl(tmp_path / "eval" / "predictions.jsonl"))
    assert [p["id"] for p in predictions] == [r["id"] for r in test]
    assert all(p["invalid_reason"] for p in predictions if p["answer"] is None)
    hyps = [p["answer"]["translation"] if p["answer"] else "" for p in predictions]
    oracle = [r["translation"] for r in test]
    valid = [i for i, p in enumerate(predictions) if p["answer"] is not None]
    assert ev["student"] == "lora" and ev["n_test"] == 6
    assert ev["valid_json_share"] == round(len(valid) / 6, 4) and valid, [p["raw"] for p in predictions]
    assert ev["chrf"] == round(CHRF().corpus_score(hyps, [oracle]).score, 4)
    assert ev["bleu"] == round(BLEU().corpus_score(hyps, [oracle]).score, 4)
    gold = [r["gold"] for r in test]
    assert ev["n_gold"] == 6 and ev["chrf_gold"] == round(CHRF().corpus_score(hyps, [gold]).score, 4)
    assert ev["oracle_chrf_gold"] == round(CHRF().corpus_score(oracle, [gold]).score, 4)
    assert ev["chrf"] > 0  # a few steps teach it the shape of the sentences at least
    per_part = json.loads((tmp_path / "eval" / "per_dimension.json").read_text())
    assert {p["name"]: p["value"] for p in per_part}["chrF vs oracle"] == ev["chrf"]
    assert json.loads((tmp_path / "eval.json").read_text()) == ev


# ----------------------------------------------------------------------------- generate
TOPICS = ["solar > panels", "heat > pumps", "storage > batteries", "bills > tariffs", "grants > loans"]
VERBS = ["save money", "last long", "need service", "fit a flat", "cut emissions", "pay back"]


def _generate_row(topic: str, k: int) -> dict:
    x = topic.split(" > ")[-1]
    item = {"question": f"Do {x} {VERBS[k % 6]} in a small house?", "answer": f"Often the {x} do."}
    return {"id": f"gen-{text_hash(topic + str(k))[:8]}", **GENERATE.labelled(item, {"topic": topic}),
            "messages": [*GENERATE.student_messages(topic), {"role": "assistant", "content": json.dumps(item)}]}


@pytest.fixture(scope="module")
def generate_base(tmp_path_factory):
    pytest.importorskip("torch")
    rows = [_generate_row(t, k) for t in TOPICS for k in range(4)]
    rng = random.Random(2)
    chats = []
    for r in rows:  # short chats in the answer format, words shuffled
        words = r["label"]["question"].split()
        rng.shuffle(words)
        item = {"question": " ".join(words), "answer": r["label"]["answer"]}
        chats.append(chat_text([{"role": "user", "content": f"Topic: {r['topic']}"},
                                {"role": "assistant", "content": json.dumps(item)}]))
    texts = [m["content"] for r in rows for m in r["messages"]]
    return build_tiny_base(tmp_path_factory.mktemp("tiny-generate"), texts, chats, steps=150, threads=1)


def _strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "label"}


def test_lora_student_on_a_generate_task_samples_distinct_items(tmp_path, generate_base):
    from distill.neardup import distinct_ngrams, mean_pairwise_jaccard_distance
    from distill.students import predict

    train = [_strip(_generate_row(t, k)) for t in TOPICS[:4] for k in range(6)]
    test = [_strip(_generate_row(TOPICS[4], k)) for k in range(4)]  # an unseen topic, one prompt four times
    split_dir = _split(tmp_path, {"train": train, "val": [], "test": test})
    spec = GENERATE.model_copy(update={"student_temperature": 0.5})
    m = pipeline.train(TrainConfig(output_dir=str(tmp_path / "model")), _lora(generate_base, max_steps=60), spec,
                       split_dir, metrics_dir=tmp_path)
    assert m["last_step_loss"] < m["first_step_loss"]
    ev = pipeline.evaluate(EvaluateConfig(output_dir=str(tmp_path / "eval")), spec, split_dir,
                           tmp_path / "model", metrics_dir=tmp_path)
    predictions = list(read_jsonl(tmp_path / "eval" / "predictions.jsonl"))
    texts = [spec.item_text(p["answer"]) for p in predictions if p["answer"] is not None]
    assert ev["n_test"] == 4 and ev["valid_json_share"] == round(len(texts) / 4, 4) and texts
    assert ev["distinct_share"] == round(len({text_hash(t) for t in texts}) / len(texts), 4)
    assert ev["distinct_2"] == distinct_ngrams(texts, 2)
    assert ev["mean_jaccard_distance"] == mean_pairwise_jaccard_distance(texts)
    assert ev["test_topics"] == 1
    # sampling: one prompt, several different items; greedy (student_temperature 0): one item, four times
    assert len({p["raw"] for p in predictions}) >= 2
    greedy = predict(tmp_path / "model", test, spec.model_copy(update={"student_temperature": 0.0}))
    assert len({p["raw"] for p in greedy}) == 1
