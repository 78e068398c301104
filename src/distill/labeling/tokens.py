"""Input tokens counted offline, the way a provider will count them: the embedded model's own
vocabulary and chat template (through a llama.cpp worker), or OpenAI's tiktoken when its encoding
files are already on disk. ``distill estimate`` falls back to characters at a calibrated ratio."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from distill.providers import ProviderConfig, ProviderError


class TiktokenCounter:
    """OpenAI's tokenizer, only when its encoding files are on disk (tiktoken would fetch them)."""

    def __init__(self, encoding, schema_tokens: int):
        self._enc = encoding
        self._schema_tokens = schema_tokens
        self.method = f"tokenizer: tiktoken {encoding.name}"

    def count(self, messages: list[dict[str, str]]) -> int:
        # the chat format adds about 3 tokens a message and 3 for the reply; a JSON schema sent as
        # response_format is counted as prompt by the API
        return (
            sum(len(self._enc.encode(m["content"])) + 3 for m in messages) + 3 + self._schema_tokens
        )

    def close(self) -> None:
        pass


def _tiktoken_counter(cfg: ProviderConfig, schema: dict[str, Any]) -> TiktokenCounter | None:
    if cfg.provider != "openai":
        return None
    try:
        import tiktoken
    except ImportError:
        return None
    cache_dir = (
        os.environ.get("TIKTOKEN_CACHE_DIR")
        or os.environ.get("DATA_GYM_CACHE_DIR")
        or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    )
    if not os.path.isdir(cache_dir) or not os.listdir(cache_dir):
        return None  # the files are not on disk: tiktoken would try to download them
    try:
        enc = tiktoken.encoding_for_model(cfg.model.rsplit("/", 1)[-1])
    except Exception:  # noqa: BLE001 - unknown model, missing file, no network: fall back
        return None
    schema_tokens = (
        len(enc.encode(json.dumps(schema))) if cfg.structured_output == "json_schema" else 0
    )
    return TiktokenCounter(enc, schema_tokens)


def token_counter(cfg: ProviderConfig, schema: dict[str, Any], loaded: dict[str, Any]):
    """The exact counter for this oracle, or None (count characters, calibrate), and why not."""
    if cfg.provider == "local":
        from distill.providers.local import resolve_gguf
        from distill.providers.local import token_counter as llama_counter

        path = str(resolve_gguf(cfg.model_path))
        if path not in loaded:
            try:
                loaded[path] = (llama_counter(cfg), "")
            except ProviderError as e:  # llama-cpp-python is not installed, or cannot read the file
                loaded[path] = (None, str(e))
        return loaded[path]
    counter = _tiktoken_counter(cfg, schema)
    if counter is not None:
        return counter, ""
    if cfg.provider == "openai":
        return None, "no offline tokenizer (tiktoken or its encoding files are not available)"
    return None, f"no offline tokenizer for {cfg.provider}"
