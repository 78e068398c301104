"""Any OpenAI-compatible chat-completions server: OpenAI, OpenRouter, Ollama, vLLM, llama.cpp's server.

One request body (:func:`request_body`) and one reading of the answer (:func:`parse_completion`) serve
both transports and the batch API, so the three cannot drift apart:

- ``transport: sdk`` (default): the official ``openai`` SDK (``AsyncOpenAI``; raw JSON read back).
- ``transport: aiohttp``: a lean aiohttp client with keep-alive connections and ``orjson`` bodies,
  several times the SDK's ceiling on the 2-core reference machine (``benchmarks/RESULTS.md``). Same
  wire format and cache identity: the transport does not change an answer.
- :class:`OpenAIBatch`: the Batch API (``/v1/files`` + ``/v1/batches``, JSONL with ``custom_id``,
  24 h window, half price), for ``label.mode=batch``.

Structured output is requested by capability (``structured_output``): a strict ``json_schema``, a plain
``json_object``, or nothing (the schema is in the prompt only); the engine validates every answer
either way. Errors map the same for both transports: an HTTP error status becomes a
:class:`ProviderError` with that status and the server's ``Retry-After``; a reset, a timeout, a 200
that is not JSON or a 200 without ``choices`` is a ``ProviderError`` with no status (transient: retried,
never cached). The key comes from the variable named by ``api_key_env`` and is never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
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

try:  # optional: about 3x faster JSON; the plain json module gives the same values
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

log = logging.getLogger("distill")

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIConfig(KeyedConfig):
    provider: Literal["openai"]
    #: how to ask for structured output: json_schema, json_object or none (prompt only)
    structured_output: Literal["json_schema", "json_object", "none"] = "json_schema"
    #: the official SDK, or a lean aiohttp client for high throughput
    transport: Literal["sdk", "aiohttp"] = "sdk"


# ----------------------------------------------------------------------------- the wire format
_FORMATS: dict[tuple[int, str], tuple[dict, dict | None]] = {}


def _response_format(schema: dict[str, Any], mode: str) -> dict[str, Any] | None:
    """``response_format`` for ``mode``; memoised per schema object (the engine passes one dict)."""
    hit = _FORMATS.get((id(schema), mode))
    if hit is not None and hit[0] is schema:
        return hit[1]
    if mode == "json_schema":
        fmt = {"type": "json_schema", "json_schema": {"name": "label", "schema": schema, "strict": True}}
    elif mode == "json_object":
        fmt = {"type": "json_object"}
    else:
        fmt = None
    if len(_FORMATS) > 64:
        _FORMATS.clear()
    _FORMATS[(id(schema), mode)] = (schema, fmt)  # holds the schema: its id is not reused meanwhile
    return fmt


def request_body(cfg: OpenAIConfig, request: ChatRequest) -> dict[str, Any]:
    """The chat-completions body for ``request`` (online and batch alike)."""
    body: dict[str, Any] = {
        "model": cfg.model,
        "messages": request.messages,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
    }
    fmt = _response_format(request.schema, cfg.structured_output)
    if fmt is not None:
        body["response_format"] = fmt
    if request.seed is not None:
        body["seed"] = request.seed
    return body


def parse_completion(describe: str, model: str, payload: Any) -> ChatResponse:
    """A chat-completion body as a :class:`ChatResponse`; a body without a completion (OpenRouter
    sends upstream errors as 200 + ``error``) is a :class:`ProviderError`, never cached."""
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        error = payload.get("error") if isinstance(payload, dict) else None
        raise ProviderError(f"{describe} answered without a completion: {short(error or 'no choices')}")
    choice = choices[0]
    message = choice.get("message")
    usage = payload.get("usage") or {}
    return ChatResponse(
        text=message.get("content") if isinstance(message, dict) else None,
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        finish_reason=choice.get("finish_reason"),
        model=payload.get("model") or model,
    )


def _dumps(obj: Any) -> bytes:
    if _orjson is not None:
        return _orjson.dumps(obj)
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _loads(data: bytes) -> Any:
    return _orjson.loads(data) if _orjson is not None else json.loads(data)


def _error_message(raw: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the body itself."""
    try:
        payload = _loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
    if isinstance(payload, dict):
        err = payload.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return raw.decode("utf-8", "replace")


# ----------------------------------------------------------------------------- online
class OpenAIProvider(Provider):
    name = "openai"

    def __init__(self, cfg: OpenAIConfig, *, max_connections: int = 0):
        super().__init__(cfg)
        self._key = cfg.api_key()  # fails now, before any request, when the key is missing
        self._url = (cfg.base_url or DEFAULT_BASE_URL).rstrip("/") + "/chat/completions"
        #: aiohttp: 0 for no connector limit (the engine bounds requests in flight), else a cap
        self.max_connections = max_connections
        self._client = None  # the SDK client
        self._session = None  # the aiohttp session
        self._target = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.complete = self._complete_http if cfg.transport == "aiohttp" else self._complete_sdk

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIProvider({self.describe()}, {self._url}, {self.cfg.transport})"

    def body(self, request: ChatRequest) -> dict[str, Any]:
        return request_body(self.cfg, request)

    async def complete(self, request: ChatRequest) -> ChatResponse:  # replaced per transport in __init__
        raise NotImplementedError

    # ------------------------------------------------------------------ the SDK
    def _sdk(self):
        if self._client is None:
            try:
                import openai
            except ImportError as e:
                raise ConfigError("oracle.provider=openai needs the openai SDK: `pip install openai`") from e
            self._client = openai.AsyncOpenAI(api_key=self._key, base_url=self.cfg.base_url,
                                              timeout=self.cfg.request_timeout_s,
                                              max_retries=self.cfg.sdk_max_retries)
        return self._client

    async def _complete_sdk(self, request: ChatRequest) -> ChatResponse:
        import openai

        client = self._sdk()
        try:
            raw = await client.chat.completions.with_raw_response.create(**self.body(request))
            payload = json.loads(raw.content)
        except openai.APIStatusError as e:
            raise ProviderError(
                f"{self.describe()} answered HTTP {e.status_code}: {short(e.message)}",
                status=e.status_code, retry_after=retry_after_from_headers(e.response.headers, e.status_code),
            ) from None
        except openai.APIError as e:
            raise ProviderError(f"{self.describe()} request failed: {type(e).__name__}: {short(e)}") from None
        except ValueError as e:  # a 200 whose body is not JSON (e.g. a proxy's HTML page)
            raise ProviderError(f"{self.describe()} sent an unreadable response: {short(e)}") from None
        return parse_completion(self.describe(), self.model, payload)

    # ------------------------------------------------------------------ aiohttp
    def _http(self):
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            import aiohttp
            from yarl import URL

            self._target = URL(self._url)  # parsed once, not per request
            connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.cfg.request_timeout_s),
                headers={"Authorization": f"Bearer {self._key}", "Content-Type": "application/json",
                         "Accept": "application/json"},
                skip_auto_headers=("User-Agent",),
            )
            self._loop = loop
        return self._session

    async def _complete_http(self, request: ChatRequest) -> ChatResponse:
        import aiohttp

        session = self._http()
        data = _dumps(self.body(request))
        try:
            async with session.post(self._target, data=data) as resp:
                raw = await resp.read()
                status = resp.status
                if status >= 400 or status < 200:
                    raise ProviderError(f"{self.describe()} answered HTTP {status}: {short(_error_message(raw))}",
                                        status=status, retry_after=retry_after_from_headers(resp.headers, status))
        except ProviderError:
            raise
        except asyncio.TimeoutError:
            raise ProviderError(f"{self.describe()} request failed: timed out after "
                                f"{self.cfg.request_timeout_s:g}s") from None
        except (aiohttp.ClientError, OSError) as e:
            raise ProviderError(f"{self.describe()} request failed: {type(e).__name__}: {short(e)}") from None
        try:
            payload = _loads(raw)
        except ValueError as e:  # a 200 whose body is not JSON (e.g. a proxy's HTML page)
            raise ProviderError(f"{self.describe()} sent an unreadable response: {short(e)}: "
                                f"{short(raw.decode('utf-8', 'replace'), 120)}") from None
        return parse_completion(self.describe(), self.model, payload)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        session, self._session = self._session, None
        if session is not None and not session.closed:
            try:
                await session.close()
            except RuntimeError:  # created on an event loop that has since closed
                pass


# ----------------------------------------------------------------------------- batch
class OpenAIBatch(BatchBackend):
    """The Batch API: upload a JSONL file (purpose ``batch``), create a batch on
    ``/v1/chat/completions`` with a 24 h window, poll it, read its output and error files.
    Limits: 50,000 requests and 200 MB per batch."""

    kind = "openai"
    max_items = 50_000
    max_bytes = 190 * 1024 * 1024
    _DONE: ClassVar[dict[str, str]] = {"completed": COMPLETED, "failed": FAILED, "expired": EXPIRED,
                                       "cancelled": CANCELLED}

    def __init__(self, provider: OpenAIProvider, retries: int):
        super().__init__(provider, retries)
        import openai

        cfg = provider.cfg
        self._openai = openai
        self.client = openai.OpenAI(api_key=cfg.api_key(), base_url=cfg.base_url,
                                    timeout=cfg.request_timeout_s, max_retries=retries)

    def _call(self, what: str, fn, *args, **kwargs):
        openai = self._openai
        try:
            return fn(*args, **kwargs)
        except openai.APIStatusError as e:
            raise ProviderError(f"{self.provider.describe()} batch {what}: HTTP {e.status_code}: {short(e.message)}",
                                status=e.status_code) from None
        except openai.APIError as e:
            raise ProviderError(f"{self.provider.describe()} batch {what}: {type(e).__name__}: {short(e)}") from None

    def item(self, key: str, request: ChatRequest) -> BatchItem:
        line = {"custom_id": key, "method": "POST", "url": "/v1/chat/completions",
                "body": request_body(self.provider.cfg, request)}
        data = (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        return BatchItem(key, data, len(data))

    def submit(self, items: list[BatchItem], note: str) -> tuple[str, str | None]:
        data = b"".join(i.payload for i in items)
        uploaded = self._call("upload", self.client.files.create, file=(f"{note}.jsonl", data, "application/jsonl"),
                              purpose="batch")
        batch = self._call("create", self.client.batches.create, input_file_id=uploaded.id,
                           endpoint="/v1/chat/completions", completion_window="24h", metadata={"distill": note})
        return batch.id, uploaded.id

    def poll(self, job_id: str) -> JobStatus:
        try:
            batch = self._call("poll", self.client.batches.retrieve, job_id)
        except ProviderError as e:
            if e.status == 404:
                return JobStatus(LOST, str(e), provider_state="not found")
            raise
        detail = None
        if batch.errors and batch.errors.data:
            detail = "; ".join(f"{err.code}: {err.message}" for err in batch.errors.data[:3])
        return JobStatus(self._DONE.get(batch.status, PENDING), detail, batch, batch.status)

    def _lines(self, file_id: str | None) -> Iterable[dict[str, Any]]:
        if not file_id:
            return
        try:
            content = self._call("download", self.client.files.content, file_id)
        except ProviderError as e:
            if e.status != 404:
                raise
            log.warning("label batch: result file %s is gone (%s); its requests go into the next round", file_id, e)
            return
        for line in content.text.splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:  # its request, if any, is missing from the results: resubmitted
                log.warning("label batch: unreadable line in %s: %s", file_id, short(line, 120))
                continue
            if isinstance(row, dict):
                yield row

    def collect(self, job_id: str, status: JobStatus,
                keys: list[str]) -> tuple[dict[str, ChatResponse], dict[str, str]]:
        answers: dict[str, ChatResponse] = {}
        errors: dict[str, str] = {}
        batch = status.raw
        if batch is None:
            return answers, errors
        for row in [*self._lines(batch.output_file_id), *self._lines(batch.error_file_id)]:
            key = row.get("custom_id")
            if not key:
                continue
            response = row.get("response") or {}
            code = response.get("status_code")
            if row.get("error") or code != 200:
                error = row.get("error") or (response.get("body") or {}).get("error") or {}
                errors[key] = (f"HTTP {code}: {short(error.get('message') or error)}" if code
                               else f"{error.get('code')}: {short(error.get('message'))}")
                continue
            try:
                answers[key] = parse_completion(self.provider.describe(), self.provider.model, response.get("body"))
            except ProviderError as e:
                errors[key] = str(e)
        return answers, errors

    def close(self) -> None:
        self.client.close()


Config = OpenAIConfig
Online = OpenAIProvider
Batch = OpenAIBatch
