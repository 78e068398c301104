"""What every provider shares: the request and response types, the provider and batch interfaces,
the typed config every provider's own config extends, and transport-error helpers.

A provider turns one :class:`ChatRequest` into one :class:`ChatResponse`. It does no validation, no
caching and no re-asking: the labelling engine (:mod:`distill.labeling`) does those the same way for
every provider. Providers import their SDK lazily and read their key from the environment variable
named in their config, so neither the key nor the SDK is touched until a request is about to be made.
This package knows nothing of filters, validation or the pipeline.
"""

from __future__ import annotations

import abc
import email.utils
import os
import re
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from distill.errors import ConfigError, DistillError

TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})


class ProviderError(DistillError):
    """A request failed at the transport level (no answer to validate).

    ``status`` is the HTTP status when there was one (None for timeouts, resets, unreadable bodies);
    ``retry_after`` the seconds the server asked us to wait. The engine retries transient failures
    with backoff on their own budget and honours ``retry_after``. ``transient=False`` says a retry
    cannot help (a missing runtime, a prompt too long for the model, a crashed local runtime).
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


def short(text: Any, limit: int = 300) -> str:
    """``text`` on one line, cut at ``limit`` characters (for error messages)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


# ----------------------------------------------------------------------------- config
class Strict(BaseModel):
    """A config model that rejects unknown keys, so a typo fails at once with its path."""

    model_config = ConfigDict(extra="forbid")


class RateLimits(Strict):
    """Provider limits the scheduler must respect (null: unlimited)."""

    rpm: float | None = Field(default=None, gt=0)  # requests per minute
    rps: float | None = Field(default=None, gt=0)  # requests per second
    input_tpm: float | None = Field(default=None, gt=0)  # input tokens per minute
    output_tpm: float | None = Field(default=None, gt=0)  # output tokens per minute
    #: input plus output tokens per minute, counted as OpenAI counts them: a request's input and its
    #: full max_tokens, when it is admitted (only the input part is trued up from the answer)
    tpm: float | None = Field(default=None, gt=0)
    max_concurrency: int | None = Field(default=None, ge=1)


class Pricing(Strict):
    """US dollars per million tokens. Null means "not set here": a model with a published price
    (:mod:`distill.providers.prices`) gets it, whichever oracle file names the model; a model with
    no known price has none, and a budget or an estimate in dollars then fails before any request."""

    input_per_mtok: float | None = Field(default=None, ge=0)
    output_per_mtok: float | None = Field(default=None, ge=0)
    #: the batch API's price as a share of the online price (0.5: half price)
    batch_discount: float = Field(default=0.5, ge=0, le=1)

    @property
    def known(self) -> bool:
        return self.input_per_mtok is not None and self.output_per_mtok is not None


class ProviderConfig(Strict):
    """The ``oracle`` section: what every provider takes. Each provider's module extends it with its
    own fields (``provider`` is the discriminator), so a key that belongs to another provider fails."""

    provider: str
    model: str
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_tokens: int = Field(default=384, ge=16)
    seed: int | None = 0
    request_timeout_s: float = Field(default=120.0, gt=0)
    limits: RateLimits = RateLimits()
    price: Pricing = Pricing()
    #: routing share of this oracle when ``mix`` lists others
    weight: float = Field(default=1.0, gt=0)
    #: more oracles (full oracle configs with a ``weight``): requests are routed by weight per record
    #: (deterministically, so reruns hit the cache) and fail over to the next when one is down
    mix: list[OracleConfig] = []  # noqa: F821 - resolved by distill.providers.registry

    #: the environment variable holding the key; None for providers that need none
    api_key_env: str | None = None

    def request_context(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """What of the record this provider reads besides the messages (``ChatRequest.context``); None
        for every provider that answers from the messages alone (all but ``file``)."""
        return None

    def api_key(self) -> str:
        """The key from the environment (or a gitignored .env); never logged."""
        if not self.api_key_env:
            raise ConfigError(f"oracle.provider={self.provider} needs oracle.api_key_env: the name of the "
                              "environment variable holding the API key")
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise ConfigError(
                f"oracle.provider={self.provider} needs an API key: set the environment variable "
                f"{self.api_key_env} (or put {self.api_key_env}=... in a .env file at the project root)"
            )
        return key


class KeyedConfig(ProviderConfig):
    """A hosted provider: a key in a named environment variable, an optional base URL, and the SDK's
    own retries (0 by default: the engine retries and honours Retry-After itself)."""

    api_key_env: str
    base_url: str | None = None
    sdk_max_retries: int = Field(default=0, ge=0)


# ----------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    schema: dict[str, Any]
    temperature: float = 0.0
    max_tokens: int = 384
    seed: int | None = 0
    #: values of the record a provider reads besides the messages (``ProviderConfig.request_context``):
    #: None for every provider but ``file``; part of the cache key when set, since the answer depends on it
    context: dict[str, Any] | None = None

    def generation_params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed}


@dataclass
class ChatResponse:
    text: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str | None = None
    model: str = ""

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
        return cls(d.get("text"), d.get("input_tokens", 0), d.get("output_tokens", 0), d.get("finish_reason"),
                   d.get("model", ""))


class Provider(abc.ABC):
    """One oracle backend. Subclasses set ``name`` and implement :meth:`complete`."""

    name: ClassVar[str] = ""
    #: False for a provider that gives the same answer whatever the temperature or seed (labels read
    #: from a file): asking it twice measures nothing, so the oracle check needs a second source
    answers_vary: ClassVar[bool] = True

    def __init__(self, cfg: ProviderConfig):
        self.cfg = cfg

    @property
    def model(self) -> str:
        return self.cfg.model

    @classmethod
    def identity(cls, cfg: ProviderConfig) -> dict[str, Any]:
        """What, besides the request, decides the answer (the cache keys on it), computed from the
        config alone: no key, no SDK, no model loaded. Never includes a key or a URL with secrets."""
        return {"provider": cls.name, "model": cfg.model}

    def cache_identity(self) -> dict[str, Any]:
        return type(self).identity(self.cfg)

    def describe(self) -> str:
        return f"{self.name}:{self.model}"

    @abc.abstractmethod
    async def complete(self, request: ChatRequest) -> ChatResponse: ...

    async def aclose(self) -> None:
        pass


# ----------------------------------------------------------------------------- batch APIs
#: batch job states: still running, or terminal
PENDING, COMPLETED, FAILED, EXPIRED, CANCELLED, LOST = (
    "pending", "completed", "failed", "expired", "cancelled", "lost",
)


@dataclass
class BatchItem:
    key: str
    payload: Any
    nbytes: int


@dataclass
class JobStatus:
    state: str  # PENDING or a terminal state
    detail: str | None = None
    raw: Any = None  # the provider's job object
    provider_state: str | None = None  # the provider's word for it (in_progress, JOB_STATE_RUNNING)

    @property
    def done(self) -> bool:
        return self.state != PENDING


class BatchBackend(abc.ABC):
    """One provider's batch API: requests in as :class:`BatchItem` s keyed by cache key, answers back
    as :class:`ChatResponse` s read exactly as the online provider reads the same answer."""

    kind: ClassVar[str] = ""
    max_items: ClassVar[int] = 50_000
    max_bytes: ClassVar[int] = 190 * 1024 * 1024

    def __init__(self, provider: Provider, retries: int):
        self.provider = provider

    @abc.abstractmethod
    def item(self, key: str, request: ChatRequest) -> BatchItem: ...

    @abc.abstractmethod
    def submit(self, items: list[BatchItem], note: str) -> tuple[str, str | None]:
        """Create a job; return (job id, input file id or None)."""

    @abc.abstractmethod
    def poll(self, job_id: str) -> JobStatus: ...

    @abc.abstractmethod
    def collect(self, job_id: str, status: JobStatus,
                keys: list[str]) -> tuple[dict[str, ChatResponse], dict[str, str]]:
        """(answers by key, error text by key) of a finished job."""

    def close(self) -> None:
        pass
