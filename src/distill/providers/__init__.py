"""LLM providers: one module per provider (online and batch wire code), one registry naming them.

A provider turns a :class:`ChatRequest` into a :class:`ChatResponse` and knows nothing of tasks,
validation or the pipeline; :mod:`distill.labeling` builds the engine over them.
"""

from distill.providers.base import (
    ChatRequest,
    ChatResponse,
    Pricing,
    Provider,
    ProviderConfig,
    ProviderError,
    RateLimits,
)
from distill.providers.registry import OracleConfig, make_provider, oracle_config

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "OracleConfig",
    "Pricing",
    "Provider",
    "ProviderConfig",
    "ProviderError",
    "RateLimits",
    "make_provider",
    "oracle_config",
]
