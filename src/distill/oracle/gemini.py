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

Transport retries are the SDK's own (``HttpRetryOptions``: exponential backoff with jitter on 408,
429 and 5xx, ``oracle.sdk_max_retries`` retries). Unlike the openai and anthropic SDKs, google-genai
does not read ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from distill.config import OracleConfig
from distill.errors import ConfigError
from distill.oracle.base import (
    ChatRequest,
    ChatResponse,
    Provider,
    ProviderError,
    retry_after_from_headers,
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


class GeminiProvider(Provider):
    name = "gemini"

    #: backoff between SDK retries (seconds); class attributes so tests can shorten them
    retry_initial_delay_s: float = 1.0
    retry_max_delay_s: float = 60.0
    retry_jitter_s: float = 1.0

    def __init__(self, cfg: OracleConfig):
        super().__init__(cfg)
        self._key = cfg.api_key()  # fails now, before any request, when the key is missing
        self._client = None

    def cache_identity(self) -> dict[str, Any]:
        # thinking changes the answer, so it is part of what the cache keys on
        return {**super().cache_identity(), "thinking_budget": self.cfg.thinking_budget}

    def _client_or_create(self):
        if self._client is None:
            try:
                from google import genai
                from google.genai import types
            except ImportError as e:
                raise ConfigError(
                    "oracle.provider=gemini needs Google's google-genai SDK: "
                    "`pip install google-genai`"
                ) from e
            options = types.HttpOptions(
                base_url=self.cfg.base_url,
                timeout=int(self.cfg.request_timeout_s * 1000),  # milliseconds
                retry_options=types.HttpRetryOptions(
                    attempts=self.cfg.sdk_max_retries + 1,
                    initial_delay=self.retry_initial_delay_s,
                    max_delay=self.retry_max_delay_s,
                    jitter=self.retry_jitter_s,
                ),
            )
            # vertexai=False: the Gemini Developer API with a key, whatever GOOGLE_GENAI_USE_* say
            self._client = genai.Client(api_key=self._key, vertexai=False, http_options=options)
        return self._client

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
                if self.cfg.thinking_budget is not None else None
            ),
        )
        return contents, config

    async def complete(self, request: ChatRequest) -> ChatResponse:
        client = self._client_or_create()
        from google.genai import errors

        contents, config = self._contents_and_config(request)
        try:
            resp = await client.aio.models.generate_content(
                model=self.model, contents=contents, config=config
            )
        except errors.APIError as e:
            detail = e.message or e.status or "no message"
            headers = getattr(getattr(e, "response", None), "headers", None)
            raise self._error(f"answered HTTP {e.code}: {_short(detail)}", status=e.code,
                              retry_after=retry_after_from_headers(headers, e.code)) from None
        except ValueError as e:  # a 200 whose body is not a response (e.g. a proxy's HTML page)
            raise self._error(f"sent an unreadable response: {_short(str(e))}") from None
        except _transport_errors() as e:
            raise self._error(f"request failed: {type(e).__name__}: {_short(str(e))}") from None
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
            return ChatResponse(text=None, input_tokens=input_tokens, output_tokens=output_tokens,
                                finish_reason="refusal", model=model,
                                extra={"block_reason": _enum_name(blocked)})
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
            extra={"finish_reason_raw": raw_reason} if raw_reason else {},
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


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."
