"""The generative student: LoRA on a small causal LM that writes the oracle's JSON answer, for any task kind.

Training examples come from :mod:`distill.students.chat_data`: the prompt exactly as the oracle read it,
rendered with the base's own chat template, and the validated answer; the loss is on the assistant turn
only (checked: prompt tokens carry label -100), and nothing is truncated. peft + trl train anywhere;
unsloth (4-bit QLoRA) on a CUDA GPU (:mod:`distill.students.backends`). Curves, checkpoints and resuming
are :mod:`distill.students.training`'s. The default base, ``smollm2-gguf``, is SmolLM2-135M-Instruct from
the packaged GGUF (:mod:`distill.students.bases`).

Saved in the model folder: ``adapter/`` (peft's ``adapter_model.safetensors`` and ``adapter_config.json``,
and the tokenizer with its chat template) and ``student.json`` (the base, the backend, whether the base
was 4-bit, and ``max_new_tokens``). Predictions are greedy, in batches of similar prompt lengths with
left padding (seeded sampling for a generate task, whose rows share a prompt), and are validated against each
example's schema (the task's, or the one a record brings); the format is learnt, never forced.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from distill.students import prediction_from_text, save_manifest
from distill.students.bases import SMOLLM2 as PACKAGED_BASE  # noqa: F401 - the name callers used
from distill.students.bases import convert_gguf, resolve_base  # noqa: F401 - re-exported
from distill.students.chat_data import new_token_budget, prepare, render_prompt

log = logging.getLogger("distill")


def build(cfg, train_rows: list[dict], val_rows: list[dict], task: dict[str, Any], folder: Path,
          curves_dir: str | Path | None = None) -> dict[str, Any]:
    """Everything :func:`train` runs, short of training: the backend, tokenizer, encoded data (checked),
    model and trainer. Returned as a dict (``trainer``, ``tokenizer``, ``train``, ``val``, ``backend``,
    ``curves``) so a test can look at the batches the trainer will see."""
    from distill.students.backends import choose

    backend = choose(cfg.backend)  # before transformers: unsloth patches it on import
    import datasets
    import torch
    from transformers import set_seed

    from distill.students.bases import device, load_kwargs, load_tokenizer
    from distill.students.training import curves_callback, trainer_kwargs

    datasets.disable_progress_bars()  # stage logs get one line per training step instead
    set_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    base = resolve_base(cfg.base_model)
    tokenizer = load_tokenizer(base, cfg.allow_download)
    train_data = prepare(tokenizer, train_rows, cfg.max_length, cfg.on_too_long, "train")
    val_data = prepare(tokenizer, val_rows, cfg.max_length, cfg.on_too_long, "val") if val_rows else None
    longest = max(train_data.longest, val_data.longest if val_data else 0)
    peft_config = None
    if backend == "unsloth":
        from distill.students.backends import load_unsloth

        model, tokenizer = load_unsloth(cfg, base, cfg.max_length or longest)
    else:
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM

        dtype = torch.bfloat16 if device() == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, **load_kwargs(cfg.allow_download))
        peft_config = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                 target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")

    from trl import SFTConfig, SFTTrainer

    def dataset(prepared):
        return datasets.Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels}
                                           for e in prepared.examples])

    args = SFTConfig(**trainer_kwargs(cfg, folder, val_data is not None, device() == "cpu"),
                     max_length=None,  # lengths were checked above: nothing is truncated
                     bf16=model.dtype == torch.bfloat16)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset(train_data),
                         eval_dataset=dataset(val_data) if val_data else None,
                         processing_class=tokenizer, peft_config=peft_config)
    mean_tokens = sum(len(e.input_ids) for e in train_data.examples) / len(train_data.examples)
    return {"trainer": trainer, "tokenizer": tokenizer, "train": train_data, "val": val_data, "backend": backend,
            "curves": curves_callback(curves_dir), "tokens_per_step": mean_tokens * cfg.batch_size * cfg.grad_accum}


def train(cfg, train_rows: list[dict], val_rows: list[dict], task: dict[str, Any], out_dir: str | Path,
          curves_dir: str | Path | None = None) -> dict[str, Any]:
    from distill.students.training import checkpoint_folder, finish, fit, summary

    folder = checkpoint_folder(cfg, "lora", task, train_rows, val_rows)
    built = build(cfg, train_rows, val_rows, task, folder, curves_dir)
    trainer, tokenizer, data = built["trainer"], built["tokenizer"], built["train"]
    result, resumed = fit(trainer, folder, built["curves"])
    metrics = {"train_examples": len(data.examples), "backend": built["backend"],
               **summary(trainer, result, resumed, built["curves"], built["val"] is not None,
                         built["tokens_per_step"]),
               "dropped_too_long": len(data.dropped) + (len(built["val"].dropped) if built["val"] else 0),
               "longest_tokens": data.longest, "longest_answer_tokens": data.longest_answer}
    if data.dropped:
        log.warning("train: %d example(s) longer than student.max_length=%s left out: %s", len(data.dropped),
                    cfg.max_length, ", ".join(data.dropped[:10]))
    out = Path(out_dir)
    trainer.model.save_pretrained(out / "adapter")
    tokenizer.save_pretrained(out / "adapter")
    max_new = cfg.max_new_tokens or new_token_budget(data.longest_answer)
    quantised = built["backend"] == "unsloth" and cfg.load_in_4bit is not False
    from distill.students.chat_data import answer_messages
    from distill.students.guided import layout_of

    layout = layout_of([answer_messages(r)[0]["content"] for r in train_rows])
    save_manifest(out, "lora", cfg.model_dump(), task, backend=built["backend"], base_4bit=quantised,
                  max_new_tokens=max_new, answer_layout=layout,
                  load={"model": "AutoModelForCausalLM", "adapter": "adapter (peft LoRA)", "base": cfg.base_model})
    metrics["max_new_tokens"] = max_new
    finish(folder)
    return metrics


def load_for_inference(model_dir: str | Path, manifest: dict[str, Any], merge: bool = True, base: str | None = None):
    """(model, tokenizer) of a saved LoRA student: the base (``base``, or the one it was trained on) with
    its adapter, merged when ``merge`` (on a float base: with unsloth on a GPU the 4-bit base keeps the
    adapter as a separate layer)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from distill.students.bases import device, load_kwargs, load_tokenizer

    cfg = manifest["config"]
    adapter = Path(model_dir) / "adapter"
    tokenizer = load_tokenizer(str(adapter))
    tokenizer.padding_side = "left"
    allow = cfg.get("allow_download", False)
    if manifest.get("backend") == "unsloth" and device() == "cuda" and merge and base is None:
        from unsloth import FastLanguageModel

        model, _ = FastLanguageModel.from_pretrained(model_name=str(adapter), load_in_4bit=manifest.get("base_4bit"),
                                                     local_files_only=not allow)
        FastLanguageModel.for_inference(model)
        return model, tokenizer
    if manifest.get("base_4bit"):
        log.warning("predict: this adapter was trained on a 4-bit base; without a GPU it runs on the float base")
    model = AutoModelForCausalLM.from_pretrained(resolve_base(base or cfg["base_model"]), dtype=torch.float32,
                                                 **load_kwargs(allow))
    model = PeftModel.from_pretrained(model, adapter)
    if merge:
        model = model.merge_and_unload()
    model.to(device()).eval()
    return model, tokenizer


def generate(model, tokenizer, prompts: list[list[dict[str, str]]], max_new_tokens: int, batch_size: int,
             sample: dict[str, float] | None = None, seed: int = 0,
             schemas: list[dict[str, Any] | None] | None = None, layout: dict[str, Any] | None = None
             ) -> list[str]:
    """Answers to chat ``prompts``, in batches of similar lengths (left padding), in input order: greedy,
    or sampled with ``sample``'s settings (``temperature``, ``top_p``) from ``seed`` (a rerun writes the
    same answers); with ``schemas`` (one per prompt), each decoded under its JSON schema in ``layout``
    (:mod:`distill.students.guided`)."""
    import torch

    texts = [render_prompt(tokenizer, p) for p in prompts]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    decoding = {"do_sample": True, **sample} if sample else {"do_sample": False}
    if sample:
        torch.manual_seed(seed)
    answers: list[str] = [""] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(model.device)
        extra = {}
        if schemas is not None:
            from transformers import LogitsProcessorList

            from distill.students.guided import schema_processor

            extra["logits_processor"] = LogitsProcessorList(
                [schema_processor(tokenizer, [schemas[i] for i in idx], enc["input_ids"].shape[1], layout)])
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, **decoding, **extra,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        for i, row in zip(idx, out[:, enc["input_ids"].shape[1] :]):
            answers[i] = tokenizer.decode(row, skip_special_tokens=True)
    return answers


def predict(model_dir: str | Path, examples: list[dict], manifest: dict[str, Any],
            schemas: list[dict[str, Any]] | None = None, sample: dict[str, float] | None = None
            ) -> list[dict[str, Any]]:
    """Answers to each example's prompt (greedy; seeded sampling with ``sample``, a generate task's
    settings), each validated against its schema (``schemas``, one per example, or the task's): an answer
    that fails gets ``answer=None`` and the reason. The model is loaded once per process."""
    from distill.students import loaded_once, prompt_messages

    cfg = manifest["config"]
    model, tokenizer = loaded_once(model_dir, lambda: load_for_inference(model_dir, manifest))
    max_new = manifest.get("max_new_tokens") or cfg.get("max_new_tokens") or 160
    task = manifest.get("task") or {"kind": "score", "dimensions": manifest.get("dimensions", [])}
    schemas = schemas or [task.get("schema")] * len(examples)
    texts = generate(model, tokenizer, [prompt_messages(e) for e in examples], max_new,
                     cfg.get("predict_batch_size", 8), sample=sample, seed=cfg.get("seed", 0),
                     schemas=schemas if cfg.get("constrained", True) else None,
                     layout=manifest.get("answer_layout"))
    return [prediction_from_text(e["id"], text, schema, task) for e, text, schema in zip(examples, texts, schemas)]
