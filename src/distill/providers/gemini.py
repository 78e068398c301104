"""Google Gemini through the current ``google-genai`` SDK (not the deprecated
``google-generativeai``).

The system prompt goes in ``system_instruction``; user and assistant turns become Gemini
``contents`` (assistant -> role ``model``). Structured output is asked for with
``response_mime_type=application/json`` and the filter's JSON schema as ``response_json_schema``
(the plain JSON-schema field, which the SDK passes through unchanged), trimmed to the keywords
Gemini understands; every answer is validated by the engine either way. Thinking is off by
default (``oracle.thinking_budget: 0``; ``null`` leaves the model's default). The key is read from
the environment variable named by ``oracle.api_key_env`` and sent only in the ``x-goog-api-key``
header. The SDK (3.x) posts to ``{base_url}/v1/models/{model}:generateContent``.

The batch API (:class:`GeminiBatch`, ``label.mode=batch``) sends the same request contents inlined
in ``models/{model}:batchGenerateContent`` and reads answers with the same :meth:`GeminiProvider._response`.

Transport retries are the SDK's own (``HttpRetryOptions``: exponential backoff with jitter on 408,
429 and 5xx, ``oracle.sdk_max_retries`` retries). Unlike the openai and anthropic SDKs, google-genai
does not read ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Literal

from distill.errors import ConfigError
from distill.providers.base import (
    CANCELLED,
    COMPLETED,
    EXPIRED,
    FAILED,
    LOST,
    PENDING,
    BatchBackend,
    BatchItem,
    ChatRequest,
    ChatResponse,
    JobStatus,
    KeyedConfig,
    Provider,
    ProviderError,
    retry_after_from_headers,
    short,
)

#: JSON-schema keywords kept in ``response_json_schema``; anything else is dropped before sending
#: (Gemini supports a subset of JSON Schema; the engine validates against the full schema anyway)
SCHEMA_KEYWORDS = frozenset({
    "$id", "$defs", "$ref", "$anchor", "type", "format", "title", "description", "enum", "const",
    "items", "prefixItems", "minItems", "maxItems", "minimum", "maximum", "minLength", "maxLength",
    "pattern", "anyOf", "oneOf", "properties", "additionalProperties", "required",
    "propertyOrdering", "nullable",
})

#: Gemini finish reasons that mean the model declined or was stopped by a content filter
_REFUSALS = frozenset({
    "SAFETY", "RECITATION", "LANGUAGE", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "IMAGE_OTHER",
})

#: what an empty earlier answer is sent as (Gemini refuses empty parts)
_EMPTY_TURN = "(empty answer)"


def gemini_schema(schema: Any) -> Any:
    """A copy of ``schema`` holding only the keywords in :data:`SCHEMA_KEYWORDS` (recursively)."""
    if isinstance(schema, list):
        return [gemini_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in SCHEMA_KEYWORDS:
            continue
        if key in ("properties", "$defs") and isinstance(value, dict):
            out[key] = {name: gemini_schema(sub) for name, sub in value.items()}
        elif key in ("items", "prefixItems", "anyOf", "oneOf", "additionalProperties"):
            out[key] = gemini_schema(value)
        else:
            out[key] = value
    return out


def finish_reason(raw: str | None) -> str | None:
    """Gemini's finish reason in the engine's words: stop, length, refusal, else lowercased."""
    if raw is None:
        return None
    if raw == "STOP":
        return "stop"
    if raw == "MAX_TOKENS":
        return "length"
    if raw in _REFUSALS:
        return "refusal"
    return raw.lower()


class GeminiConfig(KeyedConfig):
    provider: Literal["gemini"]
    #: thinking tokens the model may spend (billed as output); 0: off; null: the model's default
    thinking_budget: int | None = 0


class GeminiProvider(Provider):
    name = "gemini"

    #: backoff between SDK retries (seconds); class attributes so tests can shorten them
    retry_initial_delay_s: float = 1.0
    retry_max_delay_s: float = 60.0
    retry_jitter_s: float = 1.0

    def __init__(self, cfg: GeminiConfig):
        super().__init__(cfg)
        self._key = cfg.api_key()  # fails now, before any request, when the key is missing
        self._client = None

    @classmethod
    def identity(cls, cfg: GeminiConfig) -> dict[str, Any]:
        # thinking changes the answer, so it is part of what the cache keys on
        return {**super().identity(cfg), "thinking_budget": cfg.thinking_budget}

    def _client_or_create(self):
        if self._client is None:
            self._client = self.sdk_client(self.cfg.sdk_max_retries)
        return self._client

    def sdk_client(self, retries: int):
        """A google-genai client for this config (the batch backend makes its own, synchronous use)."""
        try:
            from google import genai
            from google.genai import types
        except ImportError as e:
            raise ConfigError("oracle.provider=gemini needs Google's google-genai SDK: "
                              "`pip install google-genai`") from e

        options = types.HttpOptions(
            base_url=self.cfg.base_url,
            timeout=int(self.cfg.request_timeout_s * 1000),  # milliseconds
            retry_options=types.HttpRetryOptions(
                attempts=retries + 1,
                initial_delay=self.retry_initial_delay_s,
                max_delay=self.retry_max_delay_s,
                jitter=self.retry_jitter_s,
            ),
        )
        # vertexai=False: the Gemini Developer API with a key, whatever GOOGLE_GENAI_USE_* say
        return genai.Client(api_key=self._key, vertexai=False, http_options=options)

    def _contents_and_config(self, request: ChatRequest) -> tuple[list[Any], Any]:
        from google.genai import types

        system = [m["content"] for m in request.messages if m["role"] == "system"]
        contents = []
        for m in request.messages:
            if m["role"] == "system":
                continue
            role = "model" if m["role"] == "assistant" else "user"
            text = m["content"] if (m["content"] or "").strip() else _EMPTY_TURN  # no empty parts
            contents.append(types.Content(role=role, parts=[types.Part(text=text)]))
        config = types.GenerateContentConfig(
            system_instruction="\n\n".join(system) if system else None,
            temperature=request.temperature,
            max_output_tokens=request.max_tokens,
            seed=request.seed,
            response_mime_type="application/json",
            response_json_schema=gemini_schema(request.schema),
            thinking_config=(
                types.ThinkingConfig(thinking_budget=self.cfg.thinking_budget)
                if self.cfg.thinking_budget is not None
                else None
            ),
        )
        return contents, config

    async def complete(self, request: ChatRequest) -> ChatResponse:
        client = self._client_or_create()
        from google.genai import errors

        contents, config = self._contents_and_config(request)
        try:
            resp = await client.aio.models.generate_content(model=self.model, contents=contents, config=config)
        except errors.APIError as e:
            detail = e.message or e.status or "no message"
            headers = getattr(getattr(e, "response", None), "headers", None)
            raise self._error(
                f"answered HTTP {e.code}: {short(detail)}",
                status=e.code,
                retry_after=retry_after_from_headers(headers, e.code),
            ) from None
        except ValueError as e:  # a 200 whose body is not a response (e.g. a proxy's HTML page)
            raise self._error(f"sent an unreadable response: {short(str(e))}") from None
        except _transport_errors() as e:
            raise self._error(f"request failed: {type(e).__name__}: {short(str(e))}") from None
        return self._response(resp)

    def _error(self, what: str, **kw) -> ProviderError:
        return ProviderError(f"{self.describe()} {what}", **kw)

    def _response(self, resp: Any) -> ChatResponse:
        usage = resp.usage_metadata
        input_tokens = output_tokens = 0
        if usage:
            input_tokens = usage.prompt_token_count or 0
            # thinking tokens are billed as output
            output_tokens = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
        model = resp.model_version or self.model
        if not resp.candidates:
            feedback = resp.prompt_feedback
            blocked = feedback.block_reason if feedback else None
            if blocked is None:  # not an answer: never cache it
                raise self._error("answered without a candidate")
            return ChatResponse(
                text=None, input_tokens=input_tokens, output_tokens=output_tokens, finish_reason="refusal", model=model
            )
        candidate = resp.candidates[0]
        parts = candidate.content.parts if candidate.content and candidate.content.parts else []
        texts = [p.text for p in parts if p.text is not None and not p.thought]
        raw_reason = _enum_name(candidate.finish_reason)
        return ChatResponse(
            text="".join(texts) if texts else None,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            finish_reason=finish_reason(raw_reason),
            model=model,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aio.aclose()


def _enum_name(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _transport_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, asyncio.TimeoutError]
    try:
        import aiohttp

        errors.append(aiohttp.ClientError)
    except ImportError:
        pass
    for name in ("httpx", "httpx2"):
        try:
            module = __import__(name)
            errors.append(module.TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


# ----------------------------------------------------------------------------- batch
class GeminiBatch(BatchBackend):
    """The Gemini API's batch mode through google-genai: ``client.batches.create(model, src=[inlined
    requests])`` (POST ``{base_url}/{version}/models/{model}:batchGenerateContent``), polled with
    ``client.batches.get`` (GET ``{base_url}/{version}/batches/{id}``); responses come back inline
    in the job, each with the request's ``metadata`` (``{"key": cache key}``, else by position).
    Inlined requests are limited to 20 MB per batch."""

    kind = "gemini"
    max_items = 50_000
    max_bytes = 19 * 1024 * 1024
    _DONE: ClassVar[dict[str, str]] = {
        "JOB_STATE_SUCCEEDED": COMPLETED,
        "JOB_STATE_PARTIALLY_SUCCEEDED": COMPLETED,
        "JOB_STATE_FAILED": FAILED,
        "JOB_STATE_EXPIRED": EXPIRED,
        "JOB_STATE_CANCELLED": CANCELLED,
    }

    def __init__(self, provider: GeminiProvider, retries: int):
        super().__init__(provider, retries)
        from google.genai import errors, types

        self._types, self._errors = types, errors
        self.client = provider.sdk_client(retries)

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self._errors.APIError as e:
            raise ProviderError(
                f"{self.provider.describe()} batch {what}: HTTP {e.code}: {short(e.message or e.status)}", status=e.code
            ) from None
        except _transport_errors() as e:
            raise ProviderError(f"{self.provider.describe()} batch {what}: {type(e).__name__}: {short(e)}") from None

    def item(self, key: str, request: ChatRequest) -> BatchItem:
        contents, config = self.provider._contents_and_config(request)
        inlined = self._types.InlinedRequest(contents=contents, config=config, metadata={"key": key})
        return BatchItem(key, inlined, len(inlined.model_dump_json(exclude_none=True)))

    def submit(self, items: list[BatchItem], note: str) -> tuple[str, str | None]:
        job = self._call(
            "create",
            self.client.batches.create,
            model=self.provider.model,
            src=[i.payload for i in items],
            config={"display_name": note},
        )
        return job.name, None

    def poll(self, job_id: str) -> JobStatus:
        try:
            job = self._call("poll", self.client.batches.get, name=job_id)
        except ProviderError as e:
            if e.status == 404:
                return JobStatus(LOST, str(e), provider_state="not found")
            raise
        raw_state = str(getattr(job.state, "value", job.state))
        state = self._DONE.get(raw_state, PENDING)
        detail = f"{job.error.code}: {job.error.message}" if job.error is not None else None
        if detail is None and state not in (PENDING, COMPLETED):
            detail = raw_state
        return JobStatus(state, detail, job, raw_state)

    def collect(
        self, job_id: str, status: JobStatus, keys: list[str]
    ) -> tuple[dict[str, ChatResponse], dict[str, str]]:
        answers: dict[str, ChatResponse] = {}
        errors: dict[str, str] = {}
        job = status.raw
        responses = (job.dest.inlined_responses if job is not None and job.dest is not None else None) or []
        for i, inlined in enumerate(responses):
            key = (inlined.metadata or {}).get("key") or (keys[i] if i < len(keys) else None)
            if not key:
                continue
            if inlined.error is not None or inlined.response is None:
                err = inlined.error
                errors[key] = f"{err.code}: {short(err.message)}" if err else "no response"
                continue
            try:
                answers[key] = self.provider._response(inlined.response)
            except ProviderError as e:
                errors[key] = str(e)
        return answers, errors

    def close(self) -> None:
        self.client.close()


Config = GeminiConfig
Online = GeminiProvider
Batch = GeminiBatch
