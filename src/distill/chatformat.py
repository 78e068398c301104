"""The OpenAI fine-tuning chat format's rules, and token counts for its limit.

An example is ``{"messages": [...]}``: an optional system message first, then user and assistant turns
alternating from a user turn, ending with the one assistant turn (the answer the student learns); every
content a non-empty string; the whole example under the model's token limit (65,536 for gpt-4o-mini
fine-tuning; ``distill export --max-tokens``).

Tokens are counted with tiktoken's ``o200k_base`` only when tiktoken is installed and its encoding file is
already on disk (tiktoken downloads it on first use, and nothing is downloaded here); otherwise the
estimate is OpenAI's rule of thumb, a token per 4 characters (rounded up), plus 3 tokens per message and
3 for the reply, as OpenAI's cookbook counts chat overhead. The estimate is not a bound: text with many
digits, symbols or non-Latin scripts can take more tokens, so leave a margin below the limit.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant")
O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"


def _tiktoken_file_on_disk() -> bool:
    """Whether tiktoken's cache already holds o200k_base (the cache path tiktoken itself uses)."""
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") \
        or str(Path(tempfile.gettempdir()) / "data-gym-cache")
    return (Path(cache) / hashlib.sha1(O200K_URL.encode()).hexdigest()).is_file()


def token_counter() -> tuple[Callable[[str], int], str]:
    """(tokens of a text, how they are counted): tiktoken o200k_base when its file is on disk, else chars/4."""
    try:
        import tiktoken
    except ImportError:
        tiktoken = None
    if tiktoken is not None and _tiktoken_file_on_disk():
        enc = tiktoken.get_encoding("o200k_base")
        return (lambda text: len(enc.encode(text, disallowed_special=()))), "tiktoken o200k_base"
    return (lambda text: math.ceil(len(text) / 4)), "chars/4 estimate"


def example_tokens(messages: list[dict[str, Any]], count: Callable[[str], int]) -> int:
    return sum(count(str(m.get("content", ""))) + 3 for m in messages) + 3


def chat_problems(example: dict[str, Any], max_tokens: int, count: Callable[[str], int]) -> list[str]:
    """What makes ``example`` unfit for OpenAI chat fine-tuning ([] when it is fit)."""
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        return ["no messages list"]
    problems = []
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    for i, (m, role) in enumerate(zip(messages, roles)):
        if role not in ROLES:
            problems.append(f"message {i}: role {role!r} is not one of {', '.join(ROLES)}")
        elif not isinstance(m.get("content"), str) or not m["content"].strip():
            problems.append(f"message {i} ({role}): content must be a non-empty string")
        if isinstance(m, dict) and set(m) - {"role", "content", "name", "weight"}:
            problems.append(f"message {i}: unexpected keys {sorted(set(m) - {'role', 'content', 'name', 'weight'})}")
    turns = roles[1:] if roles[0] == "system" else roles
    if "system" in turns:
        problems.append("a system message may only come first")
    if roles.count("assistant") != 1:
        problems.append(f"exactly one assistant turn expected, found {roles.count('assistant')}")
    if roles[-1] != "assistant":
        problems.append("the last message must be the assistant's")
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(turns))]
    if not problems and turns != expected:
        problems.append(f"turns must alternate user, assistant from a user turn: got {', '.join(map(str, turns))}")
    tokens = example_tokens(messages, count)
    if tokens > max_tokens:
        problems.append(f"{tokens} tokens, over the limit of {max_tokens}")
    return problems
