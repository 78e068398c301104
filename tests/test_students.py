"""Students: the sklearn baseline and the LoRA student (on a tiny Qwen2 built from a config)."""

from __future__ import annotations

import pytest

from distill.config import LoraStudent, SklearnStudent
from distill.students import predict, read_manifest, train_student
from tests.tiny_lm import DIMS, SPEC, build_score_base, dataset, served_batch_after_batch


def test_sklearn_student_learns_and_round_trips_without_pickle(tmp_path):
    train, val, test = dataset(40), dataset(8), dataset(12)
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


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    pytest.importorskip("torch")
    return build_score_base(tmp_path_factory.mktemp("tiny-base"))


@pytest.mark.slow
def test_lora_student_trains_saves_adapter_and_generates(tiny_base, tmp_path):
    train = dataset(8)
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
    held_out = dataset(8, start=100)
    preds = predict(tmp_path / "m", held_out, SPEC.json_schema)
    assert [p["id"] for p in preds] == [e["id"] for e in held_out]
    valid = [(p, e) for p, e in zip(preds, held_out) if p["scores"] is not None]
    assert len(valid) >= 6, [p["raw"] for p in preds]
    assert all(p["invalid_reason"] for p in preds if p["scores"] is None)
    right = sum(p["scores"] == e["scores"] for p, e in valid)
    assert right >= len(valid) - 1, [(p["scores"], e["scores"]) for p, e in valid]


@pytest.mark.slow
def test_lora_training_is_reproducible(tiny_base, tmp_path):
    train = dataset(8)
    cfg = LoraStudent(kind="lora", base_model=tiny_base, max_steps=5, batch_size=2, max_length=256)
    a = train_student(cfg, train, [], DIMS, tmp_path / "a")
    b = train_student(cfg, train, [], DIMS, tmp_path / "b")
    assert a["train_loss"] == b["train_loss"]
    assert (tmp_path / "a/adapter/adapter_model.safetensors").read_bytes() == (
        tmp_path / "b/adapter/adapter_model.safetensors"
    ).read_bytes()


@pytest.mark.slow
def test_a_lora_student_serves_batch_after_batch_from_one_child(tiny_base, tmp_path):
    """`distill infer` / `distill chat` keep one child serving the LoRA student: its answers are the ones
    a one-shot predict gives, batch after batch."""
    cfg = LoraStudent(kind="lora", base_model=tiny_base, max_steps=5, batch_size=2, max_length=256,
                      max_new_tokens=60)
    train_student(cfg, dataset(8), [], SPEC, tmp_path / "m")
    served_batch_after_batch(tmp_path / "m", dataset(6, start=100), SPEC)
