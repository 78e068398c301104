"""The provider interface every oracle implements.

A provider turns one :class:`ChatRequest` into one :class:`ChatResponse`. It does no validation, no
caching and no re-asking: the engine does those the same way for every provider. Providers import
their SDK lazily and read their key from the environment variable named in the config, so neither the
key nor the SDK is touched until a request is about to be made.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from distill.config import OracleConfig
from distill.errors import ConfigError, DistillError


class ProviderError(DistillError):
    """A request failed after the provider's own transport retries."""


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

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        pass


def make_provider(cfg: OracleConfig) -> Provider:
    """Build the provider named in the config; fails on a missing key before any request."""
    if cfg.provider == "local":
        from distill.oracle.local import LocalProvider

        return LocalProvider(cfg)
    if cfg.provider == "openai":
        from distill.oracle.openai_compat import OpenAIProvider

        return OpenAIProvider(cfg)
    if cfg.provider == "gemini":
        from distill.oracle.gemini import GeminiProvider

        return GeminiProvider(cfg)
    if cfg.provider == "anthropic":
        from distill.oracle.anthropic import AnthropicProvider

        return AnthropicProvider(cfg)
    raise ConfigError(f"unknown oracle.provider {cfg.provider!r}")
