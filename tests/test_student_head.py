"""The head student (LoRA + a regression / classification head) on a tiny BERT built from a config."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from distill.config import HeadStudent
from distill.errors import ConfigError
from distill.stats import REPLICATES, percentile_interval, resample_counts
from distill.students import predict, read_manifest, train_student
from distill.students.head import input_text, shared_parts

INSTRUCTIONS = "Count the keywords.\nRubric: solar and wind.\n"
CLOSING = "\nAnswer with JSON."
FILLER = ["the", "plant", "report", "city", "grid", "power", "news", "today", "market", "storage"]
DIMS = ["solar", "wind"]


def _row(i: int, rng: random.Random) -> dict:
    """A prompt whose scores are a known function of its text: 2 points per 'solar' (capped at 10) and
    3 per 'wind' (capped at 10)."""
    n_solar, n_wind = rng.randint(0, 5), rng.randint(0, 5)
    words = [rng.choice(FILLER) for _ in range(12)] + ["solar"] * n_solar + ["wind"] * n_wind
    rng.shuffle(words)
    scores = {"solar": min(2 * n_solar, 10), "wind": min(3 * n_wind, 10)}
    user = f"{INSTRUCTIONS}Title: item {i}\n{' '.join(words)}{CLOSING}"
    return {"id": f"r{i}", "scores": scores,
            "messages": [{"role": "system", "content": "Rate."}, {"role": "user", "content": user},
                         {"role": "assistant", "content": json.dumps(scores)}]}


def _rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [_row(seed * 1000 + i, rng) for i in range(n)]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    pytest.importorskip("torch")
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))


def build_tiny_encoder(root) -> str:
    """A 2-layer BERT with a word-level tokenizer trained here, randomly initialised: no download."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    texts = [r["messages"][1]["content"] for r in _rows(50, 99)]
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", model_max_length=128)
    fast.save_pretrained(root)
    import torch

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(fast), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=128, hidden_dropout_prob=0.0,
                        pad_token_id=fast.pad_token_id)
    BertModel(config).save_pretrained(root)
    return str(root)


def test_shared_instructions_are_cut_to_whole_lines():
    texts = ["Rate it.\nRubric\nTitle: a\nbody one\nAnswer now.", "Rate it.\nRubric\nTitle: b\nbody two\nAnswer now."]
    prefix, suffix = shared_parts(texts)
    assert (prefix, suffix) == ("Rate it.\nRubric\n", "\nAnswer now.")
    row = {"messages": [{"role": "user", "content": texts[0]}]}
    assert input_text(row, {"prefix": prefix, "suffix": suffix}) == "Title: a\nbody one"
    # a prompt that does not start with the saved prefix is read whole
    other = {"messages": [{"role": "user", "content": "Something else\nAnswer now."}]}
    assert input_text(other, {"prefix": prefix, "suffix": suffix}) == "Something else"


def test_head_student_beats_the_mean_predictor_on_keyword_counts(tiny_encoder, tmp_path):
    train, val, test = _rows(160, 1), _rows(16, 2), _rows(40, 3)
    cfg = HeadStudent(kind="head", base_model=tiny_encoder, max_steps=400, batch_size=16, learning_rate=3e-3,
                      target_modules=["query", "key", "value", "dense"], save_steps=0,
                      checkpoint_dir=str(tmp_path / "ckpt"))
    metrics = train_student(cfg, train, val, DIMS, tmp_path / "m", scale_max=10)
    assert metrics["steps"] == 400 and metrics["last_step_loss"] < metrics["first_step_loss"]
    manifest = read_manifest(tmp_path / "m")
    assert manifest["kind"] == "head" and manifest["load"]["problem_type"] == "regression"
    assert manifest["input"]["prefix"].endswith("solar and wind.\n")  # the shared instructions are not read
    assert (tmp_path / "m/adapter/adapter_model.safetensors").is_file()

    preds = predict(tmp_path / "m", test)
    assert [p["id"] for p in preds] == [r["id"] for r in test]
    assert all(0 <= v <= 10 for p in preds for v in p["scores"].values())
    for d in DIMS:
        mean = sum(r["scores"][d] for r in train) / len(train)
        mae_mean = sum(abs(mean - r["scores"][d]) for r in test) / len(test)
        mae_head = sum(abs(p["scores"][d] - r["scores"][d]) for p, r in zip(preds, test)) / len(test)
        assert mae_head < 0.5 * mae_mean, (d, mae_head, mae_mean)
    # per test item: the head's mean absolute error over the dimensions minus the mean predictor's
    means = {d: sum(r["scores"][d] for r in train) / len(train) for d in DIMS}
    per_item = np.array([sum(abs(p["scores"][d] - r["scores"][d]) - abs(means[d] - r["scores"][d]) for d in DIMS)
                         / len(DIMS) for p, r in zip(preds, test)])
    # the paired bootstrap interval evaluate reports for student - baseline: it excludes zero
    replicates = resample_counts(len(per_item), REPLICATES, 0) @ per_item / len(per_item)
    lo, hi = percentile_interval(replicates)
    assert lo < hi < 0, (lo, hi)


def test_head_student_classifies(tiny_encoder, tmp_path):
    """single-label: 'mostly solar' vs 'mostly wind' vs 'neither'."""
    def labelled(rows):
        out = []
        for r in rows:
            s, w = r["scores"]["solar"] / 2, r["scores"]["wind"] / 3
            label = "none" if s == w == 0 else ("solar" if s >= w else "wind")
            out.append({**r, "labels": [label]})
        return out

    task = {"kind": "classify", "labels": ["solar", "wind", "none"], "multi_label": False,
            "schema": {"type": "object"}}
    from distill.students import head

    train, test = labelled(_rows(160, 4)), labelled(_rows(40, 5))
    cfg = HeadStudent(kind="head", base_model=tiny_encoder, max_steps=400, batch_size=16, learning_rate=3e-3,
                      target_modules=["query", "key", "value", "dense"], save_steps=0,
                      checkpoint_dir=str(tmp_path / "ckpt"))
    head.train(cfg, train, [], task, tmp_path / "m")
    preds = head.predict(tmp_path / "m", test, read_manifest(tmp_path / "m"))
    right = sum(p["answer"]["label"] == r["labels"][0] for p, r in zip(preds, test))
    majority = max(sum(r["labels"][0] == lab for r in test) for lab in task["labels"])
    assert right > majority + 5, (right, majority)


def test_head_student_refuses_a_task_it_cannot_learn(tmp_path):
    cfg = HeadStudent(kind="head", base_model="minilm", checkpoint_dir=str(tmp_path / "c"))
    from distill.students import head

    with pytest.raises(ConfigError, match="use student=lora"):
        head.train(cfg, [], [], {"kind": "translate"}, tmp_path / "m")


def test_a_missing_base_fails_before_any_work(tmp_path):
    cfg = HeadStudent(kind="head", base_model="no-such-org/no-such-model", checkpoint_dir=str(tmp_path / "c"))
    with pytest.raises(ConfigError, match="allow_download=true"):
        train_student(cfg, _rows(4, 1), [], DIMS, tmp_path / "m")
    cfg = HeadStudent(kind="head", base_model=str(tmp_path / "nothing-here"), checkpoint_dir=str(tmp_path / "c"))
    with pytest.raises(ConfigError, match="no config.json"):
        train_student(cfg, _rows(4, 1), [], DIMS, tmp_path / "m")


def test_head_student_is_refused_for_a_kind_it_cannot_learn_before_any_work(tmp_path):
    """An extract filter with student=head: the same config error as sklearn's, naming student=lora, before
    the base is even looked for."""
    from pathlib import Path

    from distill.filterspec import load_filter
    from distill.students import student_problem

    extract = load_filter(Path(__file__).resolve().parents[1] / "filters/news_entities/v1")
    cfg = HeadStudent(kind="head", base_model="no-such-org/no-such-model", checkpoint_dir=str(tmp_path / "c"))
    assert "use student=lora" in student_problem(cfg, extract)
    with pytest.raises(ConfigError, match="student=head learns score and classify"):
        train_student(cfg, _rows(4, 1), [], extract, tmp_path / "m")


def test_a_head_student_serves_batch_after_batch_from_one_child(tiny_encoder, tmp_path):
    """`distill infer` / `distill chat` serve a head student like a LoRA one: one child loads it once and
    answers batch after batch, as a one-shot predict does; the rows carry scores, overall and tier."""
    from distill.inference import output_row
    from tests.tiny_lm import SPEC, dataset, served_batch_after_batch

    cfg = HeadStudent(kind="head", base_model=tiny_encoder, max_steps=5, batch_size=4, save_steps=0,
                      target_modules=["query", "value"], checkpoint_dir=str(tmp_path / "ckpt"))
    train_student(cfg, dataset(8), [], SPEC, tmp_path / "m")
    first = served_batch_after_batch(tmp_path / "m", dataset(6, start=100), SPEC)
    row = output_row(first[0], SPEC)
    assert set(row["scores"]) == set(SPEC.dimension_names) and row["tier"] in SPEC.tier_names
