"""The head student: a pretrained transformer with a LoRA adapter and a head that predicts the answer directly.

- ``score``: ``AutoModelForSequenceClassification`` with ``problem_type="regression"``, one output per
  dimension, trained on the scores divided by ``scale_max`` (0..1); predictions are multiplied back and
  clipped to 0..scale_max. Overall score and tier come from the predicted scores, as for every student.
- ``classify``: one output per label; ``single_label_classification`` (the most likely label) or, for a
  multi-label task, ``multi_label_classification`` (every label above 0.5, else the most likely one).

It reads the part of the prompt that varies between records: the text before the first and after the
last line every training prompt shares (the instructions, the rubric) is cut, since a head never reads
them as instructions and an encoder's 512 positions are better spent on the record. What was cut is in
``student.json`` and is cut the same way at prediction. An input longer than ``max_length`` (null: the
base's limit) keeps its start and is counted (``truncated``): a regression over the first 512 tokens of
an article is still a prediction, unlike a generative answer cut short.

The default base is ``minilm`` (all-MiniLM-L6-v2, 22M parameters, packaged; ``benchmarks/student.py
--students head`` measures it on BBC sections). Saved: ``adapter/`` (peft: LoRA weights and the head, safetensors;
the tokenizer) and ``student.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from distill.errors import ConfigError
from distill.students import HEAD_KINDS as KINDS
from distill.students import loaded_once, save_manifest, user_text

log = logging.getLogger("distill")


def shared_parts(texts: list[str]) -> tuple[str, str]:
    """The longest prefix and suffix every text shares, cut back to whole lines ('' when fewer than 2)."""
    if len(texts) < 2:
        return "", ""
    import os

    prefix = os.path.commonprefix(texts)
    prefix = prefix[: prefix.rfind("\n") + 1]
    suffix = os.path.commonprefix([t[::-1] for t in texts])[::-1]
    suffix = suffix[suffix.find("\n"):] if "\n" in suffix else ""
    if any(len(prefix) + len(suffix) > len(t) for t in texts):
        suffix = ""
    return prefix, suffix


def input_text(row: dict[str, Any], strip: dict[str, str]) -> str:
    """What the head reads of ``row``: the user prompt without the parts all training prompts share."""
    text = user_text(row)
    prefix, suffix = strip.get("prefix", ""), strip.get("suffix", "")
    if prefix and text.startswith(prefix):
        text = text[len(prefix):]
    if suffix and text.endswith(suffix):
        text = text[: -len(suffix)]
    return text


def problem(task: dict[str, Any]) -> tuple[str, int]:
    """(problem_type, outputs) for ``task``."""
    if task["kind"] == "score":
        return "regression", len(task["dimensions"])
    if task["kind"] == "classify":
        return ("multi_label_classification" if task.get("multi_label") else "single_label_classification",
                len(task["labels"]))
    raise ConfigError(f"student=head learns {' and '.join(KINDS)} tasks; this filter is a {task['kind']} task: "
                      "use student=lora")


def target(row: dict[str, Any], task: dict[str, Any]) -> Any:
    if task["kind"] == "score":
        return [float(row["scores"][d]) / task["scale_max"] for d in task["dimensions"]]
    if task.get("multi_label"):
        return [1.0 if label in row["labels"] else 0.0 for label in task["labels"]]
    return task["labels"].index(row["labels"][0])


def _encode(tokenizer, rows: list[dict], strip: dict[str, str], max_length: int, task: dict[str, Any] | None):
    enc = tokenizer([input_text(r, strip) for r in rows], truncation=True, max_length=max_length)
    full = tokenizer([input_text(r, strip) for r in rows])["input_ids"]
    truncated = sum(len(ids) > max_length for ids in full)
    items = []
    for i in range(len(rows)):
        item = {"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i]}
        if task is not None:
            item["labels"] = target(rows[i], task)
        items.append(item)
    return items, truncated, max((len(ids) for ids in full), default=0)


def _limit(cfg_max: int | None, tokenizer, model_config) -> int:
    limits = [n for n in (getattr(model_config, "max_position_embeddings", None), tokenizer.model_max_length)
              if isinstance(n, int) and 0 < n < 1_000_000]
    return cfg_max or min(limits, default=512)


def _load_model(base: str, task: dict[str, Any], tokenizer, allow_download: bool):
    import torch
    from transformers import AutoModelForSequenceClassification

    from distill.students.bases import load_kwargs

    problem_type, n = problem(task)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=n, problem_type=problem_type, dtype=torch.float32, **load_kwargs(allow_download))
    model.config.pad_token_id = tokenizer.pad_token_id  # a causal LM's head reads the last token that is not padding
    return model


def _head(model):
    for name in ("classifier", "score"):
        module = getattr(model, name, None)
        if module is not None:
            return name, module
    raise ConfigError(f"{type(model).__name__} has no classifier or score head: name another student.base_model")


def train(cfg, train_rows: list[dict], val_rows: list[dict], task: dict[str, Any], out_dir: str | Path,
          curves_dir: str | Path | None = None) -> dict[str, Any]:
    problem(task)  # an unsupported kind fails before the model loads
    import datasets
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from distill.students.bases import device, load_tokenizer, resolve_base
    from distill.students.training import checkpoint_folder, curves_callback, finish, fit, summary, trainer_kwargs

    datasets.disable_progress_bars()
    set_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    base = resolve_base(cfg.base_model)
    tokenizer = load_tokenizer(base, cfg.allow_download)
    model = _load_model(base, task, tokenizer, cfg.allow_download)
    prefix, suffix = shared_parts([user_text(r) for r in train_rows])
    strip = {"prefix": prefix, "suffix": suffix}
    max_length = _limit(cfg.max_length, tokenizer, model.config)
    train_items, truncated, longest = _encode(tokenizer, train_rows, strip, max_length, task)
    val_items, val_truncated, _ = _encode(tokenizer, val_rows, strip, max_length, task) if val_rows else ([], 0, 0)
    if truncated:
        log.warning("train: %d of %d inputs are longer than %d tokens (the longest: %d) and keep their start; "
                    "raise student.max_length if the base allows", truncated, len(train_rows), max_length, longest)

    head_name, head = _head(model)
    if task["kind"] == "score" and getattr(head, "bias", None) is not None:
        with torch.no_grad():  # start at the mean score: the head learns the differences, not the offset
            head.bias.copy_(torch.tensor([sum(t) / len(t) for t in zip(*(i["labels"] for i in train_items))]))
    extra = ["pooler"] if any(n.endswith("pooler") for n, _ in model.named_modules()) else []
    lora = LoraConfig(task_type="SEQ_CLS", r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=list(cfg.target_modules) if cfg.target_modules else None,
                      modules_to_save=[head_name, *extra])
    model = get_peft_model(model, lora)

    folder = checkpoint_folder(cfg, "head", task, train_rows, val_rows)
    args = TrainingArguments(**trainer_kwargs(cfg, folder, bool(val_items), device() == "cpu"))
    trainer = Trainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(train_items),
                      eval_dataset=datasets.Dataset.from_list(val_items) if val_items else None,
                      data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)
    per_step = sum(len(i["input_ids"]) for i in train_items) / len(train_items) * cfg.batch_size * cfg.grad_accum
    curves = curves_callback(curves_dir)
    result, resumed = fit(trainer, folder, curves)
    metrics: dict[str, Any] = {"train_examples": len(train_rows), "base_model": cfg.base_model,
                               **summary(trainer, result, resumed, curves, bool(val_items), per_step),
                               "max_length": max_length, "truncated": truncated + val_truncated,
                               "longest_tokens": longest}
    out = Path(out_dir)
    model.save_pretrained(out / "adapter")
    tokenizer.save_pretrained(out / "adapter")
    problem_type, n = problem(task)
    save_manifest(out, "head", cfg.model_dump(), task, input=strip, max_length=max_length,
                  load={"model": "AutoModelForSequenceClassification", "problem_type": problem_type, "num_labels": n,
                        "adapter": "adapter (peft LoRA + head)", "base": cfg.base_model})
    finish(folder)
    if val_rows:
        model.eval()
        preds = outputs_to_predictions([r["id"] for r in val_rows], _logits(model, tokenizer, val_items, cfg), task)
        metrics.update(_val_metric(preds, val_rows, task))
    return metrics


def _val_metric(preds: list[dict], rows: list[dict], task: dict[str, Any]) -> dict[str, float]:
    if task["kind"] == "score":
        errors = [abs(p["scores"][d] - r["scores"][d]) for p, r in zip(preds, rows) for d in task["dimensions"]]
        return {"val_mae": round(sum(errors) / len(errors), 4)}
    picked = [p["answer"].get("labels") or [p["answer"].get("label")] for p in preds]
    return {"val_accuracy": round(sum(set(a) == set(r["labels"]) for a, r in zip(picked, rows)) / len(rows), 4)}


def _logits(model, tokenizer, items: list[dict], cfg) -> list[list[float]]:
    import torch
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer)
    size = cfg.predict_batch_size if hasattr(cfg, "predict_batch_size") else cfg.get("predict_batch_size", 8)
    out: list[list[float]] = []
    device = next(model.parameters()).device
    for start in range(0, len(items), size):
        batch = collate([{k: v for k, v in i.items() if k != "labels"} for i in items[start : start + size]])
        with torch.no_grad():
            out.extend(model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().tolist())
    return out


def outputs_to_predictions(ids: list[str], logits: list[list[float]], task: dict[str, Any]) -> list[dict[str, Any]]:
    """The head's raw outputs as predictions (shared by :func:`predict` and the exported models' parity check)."""
    import math

    out = []
    for example_id, row in zip(ids, logits):
        if task["kind"] == "score":
            top = task["scale_max"]
            scores = {d: round(min(max(v * top, 0.0), top), 3) for d, v in zip(task["dimensions"], row)}
            out.append({"id": example_id, "scores": scores, "answer": scores, "raw": None, "invalid_reason": None})
            continue
        labels = task["labels"]
        best = labels[max(range(len(row)), key=row.__getitem__)]
        if task.get("multi_label"):
            chosen = [label for label, z in zip(labels, row) if 1 / (1 + math.exp(-z)) > 0.5] or [best]
            answer: dict[str, Any] = {"labels": chosen}
        else:
            answer = {"label": best}
        out.append({"id": example_id, "answer": answer, "raw": None, "invalid_reason": None})
    return out


def load_for_inference(model_dir: str | Path, manifest: dict[str, Any]):
    """(model, tokenizer): the base with the adapter and head merged in (float weights)."""
    from peft import PeftModel

    from distill.students.bases import device, load_tokenizer, resolve_base

    cfg = manifest["config"]
    adapter = Path(model_dir) / "adapter"
    tokenizer = load_tokenizer(str(adapter))
    model = _load_model(resolve_base(cfg["base_model"]), manifest["task"], tokenizer, cfg.get("allow_download", False))
    model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.to(device()).eval()
    return model, tokenizer


def encode_inputs(tokenizer, examples: list[dict], manifest: dict[str, Any]) -> list[dict]:
    """The model inputs of ``examples`` as the student reads them (shared with the export's parity check)."""
    return _encode(tokenizer, examples, manifest["input"], manifest["max_length"], None)[0]


def predict(model_dir: str | Path, examples: list[dict], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The head's scores or labels for ``examples`` (every answer valid); the model is loaded once per process."""
    model, tokenizer = loaded_once(model_dir, lambda: load_for_inference(model_dir, manifest))
    items = encode_inputs(tokenizer, examples, manifest)
    return outputs_to_predictions([e["id"] for e in examples], _logits(model, tokenizer, items, manifest["config"]),
                                  manifest["task"])
