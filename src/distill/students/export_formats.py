"""The torch side of ``distill export`` (run in a child process): write an export, and run an export on rows.

Formats: a LoRA student as ``merged`` (the adapter merged into the float base: a plain transformers
checkpoint, safetensors, with the student's tokenizer and chat template) or ``gguf``
(:mod:`distill.students.gguf_export`); a head student as ``safetensors`` (the adapter and head merged: an
``AutoModelForSequenceClassification`` checkpoint) or ``onnx`` (that model through ``torch.onnx.export``,
run with onnxruntime). Every export folder holds ``export.json``: the format, the student's manifest
(what reading its inputs and outputs needs) and, once checked, the parity report.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from distill.students.gguf_export import ExportError

EXPORT_JSON = "export.json"
FORMATS = {"lora": ("merged", "gguf"), "head": ("safetensors", "onnx")}


def read_export(output: str | Path) -> dict[str, Any]:
    path = Path(output) / EXPORT_JSON
    if not path.is_file():
        raise ExportError(f"{path} not found: {output} is not a `distill export` folder")
    return json.loads(path.read_text(encoding="utf-8"))


def write(model_dir: str, manifest: dict[str, Any], fmt: str, output: str, base: str | None = None,
          dtype: str = "f32") -> dict[str, Any]:
    """Write the export of the student in ``model_dir`` as ``fmt`` into ``output``; return export.json's data."""
    out = Path(output)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    info: dict[str, Any] = {"format": fmt, "student_dir": str(model_dir), "student": manifest, "base": base}
    if manifest["kind"] == "lora":
        from distill.students.bases import SMOLLM2, model_quantisation
        from distill.students.lora import load_for_inference

        model, tokenizer = load_for_inference(model_dir, manifest, merge=False, base=base)
        quantised = model_quantisation(model.get_base_model())
        if quantised:
            raise ExportError(_QUANTISED.format(base=base or manifest["config"]["base_model"], how=quantised))
        model = model.merge_and_unload()
        _stop_at_turn_end(model, tokenizer)
        constrained = _write_schema(out, manifest)
        if fmt == "merged":
            model.save_pretrained(out, safe_serialization=True)
            tokenizer.save_pretrained(out)
        else:
            from distill.students.gguf_export import modelfile, role_wrapping, write_gguf

            source = None
            if (base or manifest["config"]["base_model"]) == SMOLLM2:
                from distill.students.bases import packaged_gguf_path

                source = packaged_gguf_path()
            write_gguf(model, tokenizer, out / "model.gguf", source, dtype)
            wrapping = role_wrapping(tokenizer)
            max_new = manifest.get("max_new_tokens") or manifest["config"].get("max_new_tokens") or 160
            n_ctx = min(int(model.config.max_position_embeddings), 8192)
            (out / "Modelfile").write_text(modelfile(wrapping, "model.gguf", tokenizer.eos_token, n_ctx, max_new,
                                                     constrained=constrained), encoding="utf-8")
            info.update(wrapping=wrapping, n_ctx=n_ctx)
    elif manifest["kind"] == "head":
        from distill.students.head import load_for_inference

        model, tokenizer = load_for_inference(model_dir, manifest)
        model.to("cpu")
        tokenizer.save_pretrained(out)
        if fmt == "safetensors":
            model.save_pretrained(out, safe_serialization=True)
        else:
            _onnx(model, tokenizer, out / "model.onnx")
    info["files"] = sorted(p.name for p in out.iterdir())
    (out / EXPORT_JSON).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


_QUANTISED = ("the base {base} is quantised ({how}): merging the LoRA adapter into quantised weights rounds its update "
              "away (and dequantising first gives another model than the one trained). Export with --base naming a "
              "float checkpoint of the same model, or serve the adapter unmerged on the quantised base")


def _write_schema(out: Path, manifest: dict[str, Any]) -> bool:
    """The answer's JSON schema beside a generative export when the student decodes under it (a deployment
    should too: Ollama's ``format``, llama.cpp's ``json_schema``); whether it was written."""
    from distill.students.gguf_export import SCHEMA_FILE

    schema = (manifest.get("task") or {}).get("schema")
    if not schema or not manifest["config"].get("constrained", True):
        return False
    (out / SCHEMA_FILE).write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
    return True


def _stop_at_turn_end(model, tokenizer) -> None:
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None:
            cfg.eos_token_id = tokenizer.eos_token_id
            cfg.pad_token_id = tokenizer.pad_token_id


def _onnx(model, tokenizer, path: Path) -> None:
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    sample = tokenizer(["an example input", "another, longer example input for the shapes"], padding=True,
                       return_tensors="pt")
    model.eval()
    torch.onnx.export(Logits(model), (sample["input_ids"], sample["attention_mask"]), str(path),
                      input_names=["input_ids", "attention_mask"], output_names=["logits"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                                    "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)


# ----------------------------------------------------------------------------- running an export
def predict_exported(output: str, rows: list[dict], schemas: list[dict] | None = None) -> dict[str, Any]:
    """The export's predictions on ``rows`` (as a student's: see :func:`distill.students.predict`), and the
    ids whose prompt the export renders differently from the student (``template_mismatches``) or reads as
    other token ids (``token_mismatches``, a GGUF run in llama.cpp)."""
    info = read_export(output)
    manifest, fmt = info["student"], info["format"]
    task = manifest["task"]
    ids = [r["id"] for r in rows]
    if manifest["kind"] == "head":
        from distill.students.head import encode_inputs, outputs_to_predictions

        tokenizer = _tokenizer(output)
        items = encode_inputs(tokenizer, rows, manifest)
        logits = _onnx_logits(Path(output) / "model.onnx", tokenizer, items) if fmt == "onnx" else \
            _torch_logits(output, tokenizer, items, manifest)
        return {"predictions": outputs_to_predictions(ids, logits, task), "template_mismatches": []}

    from distill.students import prediction_from_text, prompt_messages

    student_tok = _tokenizer(Path(info["student_dir"]) / "adapter")
    prompts = [prompt_messages(r) for r in rows]
    wanted = [student_tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    max_new = manifest.get("max_new_tokens") or manifest["config"].get("max_new_tokens") or 160
    schemas = schemas or [task.get("schema")] * len(rows)
    guided = schemas if manifest["config"].get("constrained", True) else None  # as the student decodes
    if fmt == "merged":
        import torch
        from transformers import AutoModelForCausalLM

        from distill.students.lora import generate

        tokenizer = _tokenizer(output)
        tokenizer.padding_side = "left"
        rendered = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
        mismatches = [i for i, a, b in zip(ids, rendered, wanted) if a != b]
        split: list[str] = []  # the student's own tokenizer, saved with the model
        model = AutoModelForCausalLM.from_pretrained(output, dtype=torch.float32).eval()
        texts = generate(model, tokenizer, prompts, max_new, manifest["config"].get("predict_batch_size", 8),
                         schemas=guided, layout=manifest.get("answer_layout"))
    else:
        answers = [next((m["content"] for m in r["messages"] if m["role"] == "assistant"), "") for r in rows]
        texts, mismatches, split = _gguf_answers(output, info, prompts, answers, wanted, ids, student_tok, max_new,
                                                 guided, manifest.get("answer_layout"))
    return {"predictions": [prediction_from_text(i, t, s, task) for i, t, s in zip(ids, texts, schemas)],
            "template_mismatches": mismatches, "token_mismatches": split}


def _gguf_answers(output, info, prompts, answers, wanted, ids, student_tok, max_new, schemas, layout
                  ) -> tuple[list[str], list[str], list[str]]:
    """llama.cpp's answers to the prompts as the Modelfile renders them, under ``schemas`` in ``layout`` when
    the student decodes under its schema (None: free); the ids whose rendering (by the Modelfile, or by the
    chat template inside the GGUF) differs from the student's; the ids whose conversation (the rendered
    prompt and the oracle's ``answers``, what the student was trained on) llama.cpp reads as other token
    ids than the student's tokenizer does."""
    import gguf

    from distill.isolation import call_isolated, package_version
    from distill.students.gguf_export import go_template, render_wrapped

    wrapping = info["wrapping"]
    modelfile = (Path(output) / "Modelfile").read_text(encoding="utf-8")
    reader = gguf.GGUFReader(str(Path(output) / "model.gguf"))
    embedded = reader.fields["tokenizer.chat_template"].contents()
    rendered = [render_wrapped(wrapping, p) for p in prompts]
    by_gguf = [student_tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True, chat_template=embedded)
               for p in prompts]
    same_modelfile = f'TEMPLATE """{go_template(wrapping)}"""' in modelfile
    mismatches = [i for i, a, b, w in zip(ids, rendered, by_gguf, wanted) if a != w or b != w or not same_modelfile]
    conversations = [p + a for p, a in zip(rendered, answers)]
    student_ids = [student_tok(t, add_special_tokens=False)["input_ids"] for t in conversations]
    n_ctx = min(info["n_ctx"], max(map(len, student_ids), default=0) + max_new + 16)
    run = call_isolated("distill.students.gguf_export:generate_gguf", runtime=f"llama.cpp (llama-cpp-python "
                        f"{package_version('llama-cpp-python')})", doing="running the GGUF export",
                        path=str(Path(output) / "model.gguf"), prompts=rendered, max_new_tokens=max_new, n_ctx=n_ctx,
                        schemas=schemas, layout=layout, read=conversations)
    split = [i for i, a, b in zip(ids, run["read_tokens"], student_ids) if list(a) != list(b)]
    return run["texts"], mismatches, split


def _tokenizer(path):
    from distill.students.bases import load_tokenizer

    return load_tokenizer(str(path))


def _torch_logits(output, tokenizer, items, manifest) -> list[list[float]]:
    import torch
    from transformers import AutoModelForSequenceClassification

    from distill.students.head import _logits

    model = AutoModelForSequenceClassification.from_pretrained(output, dtype=torch.float32).eval()
    return _logits(model, tokenizer, items, manifest["config"])


def _onnx_logits(path: Path, tokenizer, items: list[dict], batch: int = 8) -> list[list[float]]:
    import numpy as np
    import onnxruntime
    from transformers import DataCollatorWithPadding

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    collate = DataCollatorWithPadding(tokenizer, return_tensors="np")
    out: list[list[float]] = []
    for start in range(0, len(items), batch):
        enc = collate([{k: v for k, v in i.items() if k != "labels"} for i in items[start : start + batch]])
        feed = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
        out.extend(session.run(["logits"], feed)[0].astype(float).tolist())
    return out
