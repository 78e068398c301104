"""``distill export``: each format is written, runs outside the student's code, and passes the parity check;
the two known ways an export goes wrong (LoRA merged into a quantised base, a chat template that is not
the student's) are caught. Tiny models built from a config: no download."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distill.config import HeadStudent, LoraStudent
from distill.students import predict, train_student
from distill.students.export import Thresholds, check_export, export
from distill.students.gguf_export import ExportError, go_template
from tests.test_gguf_tokenizer import gguf_with_pre
from tests.tiny_lm import DIMS, SPEC, build_score_base, dataset


def _student_dir(tmp_path, kind: str, base: str) -> str:
    """A hand-written student.json (no training): what the checks before any work read."""
    folder = tmp_path / "student"
    folder.mkdir()
    (folder / "student.json").write_text(json.dumps({"kind": kind, "config": {"base_model": base}, "task": {}}))
    return str(folder)


def test_merging_into_a_quantised_base_is_refused_before_anything_is_written(tmp_path):
    base = tmp_path / "base-bnb-4bit"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"],
        "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}))
    model = _student_dir(tmp_path, "lora", str(base))
    with pytest.raises(ExportError, match=r"quantised \(bitsandbytes 4-bit\).*--base naming a float checkpoint"):
        export(model, "merged", tmp_path / "out", dataset(2), SPEC)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("kind", "fmt", "message"), [
    ("sklearn", "onnx", "needs no export"),
    ("lora", "onnx", "exports as merged or gguf"),
    ("head", "gguf", "exports as safetensors or onnx"),
])
def test_a_format_the_student_cannot_take_is_refused(tmp_path, kind, fmt, message):
    with pytest.raises(ExportError, match=message):
        export(_student_dir(tmp_path, kind, "minilm"), fmt, tmp_path / "out", dataset(2), SPEC)


# ----------------------------------------------------------------------------- a LoRA student
@pytest.fixture(scope="module")
def lora_student(tmp_path_factory):
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("lora-export")
    base = build_score_base(root / "base")
    cfg = LoraStudent(kind="lora", base_model=base, rank=16, alpha=32, dropout=0.0, max_steps=60, learning_rate=1e-2,
                      batch_size=4, save_steps=0, checkpoint_dir=str(root / "ckpt"),
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    train_student(cfg, dataset(8), [], SPEC, root / "student")  # as the train stage does: the filter
    rows = dataset(6, start=200)
    return str(root / "student"), rows, predict(root / "student", rows, SPEC)


@pytest.mark.slow
def test_a_merged_lora_export_loads_without_peft_and_answers_like_the_student(lora_student, tmp_path):
    model, rows, reference = lora_student
    assert sum(p["answer"] is not None for p in reference) >= 4  # answers worth comparing
    report = export(model, "merged", tmp_path / "merged", rows, SPEC)  # the student answers afresh here
    assert report["passed"] and report["answer_changes"] == 0 and report["template_mismatches"] == 0
    assert report["tier_flips"] == 0 and report["mae_delta"] == 0
    files = {p.name for p in (tmp_path / "merged").iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "export.json"} <= files
    assert not any(name.startswith("adapter") for name in files)  # merged: no peft needed to load it
    schema = json.loads((tmp_path / "merged/answer.schema.json").read_text())  # the student decodes under it
    assert schema == json.loads((Path(model) / "student.json").read_text())["task"]["schema"]
    assert schema["required"][: len(DIMS)] == DIMS
    assert json.loads((tmp_path / "merged/export.json").read_text())["parity"]["passed"] is True


def _quantise_4bit(path) -> None:
    """What merging into a 4-bit base does to the merged weights: every matrix rounded to 16 levels per
    block of 32 values (absmax scaling, as Q4_0 / NF4-style formats)."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(path)
    for name, w in weights.items():
        if w.ndim == 2 and "embed" not in name:
            blocks = w.reshape(-1, 32)
            scale = blocks.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 7
            weights[name] = (torch.round(blocks / scale).clamp(-8, 7) * scale).reshape(w.shape).contiguous()
    save_file(weights, path, metadata={"format": "pt"})


@pytest.mark.slow
def test_parity_catches_a_merge_into_quantised_weights(lora_student, tmp_path):
    model, rows, reference = lora_student
    export(model, "merged", tmp_path / "merged", rows, SPEC, reference=reference)
    _quantise_4bit(tmp_path / "merged/model.safetensors")
    with pytest.raises(ExportError, match="answers change") as e:
        check_export(tmp_path / "merged", rows, SPEC, reference=reference)
    assert "does not behave like the student" in str(e.value)
    assert not (tmp_path / "merged").exists() and (tmp_path / "merged.failed/export.json").is_file()
    report = json.loads((tmp_path / "merged.failed/export.json").read_text())["parity"]
    assert report["passed"] is False and report["answer_changes"] > 0


@pytest.mark.slow
def test_parity_catches_a_chat_template_that_is_not_the_students(lora_student, tmp_path):
    model, rows, reference = lora_student
    export(model, "merged", tmp_path / "merged", rows, SPEC, reference=reference)
    # the exported tokenizer carries another template: a common mistake when a tokenizer is copied from the base
    other = "{% for m in messages %}### {{ m['role'] }}:\n{{ m['content'] }}\n{% endfor %}### assistant:\n"
    for name in ("chat_template.jinja", "tokenizer_config.json"):
        path = tmp_path / "merged" / name
        if name.endswith(".jinja") and path.is_file():
            path.write_text(other)
        elif path.is_file():
            config = json.loads(path.read_text())
            if "chat_template" in config:
                config["chat_template"] = other
                path.write_text(json.dumps(config))
    with pytest.raises(ExportError, match="rendered differently by the export than by the student's chat template"):
        check_export(tmp_path / "merged", rows, SPEC, reference=reference)


@pytest.mark.slow
def test_a_gguf_export_runs_in_llama_cpp_with_the_students_template(lora_student, tmp_path):
    pytest.importorskip("llama_cpp")
    model, rows, reference = lora_student
    report = export(model, "gguf", tmp_path / "gguf", rows, SPEC, reference=reference)
    assert report["passed"] and report["template_mismatches"] == 0 and report["token_mismatches"] == 0
    # decoded under the answer's schema as the student is: llama.cpp's float32 kernels against torch's
    assert report["answer_changes"] <= 1 and report["valid_drop"] == 0
    info = json.loads((tmp_path / "gguf/export.json").read_text())
    modelfile = (tmp_path / "gguf/Modelfile").read_text()
    assert "FROM ./model.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert f'TEMPLATE """{go_template(info["wrapping"])}"""' in modelfile
    assert info["wrapping"]["user"] == ["<|im_start|>user\n", "<|im_end|>\n"]
    assert info["wrapping"]["generation"] == "<|im_start|>assistant\n"
    # the student decodes under its answer's schema, so a deployment must too: the schema ships beside it
    schema = json.loads((tmp_path / "gguf/answer.schema.json").read_text())
    assert schema == info["student"]["task"]["schema"] and set(schema["properties"]) >= set(DIMS)
    assert "decoding under answer.schema.json: send it as the request's `format`" in modelfile

    # a Modelfile whose template is edited no longer renders the student's prompts: the check fails
    shutil.copytree(tmp_path / "gguf", tmp_path / "edited")
    path = tmp_path / "edited/Modelfile"
    path.write_text(path.read_text().replace("<|im_start|>user\n", "<|im_start|>user "))
    with pytest.raises(ExportError, match="rendered differently"):
        check_export(tmp_path / "edited", rows, SPEC, reference=reference)

    # a GGUF whose pre-tokenizer splits text otherwise (llama.cpp's "default", what this export wrote before)
    # reads the same conversations as other token ids: the check fails on that, whatever the answers
    shutil.copytree(tmp_path / "gguf", tmp_path / "split")
    gguf_with_pre(tmp_path / "gguf/model.gguf", tmp_path / "split/model.gguf", "default")
    read_otherwise = r"conversations \(prompt and oracle answer\) are read as other token ids .*tokenizer.ggml.pre"
    with pytest.raises(ExportError, match=read_otherwise):
        check_export(tmp_path / "split", rows, SPEC, reference=reference)
    split = json.loads((tmp_path / "split.failed/export.json").read_text())["parity"]
    assert split["token_mismatches"] == len(rows) and split["template_mismatches"] == 0


# ----------------------------------------------------------------------------- a head student
@pytest.fixture(scope="module")
def head_student(tmp_path_factory):
    pytest.importorskip("torch")
    from tests.test_student_head import _rows, build_tiny_encoder

    root = tmp_path_factory.mktemp("head-export")
    base = build_tiny_encoder(root / "base")
    cfg = HeadStudent(kind="head", base_model=base, max_steps=60, batch_size=16, learning_rate=3e-3,
                      target_modules=["query", "key", "value", "dense"], save_steps=0,
                      checkpoint_dir=str(root / "ckpt"))
    train_student(cfg, _rows(64, 1), [], ["solar", "wind"], root / "student", scale_max=10)
    return str(root / "student"), _rows(12, 3)


@pytest.fixture
def keyword_task():
    """The head fixture's task (two dimensions, 0..10) as the export's metrics see it."""
    from distill.tasks import ScoreTask

    return ScoreTask(kind="score", name="kw", version="v1", description="keywords", system_prompt="Rate.",
                     template="p.md", scale_max=10,
                     dimensions=[{"name": "solar", "weight": 0.5, "question": "?", "rubric": {0: "none"}},
                                 {"name": "wind", "weight": 0.5, "question": "?", "rubric": {0: "none"}}],
                     tiers=[{"name": "high", "min_score": 5}, {"name": "low", "min_score": 0}])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "safetensors"])
def test_a_head_export_scores_like_the_student(head_student, keyword_task, tmp_path, fmt):
    model, rows = head_student
    rows = [{**r, **dict(zip(("overall", "tier"), keyword_task.score(r["scores"])))} for r in rows]
    report = export(model, fmt, tmp_path / fmt, rows, keyword_task, Thresholds(max_mae_delta=0.01, max_tier_flips=0))
    assert report["passed"] and report["tier_flips"] == 0
    assert report["max_score_drift"] < 1e-3  # the same arithmetic, in onnxruntime or plain transformers
    assert (tmp_path / fmt / ("model.onnx" if fmt == "onnx" else "model.safetensors")).is_file()


def test_the_export_command_takes_a_students_format_alone_and_with_an_output():
    """`distill export` writes the split's formats or, one at a time, the student's: mixing them, or a
    student's format without --output (the folder is replaced), is a usage error before any work."""
    from click.testing import CliRunner

    from distill.cli import main

    mixed = CliRunner().invoke(main, ["export", "--format", "gguf", "--format", "csv", "--output", "x"])
    assert mixed.exit_code == 2 and "one --format at a time" in mixed.output
    no_output = CliRunner().invoke(main, ["export", "--format", "onnx"])
    assert no_output.exit_code == 2 and "--output is required" in no_output.output
