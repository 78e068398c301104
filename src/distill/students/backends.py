"""Which library trains the generative LoRA student: ``peft`` (+ trl, anywhere) or ``unsloth`` (a CUDA GPU,
the base loaded in 4 bits: QLoRA, with unsloth's fused kernels and LoRA).

``student.backend: auto`` picks unsloth when a CUDA device is visible and unsloth imports (the ``gpu``
extra), else peft. unsloth is imported lazily and only after CUDA was seen: on a machine without a GPU it
raises at import (NotImplementedError), and it must be imported before transformers, trl and peft to
patch them, so :func:`choose` runs first in the training child. Asking for unsloth where it cannot run
is a configuration error naming the peft backend.
"""

from __future__ import annotations

import logging

from distill.errors import ConfigError

log = logging.getLogger("distill")

#: what unsloth raises when it cannot run here (no GPU, an unsupported one, a broken install)
PROBE_ERRORS = (ImportError, NotImplementedError, RuntimeError, AssertionError)


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def probe_unsloth() -> str | None:
    """None when unsloth imports; else why not."""
    try:
        import unsloth  # noqa: F401 - imported for its patches and to see that it works
    except PROBE_ERRORS as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
    return None


def choose(requested: str) -> str:
    """``peft`` or ``unsloth`` for ``student.backend`` (``auto``, ``peft``, ``unsloth``) on this machine."""
    if requested == "peft":
        return "peft"
    cuda = cuda_available()
    if requested == "unsloth":
        if not cuda:
            raise ConfigError("student.backend=unsloth needs a CUDA GPU, and none is visible here: use "
                              "student.backend=peft (peft + trl, which trains on a CPU) or auto")
        problem = probe_unsloth()
        if problem:
            raise ConfigError(f"student.backend=unsloth, but unsloth cannot run here ({problem}): install the gpu "
                              "extra (pip install -e '.[gpu]'), or use student.backend=peft")
        return "unsloth"
    if not cuda:
        return "peft"
    problem = probe_unsloth()
    if problem:
        log.info("train: CUDA is available but unsloth is not (%s): training with peft + trl", problem)
        return "peft"
    return "unsloth"


def load_unsloth(cfg, base: str, max_length: int):
    """The base through unsloth (4-bit unless ``load_in_4bit`` is false) with its LoRA adapter attached."""
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=base, max_seq_length=max_length, dtype=None,
        load_in_4bit=cfg.load_in_4bit if cfg.load_in_4bit is not None else True,
        local_files_only=not cfg.allow_download,
    )
    model = FastLanguageModel.get_peft_model(
        model, r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
        bias="none", use_gradient_checkpointing="unsloth", random_state=cfg.seed,
    )
    if not getattr(tokenizer, "chat_template", None):  # unsloth's chat-template handling for a bare base
        from unsloth.chat_templates import get_chat_template

        tokenizer = get_chat_template(tokenizer, chat_template="chatml")
    return model, tokenizer
