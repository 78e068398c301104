"""Anthropic Claude through the official ``anthropic`` SDK (Messages API).

Structured output is a forced tool call: one tool whose ``input_schema`` is the filter's JSON
schema, with ``tool_choice`` naming it, so the answer is the tool call's ``input`` (serialised back
to JSON text for the engine, which validates it like any other answer). When the model answers in
text instead, that text is the answer. The system prompt goes in ``system=``; re-asks arrive as
plain assistant and user text turns. The key is read from the environment variable named by
``oracle.api_key_env`` and sent only in the auth header (SDK 2.x sends ``Authorization: Bearer``,
older ones ``x-api-key``). Transport retries (408, 409, 429, 5xx, connection errors; ``Retry-After``
honoured) are the SDK's, ``oracle.sdk_max_retries`` of them.

The Messages API has no ``seed``: ``oracle.seed`` is not sent (it still keys the cache). Sampling
parameters are deprecated for newer Claude models (a 400 "`temperature` is deprecated for this
model") and the SDK no longer has a ``temperature`` argument: ``oracle.temperature`` is sent in the
request body, and when the model refuses it the request is repeated once without it and the provider
stops sending it.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from distill.errors import ConfigError
from distill.providers.base import (
    ChatRequest,
    ChatResponse,
    KeyedConfig,
    Provider,
    ProviderError,
    retry_after_from_headers,
    short,
)

TOOL_NAME = "submit_label"
TOOL_DESCRIPTION = "Submit the label for the item, as one object that satisfies the input schema."

_FINISH = {
    "end_turn": "stop",
    "tool_use": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "refusal",
}

#: what an empty earlier answer is sent as (the Messages API refuses empty or blank text turns)
_EMPTY_TURN = "(empty answer)"

log = logging.getLogger(__name__)


class AnthropicConfig(KeyedConfig):
    provider: Literal["anthropic"]


class AnthropicProvider(Provider):
    name = "anthropic"

    def __init__(self, cfg: AnthropicConfig):
        super().__init__(cfg)
        self._key = cfg.api_key()  # fails now, before any request, when the key is missing
        self._client = None
        self._send_temperature = True  # until the model says it does not take one

    def _client_or_create(self):
        if self._client is None:
            try:
                import anthropic
            except ImportError as e:
                raise ConfigError(
                    "oracle.provider=anthropic needs the anthropic SDK: `pip install anthropic`"
                ) from e
            self._client = anthropic.AsyncAnthropic(
                api_key=self._key,
                base_url=self.cfg.base_url,
                timeout=self.cfg.request_timeout_s,
                max_retries=self.cfg.sdk_max_retries,
            )
        return self._client

    @staticmethod
    def _messages(request: ChatRequest) -> tuple[str | None, list[dict[str, str]]]:
        system = [m["content"] for m in request.messages if m["role"] == "system"]
        turns = []
        for m in request.messages:
            if m["role"] == "system":
                continue
            text = m["content"] if (m["content"] or "").strip() else _EMPTY_TURN
            role = "assistant" if m["role"] == "assistant" else "user"
            turns.append({"role": role, "content": text})
        return ("\n\n".join(system) if system else None), turns

    async def complete(self, request: ChatRequest) -> ChatResponse:
        client = self._client_or_create()
        import anthropic

        system, messages = self._messages(request)
        tool = {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": request.schema}
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": messages,
            "tools": [tool],
            "tool_choice": {"type": "tool", "name": TOOL_NAME},
        }
        if system is not None:
            kwargs["system"] = system
        # decided per request: a request sent with a temperature that the model refuses is asked
        # again without one, even when a concurrent request has already turned the flag off
        with_temperature = self._send_temperature
        try:
            try:
                resp = await self._create(client, kwargs, request.temperature if with_temperature else None)
            except anthropic.BadRequestError as e:
                if not (with_temperature and "temperature" in str(e.api_message or "")):
                    raise
                if self._send_temperature:
                    self._send_temperature = False
                    log.info("%s does not take a temperature; asking without one", self.describe())
                resp = await self._create(client, kwargs, None)
        except anthropic.APIStatusError as e:
            detail = e.api_message or e.message
            retry_after = retry_after_from_headers(e.response.headers, e.status_code)
            raise self._error(f"answered HTTP {e.status_code}: {short(detail)}", status=e.status_code,
                              retry_after=retry_after) from None
        except anthropic.AnthropicError as e:
            raise self._error(f"request failed: {type(e).__name__}: {short(str(e))}") from None
        except ValueError as e:  # a 200 whose body is not a message (e.g. a proxy's HTML page)
            raise self._error(f"sent an unreadable response: {short(str(e))}") from None
        if not isinstance(getattr(resp, "content", None), list):  # not a message: never cache it
            raise self._error("answered without a message")
        return self._response(resp)

    def _error(self, what: str, **kw) -> ProviderError:
        return ProviderError(f"{self.describe()} {what}", **kw)

    async def _create(self, client: Any, kwargs: dict[str, Any], temperature: float | None) -> Any:
        extra = {"extra_body": {"temperature": temperature}} if temperature is not None else {}
        return await client.messages.create(**kwargs, **extra)

    def _response(self, resp: Any) -> ChatResponse:
        finish = _FINISH.get(resp.stop_reason, resp.stop_reason)
        tool = next((b for b in resp.content if b.type == "tool_use" and b.name == TOOL_NAME), None)
        if tool is not None:
            text = json.dumps(tool.input, ensure_ascii=False)
            if finish == "length" and text.endswith("}"):
                # The call was cut off at the token limit: its input is whatever the API could parse
                # of the unfinished object. Leave the object unclosed, as the model did, so the
                # engine reports "truncated" (and asks for a shorter answer), not a schema error.
                text = text[:-1]
        else:
            texts = [b.text for b in resp.content if b.type == "text"]
            text = "".join(texts) if texts else None
        usage = resp.usage
        return ChatResponse(
            text=text,
            input_tokens=(usage.input_tokens or 0) if usage else 0,
            output_tokens=(usage.output_tokens or 0) if usage else 0,
            finish_reason=finish,
            model=resp.model or self.model,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()


Config = AnthropicConfig
Online = AnthropicProvider
Batch = None  # Anthropic's Message Batches API is not implemented: label.mode=batch names the others
