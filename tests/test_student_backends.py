"""Which library trains the LoRA student (peft + trl, or unsloth on a CUDA GPU), and the GPU measurements.

The GPU tests are marked ``gpu``: tests/conftest.py deselects them where torch sees no CUDA device, so
they are never reported as passed there. On a GPU machine with the gpu extra (``pip install -e
'.[gpu]'``) they train a few steps with unsloth and with peft + trl on the same base and data and
compare tokens/s and peak memory (written to tests/artifacts/gpu_backends.json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from distill.errors import ConfigError
from distill.students import backends
from tests.tiny_lm import SPEC, dataset


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(backends, "cuda_available", lambda: False)


@pytest.fixture
def gpu_without_unsloth(monkeypatch):
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    monkeypatch.setitem(sys.modules, "unsloth", None)  # `import unsloth` raises ImportError


def test_on_a_cpu_auto_is_peft_and_unsloth_is_a_config_error_naming_peft(no_gpu):
    assert backends.choose("auto") == "peft"
    assert backends.choose("peft") == "peft"
    with pytest.raises(ConfigError, match="needs a CUDA GPU.*student.backend=peft"):
        backends.choose("unsloth")


def test_with_a_gpu_but_no_unsloth_auto_falls_back_to_peft(gpu_without_unsloth):
    assert backends.choose("auto") == "peft"
    with pytest.raises(ConfigError, match=r"install the gpu extra.*student.backend=peft"):
        backends.choose("unsloth")


@pytest.mark.parametrize("error", ["NotImplementedError", "RuntimeError", "AssertionError", "ImportError"])
def test_every_way_unsloth_refuses_to_import_is_caught(tmp_path, monkeypatch, error):
    """unsloth raises NotImplementedError without a GPU, RuntimeError or AssertionError on unsupported ones."""
    pkg = tmp_path / "unsloth"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"raise {error}('Unsloth: No NVIDIA GPU found?')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "unsloth", raising=False)
    assert backends.probe_unsloth() == f"{error}: Unsloth: No NVIDIA GPU found?"
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    assert backends.choose("auto") == "peft"


# ----------------------------------------------------------------------------- on a CUDA GPU only
def _gpu_rows(n: int) -> list[dict]:
    """Demo-sized prompts (about 700 tokens): the rubric and a long article, and a JSON answer."""
    rows = []
    for r in dataset(n):
        record = {"id": r["id"], "title": "A solar farm", "text": r["messages"][1]["content"] + " The plant" * 150,
                  "metadata": {}}
        rows.append({**r, "messages": [*SPEC.render(record), r["messages"][2]]})
    return rows


def _train_on_gpu(backend: str, tmp_path: Path) -> dict:
    import torch

    from distill.config import LoraStudent
    from distill.students import lora, task_info

    torch.cuda.reset_peak_memory_stats()
    cfg = LoraStudent(kind="lora", base_model="smollm2-gguf", backend=backend, max_steps=20, batch_size=4,
                      grad_accum=1, learning_rate=1e-3, save_steps=0, checkpoint_dir=str(tmp_path / "ckpt"))
    # in this process (not a child): the GPU's peak memory is this process's
    metrics = lora.train(cfg, _gpu_rows(40), [], task_info(SPEC), tmp_path / backend)
    metrics["peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return metrics


@pytest.mark.gpu
@pytest.mark.slow
def test_unsloth_trains_on_the_gpu_and_is_compared_with_peft(tmp_path):
    assert backends.choose("auto") == "unsloth", "the gpu extra is not installed: pip install -e '.[gpu]'"
    unsloth = _train_on_gpu("unsloth", tmp_path)
    peft = _train_on_gpu("peft", tmp_path)
    report = {"unsloth": unsloth, "peft": peft,
              "tokens_per_second_ratio": round(unsloth["tokens_per_second"] / peft["tokens_per_second"], 2)}
    out = Path(__file__).parent / "artifacts" / "gpu_backends.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    for m in (unsloth, peft):
        assert m["steps"] == 20 and m["last_step_loss"] < m["first_step_loss"]
    assert unsloth["backend"] == "unsloth" and peft["backend"] == "peft"
    # the 4-bit base holds less memory than the bf16 one, whatever the speed
    assert unsloth["peak_memory_mb"] < peft["peak_memory_mb"], report


@pytest.mark.gpu
@pytest.mark.slow
def test_an_unsloth_student_predicts_schema_valid_answers_on_the_gpu(tmp_path):
    from distill.config import LoraStudent
    from distill.students import predict, task_info, train_student

    cfg = LoraStudent(kind="lora", base_model="smollm2-gguf", backend="unsloth", max_steps=60, batch_size=8,
                      learning_rate=1e-3, save_steps=0, checkpoint_dir=str(tmp_path / "ckpt"))
    train_student(cfg, _gpu_rows(64), [], task_info(SPEC), tmp_path / "m")
    preds = predict(tmp_path / "m", _gpu_rows(8), SPEC)
    assert sum(p["answer"] is not None for p in preds) >= 7, [p["raw"] for p in preds]
