"""The provider interface every oracle implements.

A provider turns one :class:`ChatRequest` into one :class:`ChatResponse`. It does no validation, no
caching and no re-asking: the engine does those the same way for every provider. Providers import
their SDK lazily and read their key from the environment variable named in the config, so neither the
key nor the SDK is touched until a request is about to be made.
"""

from __future__ import annotations

import abc
import email.utils
import re
import time
from dataclasses import dataclass, field
from typing import Any

from distill.config import OracleConfig
from distill.errors import ConfigError, DistillError

TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})


class ProviderError(DistillError):
    """A request failed at the transport level (no answer to validate).

    ``status`` is the HTTP status when there was one (None for timeouts, resets, unreadable bodies);
    ``retry_after`` the seconds the server asked us to wait. The engine retries transient failures
    with backoff on their own budget and honours ``retry_after``.
    """

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None,
                 transient: bool | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self._transient = transient

    @property
    def transient(self) -> bool:
        if self._transient is not None:
            return self._transient
        return self.status is None or self.status in TRANSIENT_STATUS

    @property
    def throttled(self) -> bool:
        return self.status in (429, 529)


_DURATION = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """``"1.5"`` (seconds), ``"20ms"``, ``"6m0s"`` or ``"1h2m"`` as seconds; None when unreadable."""
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = list(_DURATION.finditer(text))
    if not parts or "".join(m.group(0) for m in parts) != text:
        return None
    return sum(float(m.group("value")) * _UNIT[m.group("unit")] for m in parts)


def retry_after_from_headers(headers: Any, status: int | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``retry-after`` (seconds or HTTP date) or, for a
    throttled answer without those, the ``x-ratelimit-reset-*`` headers (the longest).

    Pass the HTTP ``status``: APIs send ``x-ratelimit-reset-*`` on every response, and for anything
    but a 429 / 529 they say when the rate-limit window refills, not when to retry (``None``: the
    status is unknown, and the reset headers count)."""
    if headers is None:
        return None
    get = headers.get
    ms = get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = get("retry-after")
    if ra is not None:
        seconds = parse_duration(ra)
        if seconds is not None:
            return seconds
        try:
            when = email.utils.parsedate_to_datetime(ra)
            return max(0.0, when.timestamp() - time.time())
        except (TypeError, ValueError):
            pass
    if status is not None and status not in (429, 529):
        return None
    resets = [parse_duration(get(h) or "") for h in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")]
    resets = [r for r in resets if r is not None]
    return max(resets) if resets else None


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    schema: dict[str, Any]
    temperature: float = 0.0
    max_tokens: int = 384
    seed: int | None = 0

    def generation_params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed}


@dataclass
class ChatResponse:
    text: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str | None = None
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "finish_reason": self.finish_reason,
            "model": self.model,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ChatResponse:
        return cls(d.get("text"), d.get("input_tokens", 0), d.get("output_tokens", 0), d.get("finish_reason"), d.get("model", ""))


class Provider(abc.ABC):
    """One oracle backend. Subclasses set ``name`` and implement :meth:`complete`."""

    name: str = ""

    def __init__(self, cfg: OracleConfig):
        self.cfg = cfg

    @property
    def model(self) -> str:
        return self.cfg.model

    def cache_identity(self) -> dict[str, Any]:
        """What, besides the request, decides the answer. Never includes a key or a URL with secrets."""
        return {"provider": self.name, "model": self.model}

    def describe(self) -> str:
        return f"{self.name}:{self.model}"

    @abc.abstractmethod
    async def complete(self, request: ChatRequest) -> ChatResponse: ...

    async def aclose(self) -> None:
        pass


def make_provider(cfg: OracleConfig) -> Provider:
    """Build the provider named in the config; fails on a missing key before any request."""
    if cfg.provider == "local":
        from distill.oracle.local import LocalProvider

        return LocalProvider(cfg)
    if cfg.provider == "openai":
        if cfg.transport == "aiohttp":
            from distill.oracle.openai_http import OpenAIHTTPProvider

            return OpenAIHTTPProvider(cfg)
        from distill.oracle.openai_compat import OpenAIProvider

        return OpenAIProvider(cfg)
    if cfg.provider == "gemini":
        from distill.oracle.gemini import GeminiProvider

        return GeminiProvider(cfg)
    if cfg.provider == "anthropic":
        from distill.oracle.anthropic import AnthropicProvider

        return AnthropicProvider(cfg)
    raise ConfigError(f"unknown oracle.provider {cfg.provider!r}")
