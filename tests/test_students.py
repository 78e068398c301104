"""Students: the sklearn baseline and the LoRA student (on a tiny Qwen2 built from a config)."""

from __future__ import annotations

import json

import pytest

from distill.config import LoraStudent, SklearnStudent
from distill.filterspec import load_filter
from distill.students import predict, read_manifest, train_student

SPEC = load_filter("filters/sustainability_tech_deployment/v1")
DIMS = SPEC.dimension_names

def _example(i: int, topic: str, score: int) -> dict:
    label = {d: score for d in DIMS} | {"reasoning": f"about {topic}"}
    overall, tier = SPEC.score({d: score for d in DIMS})
    user = f"Article {i}: the {topic} project is described here. " + ("operating " * (score // 2))
    return {
        "id": f"ex-{i}", "tier": tier, "overall": overall, "scores": {d: score for d in DIMS},
        "messages": [
            {"role": "system", "content": "Rate it."},
            {"role": "user", "content": user},
            {"role": "assistant", "content": json.dumps(label)},
        ],
    }


TOPICS = [("solar farm", 9), ("pilot electrolyser", 5), ("announced plan", 3), ("football", 0)]


def _dataset(n: int, start: int = 0) -> list[dict]:
    return [_example(i, *TOPICS[i % len(TOPICS)]) for i in range(start, start + n)]


def test_sklearn_student_learns_and_round_trips_without_pickle(tmp_path):
    train, val, test = _dataset(40), _dataset(8), _dataset(12)
    cfg = SklearnStudent(kind="sklearn")
    metrics = train_student(cfg, train, val, DIMS, tmp_path / "m")
    assert metrics["train_examples"] == 40 and metrics["val_mae"] < 1.0
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["ridge.npz", "student.json", "vectorizer.json"]
    preds = predict(tmp_path / "m", test, SPEC.json_schema)
    assert [p["id"] for p in preds] == [e["id"] for e in test]
    err = [abs(p["scores"][d] - e["scores"][d]) for p, e in zip(preds, test) for d in DIMS]
    assert sum(err) / len(err) < 1.5  # the four topics are separable by their words
    assert all(0 <= v <= 10 for p in preds for v in p["scores"].values())


def _random_score_chats(n: int) -> list[str]:
    """Chats in the answer format whose scores are random: what a base model learns from these is
    the format (keys, JSON, turn markers), not which score a kind of article gets."""
    import random

    rng = random.Random(1)
    chats = []
    for e in _dataset(n, start=1000):
        label = {d: rng.randint(0, 10) for d in DIMS} | {
            "reasoning": json.loads(e["messages"][2]["content"])["reasoning"]
        }
        messages = [*e["messages"][:2], {"role": "assistant", "content": json.dumps(label)}]
        chats.append("".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages))
    return chats


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A 2-layer Qwen2 with a BPE tokenizer trained here, pretrained for a few seconds on chats in the
    answer format with random scores: it writes the format but does not know the task. No download."""
    pytest.importorskip("torch")
    from tests.tiny_lm import build_tiny_base

    texts = [m["content"] for e in _dataset(40) for m in e["messages"]]
    return build_tiny_base(tmp_path_factory.mktemp("tiny-base"), texts, _random_score_chats(48))


@pytest.mark.slow
def test_lora_student_trains_saves_adapter_and_generates(tiny_base, tmp_path):
    train = _dataset(8)
    cfg = LoraStudent(
        kind="lora",
        base_model=tiny_base,
        rank=16,
        alpha=32,
        dropout=0.0,
        max_steps=60,
        learning_rate=1e-2,
        batch_size=4,
        max_length=256,
        max_new_tokens=120,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    metrics = train_student(cfg, train, train[:2], DIMS, tmp_path / "m")
    assert metrics["steps"] == 60
    assert metrics["last_step_loss"] < metrics["first_step_loss"] - 0.3  # it learns
    assert (tmp_path / "m" / "adapter" / "adapter_config.json").is_file()
    assert read_manifest(tmp_path / "m")["kind"] == "lora"

    # articles it has not seen (other numbers, same four kinds): the answers are the schema's JSON,
    # with the scores the oracle gives that kind of article
    held_out = _dataset(8, start=100)
    preds = predict(tmp_path / "m", held_out, SPEC.json_schema)
    assert [p["id"] for p in preds] == [e["id"] for e in held_out]
    valid = [(p, e) for p, e in zip(preds, held_out) if p["scores"] is not None]
    assert len(valid) >= 6, [p["raw"] for p in preds]
    assert all(p["invalid_reason"] for p in preds if p["scores"] is None)
    right = sum(p["scores"] == e["scores"] for p, e in valid)
    assert right >= len(valid) - 1, [(p["scores"], e["scores"]) for p, e in valid]


@pytest.mark.slow
def test_lora_training_is_reproducible(tiny_base, tmp_path):
    train = _dataset(8)
    cfg = LoraStudent(kind="lora", base_model=tiny_base, max_steps=5, batch_size=2, max_length=256)
    a = train_student(cfg, train, [], DIMS, tmp_path / "a")
    b = train_student(cfg, train, [], DIMS, tmp_path / "b")
    assert a["train_loss"] == b["train_loss"]
    assert (tmp_path / "a/adapter/adapter_model.safetensors").read_bytes() == (
        tmp_path / "b/adapter/adapter_model.safetensors"
    ).read_bytes()
