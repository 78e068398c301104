"""The generative LoRA student's training data and training runs: the loss is on the assistant turn only
(token by token, in the batch the trainer collates), templates that cannot give that are refused, no
example is truncated, and an interrupted run resumes from its last checkpoint."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from distill.config import LoraStudent
from distill.errors import ConfigError
from distill.students import task_info, train_student
from distill.students.chat_data import IGNORE, TemplateError, prepare, render_prompt
from tests.tiny_lm import CHAT_TEMPLATE, DIMS, build_score_base, build_tokenizer, dataset, score_texts


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    pytest.importorskip("transformers")
    return build_tokenizer(tmp_path_factory.mktemp("tok"), score_texts())


@pytest.fixture(scope="module")
def random_base(tmp_path_factory):
    """The tiny Qwen2 with random weights: enough for the plumbing, built in a second."""
    pytest.importorskip("torch")
    return build_score_base(tmp_path_factory.mktemp("random-base"), steps=0)


def _prompt_ids(tokenizer, row) -> list[int]:
    text = tokenizer.apply_chat_template(row["messages"][:2], tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_prompt_tokens_are_masked_in_the_collated_batch(random_base, tmp_path):
    """What the trainer really feeds the model: prompt tokens (exactly those the model reads when it
    predicts) are -100, the answer and the end-of-turn token are learnt, padding is -100."""
    from transformers import AutoTokenizer

    from distill.students import lora

    rows = dataset(3)
    rows[1]["messages"][1]["content"] += " A much longer article body, so that the batch needs padding." * 3
    cfg = LoraStudent(kind="lora", base_model=random_base, batch_size=3, grad_accum=1, max_steps=1, save_steps=0,
                      checkpoint_dir=str(tmp_path / "ckpt"))
    built = lora.build(cfg, rows, [], task_info(DIMS), tmp_path / "ckpt" / "run")
    batch = next(iter(built["trainer"].get_train_dataloader()))
    tok = AutoTokenizer.from_pretrained(random_base)
    assert batch["input_ids"].shape[0] == 3
    seen = set()
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        row = next(r for r in rows if ids[: len(_prompt_ids(tok, r))] == _prompt_ids(tok, r))
        seen.add(row["id"])
        n = len(_prompt_ids(tok, row))
        assert labels[:n] == [IGNORE] * n  # every prompt token, system and user and the generation prompt
        learnt = [t for t in labels[n:] if t != IGNORE]
        assert tok.decode(learnt) == row["messages"][2]["content"] + "<|im_end|>"
        first_ignored_after = next((i for i, t in enumerate(labels[n:]) if t == IGNORE), len(labels) - n)
        assert labels[n : n + first_ignored_after] == ids[n : n + first_ignored_after]  # contiguous: the answer
        assert all(t == IGNORE for t in labels[n + len(learnt):])  # the newline after the turn, and padding
    assert seen == {r["id"] for r in rows}


def test_a_template_that_renders_the_prompt_differently_is_refused(tmp_path):
    pytest.importorskip("transformers")
    # the generation prompt opens a "thinking" block the full conversation does not have
    template = CHAT_TEMPLATE.replace("<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant\n<think>{% endif %}")
    tok = build_tokenizer(tmp_path, score_texts(), chat_template=template)
    with pytest.raises(TemplateError, match="renders the prompt differently"):
        prepare(tok, dataset(2), None)


def test_a_template_whose_turn_does_not_end_with_eos_is_refused(tokenizer):
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.eos_token = "<pad>"  # the template ends turns with <|im_end|>: generation would never stop
    with pytest.raises(TemplateError, match="never learn to stop"):
        prepare(tokenizer, dataset(2), None)


def test_a_template_that_rewrites_the_answer_is_refused(tmp_path):
    pytest.importorskip("transformers")
    template = CHAT_TEMPLATE.replace("{{ m['content'] }}", "{{ m['content'] | trim | upper }}")
    tok = build_tokenizer(tmp_path, score_texts(), chat_template=template)
    with pytest.raises(TemplateError, match="verbatim"):
        prepare(tok, dataset(2), None)


def test_a_base_without_a_chat_template_is_refused(tmp_path):
    pytest.importorskip("transformers")
    tok = build_tokenizer(tmp_path, score_texts(), chat_template=None)
    with pytest.raises(TemplateError, match="no chat template"):
        prepare(tok, dataset(2), None)


def test_too_long_examples_fail_naming_the_longest_or_are_dropped_and_counted(tokenizer):
    rows = dataset(4)
    rows[2]["messages"][1]["content"] += " more words" * 40
    lengths = {r["id"]: len(prepare(tokenizer, [r], None).examples[0].input_ids) for r in rows}
    limit = sorted(lengths.values())[-2]  # every example fits but the long one
    with pytest.raises(ConfigError) as e:
        prepare(tokenizer, rows, limit)
    assert f"the longest, {rows[2]['id']}, is {lengths[rows[2]['id']]} tokens" in str(e.value)
    assert "student.max_length" in str(e.value) and "on_too_long=drop" in str(e.value)
    dropped = prepare(tokenizer, rows, limit, on_too_long="drop")
    assert dropped.dropped == [rows[2]["id"]] and len(dropped.examples) == 3
    assert all(len(x.input_ids) <= limit for x in dropped.examples)
    # no limit: the longest example sets the length, nothing is cut
    whole = prepare(tokenizer, rows, None)
    assert whole.longest == max(lengths.values()) and not whole.dropped


def test_the_answer_budget_comes_from_the_longest_training_answer(tokenizer):
    rows = dataset(4)
    prepared = prepare(tokenizer, rows, None)
    longest = max(len(tokenizer(r["messages"][2]["content"] + "<|im_end|>", add_special_tokens=False)["input_ids"])
                  for r in rows)
    assert prepared.longest_answer == longest
    text = render_prompt(tokenizer, rows[0]["messages"][:2])
    assert text.endswith("<|im_start|>assistant\n")


_INTERRUPTED_RUN = """
import json, sys
from distill.config import LoraStudent
from distill.students import train_student
cfg = LoraStudent.model_validate(json.loads(sys.argv[1]))
data = json.loads(open(sys.argv[2]).read())
train_student(cfg, data["train"], data["val"], data["dims"], sys.argv[3], curves_dir=sys.argv[4])
"""


@pytest.mark.slow
def test_an_interrupted_training_resumes_from_its_last_checkpoint(random_base, tmp_path):
    from safetensors.torch import load_file

    from distill.students.training import checkpoint_folder, last_checkpoint

    train, val = dataset(16), dataset(2, start=50)
    cfg = LoraStudent(kind="lora", base_model=random_base, max_steps=60, save_steps=4, batch_size=4, grad_accum=2,
                      learning_rate=5e-3, checkpoint_dir=str(tmp_path / "ckpt"))
    folder = checkpoint_folder(cfg, "lora", task_info(DIMS), train, val)
    (tmp_path / "data.json").write_text(json.dumps({"train": train, "val": val, "dims": DIMS}))

    # a run killed (SIGKILL, the whole process group: the stage and its training child) after its first checkpoint
    proc = subprocess.Popen([sys.executable, "-c", _INTERRUPTED_RUN, cfg.model_dump_json(), str(tmp_path / "data.json"),
                             str(tmp_path / "killed"), str(tmp_path / "curves")], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while last_checkpoint(folder) is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "student.json").exists(), "the run finished before it could be interrupted"
    at_kill = last_checkpoint(folder)
    assert at_kill is not None, proc.stderr.read().decode()[-3000:]
    step = int(at_kill.name.split("-")[-1])
    assert 4 <= step < 60

    resumed = train_student(cfg, train, val, DIMS, tmp_path / "resumed", curves_dir=tmp_path / "curves")
    assert resumed["resumed_from_step"] == step and resumed["steps"] == 60
    assert not folder.exists()  # checkpoints go once the model is saved
    # the curve is whole: every step once, the resumed part after the replayed one
    header, *lines = (tmp_path / "curves/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert header.split("\t") == ["step", "loss"]
    assert [int(x.split("\t")[0]) for x in lines] == list(range(1, 61))
    assert (tmp_path / "curves/plots/metrics/eval/loss.tsv").is_file()

    whole = train_student(cfg.model_copy(update={"checkpoint_dir": str(tmp_path / "other")}), train, val, DIMS,
                          tmp_path / "whole")
    assert whole["resumed_from_step"] == 0 and whole["steps"] == 60
    a = load_file(tmp_path / "resumed/adapter/adapter_model.safetensors")
    b = load_file(tmp_path / "whole/adapter/adapter_model.safetensors")
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, worst
    assert resumed["last_step_loss"] == pytest.approx(whole["last_step_loss"], abs=1e-4)


def test_schema_constrained_decoding_makes_a_random_model_answer_valid_json(random_base):
    """The same untrained model, the same prompts: under the schema every answer validates and respects its
    bounds (in the schema's key order); without it (what the weights alone write) none does."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill import validate
    from distill.students.guided import layout_of
    from distill.students.lora import generate
    from tests.tiny_lm import SPEC

    tokenizer = AutoTokenizer.from_pretrained(random_base)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(random_base).eval()
    schema = SPEC.json_schema
    schema = {**schema, "properties": {**schema["properties"],
                                       "reasoning": {**schema["properties"]["reasoning"], "maxLength": 40}}}
    prompts = [r["messages"][:2] for r in dataset(6)]
    layout = layout_of([r["messages"][2]["content"] for r in dataset(6)])  # as the student's training answers
    assert layout == {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
    free = generate(model, tokenizer, prompts, 120, 3)
    guided = generate(model, tokenizer, prompts, 120, 3, schemas=[schema] * len(prompts), layout=layout)
    assert not any(isinstance(validate.check(t, schema), dict) for t in free), free
    answers = [validate.check(t, schema) for t in guided]
    assert all(isinstance(a, dict) for a in answers), guided
    for a in answers:
        assert list(a) == list(schema["properties"])  # the order the oracle's answers have
        assert all(0 <= a[d] <= 10 for d in DIMS) and len(a["reasoning"]) <= 40
    assert all(t == json.dumps(a, separators=(", ", ": ")) for t, a in zip(guided, answers))  # the layout
