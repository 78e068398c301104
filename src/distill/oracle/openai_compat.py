"""Any OpenAI-compatible chat-completions server through the official ``openai`` SDK.

Works with OpenAI, OpenRouter, Ollama, vLLM and llama.cpp's server: set ``oracle.base_url``. Structured
output is requested by capability (``oracle.structured_output``): a strict ``json_schema``, a plain
``json_object``, or nothing (the schema is in the prompt only). Every answer is validated by the engine
either way. The key is read from the environment variable named by ``oracle.api_key_env``.
"""

from __future__ import annotations

from distill.config import OracleConfig
from distill.errors import ConfigError
from distill.oracle.base import (
    ChatRequest,
    ChatResponse,
    Provider,
    ProviderError,
    retry_after_from_headers,
)


class OpenAIProvider(Provider):
    name = "openai"

    def __init__(self, cfg: OracleConfig):
        super().__init__(cfg)
        self._key = cfg.api_key()  # fails now, before any request, when the key is missing
        self._client = None

    def _client_or_create(self):
        if self._client is None:
            try:
                import openai
            except ImportError as e:
                raise ConfigError("oracle.provider=openai needs the openai SDK: `pip install openai`") from e
            self._client = openai.AsyncOpenAI(
                api_key=self._key,
                base_url=self.cfg.base_url,
                timeout=self.cfg.request_timeout_s,
                max_retries=self.cfg.sdk_max_retries,
            )
        return self._client

    def _response_format(self, schema: dict) -> dict | None:
        mode = self.cfg.structured_output
        if mode == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": "label", "schema": schema, "strict": True}}
        if mode == "json_object":
            return {"type": "json_object"}
        return None

    async def complete(self, request: ChatRequest) -> ChatResponse:
        import openai

        client = self._client_or_create()
        kwargs = {}
        fmt = self._response_format(request.schema)
        if fmt is not None:
            kwargs["response_format"] = fmt
        if request.seed is not None:
            kwargs["seed"] = request.seed
        try:
            resp = await client.chat.completions.create(
                model=self.model,
                messages=request.messages,
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                **kwargs,
            )
        except openai.APIStatusError as e:
            raise ProviderError(
                f"{self.describe()} answered HTTP {e.status_code}: {_short(e.message)}",
                status=e.status_code, retry_after=retry_after_from_headers(e.response.headers, e.status_code),
            ) from None
        except openai.APIError as e:
            raise ProviderError(f"{self.describe()} request failed: {type(e).__name__}: {_short(str(e))}") from None
        except ValueError as e:  # a 200 whose body is not a completion (e.g. a proxy's HTML page)
            raise ProviderError(f"{self.describe()} sent an unreadable response: {_short(str(e))}") from None
        if not resp.choices:  # not an answer (OpenRouter sends upstream errors as 200 + "error"): never cache it
            error = (resp.model_extra or {}).get("error")
            raise ProviderError(f"{self.describe()} answered without a completion: {_short(str(error or 'no choices'))}")
        choice = resp.choices[0]
        usage = resp.usage
        return ChatResponse(
            text=choice.message.content if choice.message else None,
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason,
            model=resp.model or self.model,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."
