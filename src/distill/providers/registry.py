"""The one place a provider is named.

Each provider is a module of this package exposing ``Config`` (its typed config, a subclass of
:class:`~distill.providers.base.ProviderConfig` whose ``provider`` literal is its name), ``Online``
(its :class:`~distill.providers.base.Provider`) and ``Batch`` (its batch backend, or None). Adding a
provider is adding a module and a line to :data:`PROVIDERS`; the ``oracle`` section's validation,
``make_provider``, the batch runner and ``distill estimate`` all read this table.
"""

from __future__ import annotations

from types import ModuleType
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from distill.errors import ConfigError
from distill.providers import anthropic, file, gemini, local, openai
from distill.providers.base import BatchBackend, Provider, ProviderConfig

#: provider name -> its module
PROVIDERS: dict[str, ModuleType] = {
    "local": local,
    "openai": openai,
    "gemini": gemini,
    "anthropic": anthropic,
    "file": file,
}

#: the ``oracle`` section: one of the providers' configs, picked by ``provider``
OracleConfig = Annotated[Union[tuple(m.Config for m in PROVIDERS.values())], Field(discriminator="provider")]  # noqa: UP007

for _module in PROVIDERS.values():  # a config's ``mix`` holds oracle configs of any provider
    _module.Config.model_rebuild(_types_namespace={"OracleConfig": OracleConfig})
ProviderConfig.model_rebuild(_types_namespace={"OracleConfig": OracleConfig})

_ADAPTER: TypeAdapter[Any] = TypeAdapter(OracleConfig)


def oracle_config(data: dict[str, Any] | None = None, **fields: Any) -> ProviderConfig:
    """Validate an ``oracle`` mapping (or keyword fields) into its provider's config
    (``pydantic.ValidationError`` on a bad one; :func:`distill.config.section` words it for users)."""
    return _ADAPTER.validate_python({**(data or {}), **fields})


def module_for(name: str) -> ModuleType:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ConfigError(f"unknown oracle.provider {name!r}; choose one of {', '.join(PROVIDERS)}") from None


def provider_class(cfg: ProviderConfig) -> type[Provider]:
    return module_for(cfg.provider).Online


def make_provider(cfg: ProviderConfig) -> Provider:
    """Build the provider ``cfg`` names; a hosted one fails on a missing key before any request."""
    return provider_class(cfg)(cfg)


def identity(cfg: ProviderConfig) -> dict[str, Any]:
    """The cache identity of ``cfg``'s answers, without a key, an SDK or a loaded model."""
    return provider_class(cfg).identity(cfg)


def has_batch(name: str) -> bool:
    return module_for(name).Batch is not None


def batch_backend(provider: Provider, retries: int) -> BatchBackend:
    cls = module_for(provider.name).Batch
    if cls is None:
        with_batch = [n for n, m in PROVIDERS.items() if m.Batch is not None]
        raise ConfigError(f"label.mode=batch is not available for oracle.provider={provider.name} "
                          f"(batch APIs: {', '.join(with_batch)}); use label.mode=online")
    return cls(provider, retries)
