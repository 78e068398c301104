"""Any OpenAI-compatible chat-completions server through a lean aiohttp client (``oracle.transport=aiohttp``).

The same wire format, request fields and cache identity as :class:`~distill.oracle.openai_compat.OpenAIProvider`
(so the two transports share one response cache), without the SDK's per-request model objects and
its httpx transport: one ``aiohttp.ClientSession`` with keep-alive connections, bodies written with
``orjson`` when it is installed. On the 2-core reference machine this is several times the SDK's
ceiling (see ``benchmarks/RESULTS.md``). There are no retries here: the engine retries transient
failures itself and honours ``Retry-After``.

Errors map as the SDK provider maps them: an HTTP error status becomes a :class:`ProviderError` with
that ``status`` and the server's ``Retry-After``; a reset, a timeout, a 200 that is not JSON or a 200
without ``choices`` becomes a ``ProviderError`` with ``status=None`` (transient: retried, never cached).
The key is read from the environment variable named by ``oracle.api_key_env`` and never logged.
"""

from __future__ import annotations

import asyncio
import json
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

try:  # optional: about 3x faster JSON; the plain json module gives the same values
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def _dumps(obj: Any) -> bytes:
    if _orjson is not None:
        return _orjson.dumps(obj)
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _loads(data: bytes) -> Any:
    if _orjson is not None:
        return _orjson.loads(data)
    return json.loads(data)


class OpenAIHTTPProvider(Provider):
    name = "openai"  # same cache identity as the SDK provider: the transport does not change an answer

    def __init__(self, cfg: OracleConfig, *, max_connections: int = 0):
        super().__init__(cfg)
        self._key = cfg.api_key()  # fails now, before any request, when the key is missing
        self._url = (cfg.base_url or DEFAULT_BASE_URL).rstrip("/") + "/chat/completions"
        #: 0: no connector limit (the engine bounds in-flight requests); else a cap on open connections
        self.max_connections = max_connections
        self._session = None
        self._target = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._formats: dict[int, tuple[dict, dict | None]] = {}

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIHTTPProvider({self.describe()}, {self._url})"

    # ------------------------------------------------------------------ session
    def _session_or_create(self):
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            try:
                import aiohttp
                from yarl import URL
            except ImportError as e:  # pragma: no cover - aiohttp is a project dependency
                raise ConfigError("oracle.transport=aiohttp needs aiohttp: `pip install aiohttp`") from e
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

    # ------------------------------------------------------------------ request body
    def _response_format(self, schema: dict) -> dict | None:
        """As the SDK provider sends it; memoised per schema object (the engine passes one dict)."""
        hit = self._formats.get(id(schema))
        if hit is not None and hit[0] is schema:
            return hit[1]
        mode = self.cfg.structured_output
        if mode == "json_schema":
            fmt = {"type": "json_schema", "json_schema": {"name": "label", "schema": schema, "strict": True}}
        elif mode == "json_object":
            fmt = {"type": "json_object"}
        else:
            fmt = None
        if len(self._formats) > 64:
            self._formats.clear()
        self._formats[id(schema)] = (schema, fmt)
        return fmt

    def body(self, request: ChatRequest) -> dict[str, Any]:
        """The JSON body: the fields OpenAIProvider passes to ``chat.completions.create``."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": request.messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        fmt = self._response_format(request.schema)
        if fmt is not None:
            body["response_format"] = fmt
        if request.seed is not None:
            body["seed"] = request.seed
        return body

    # ------------------------------------------------------------------ one request
    async def complete(self, request: ChatRequest) -> ChatResponse:
        import aiohttp

        session = self._session_or_create()
        data = _dumps(self.body(request))
        try:
            async with session.post(self._target, data=data) as resp:
                raw = await resp.read()
                status = resp.status
                if status >= 400 or status < 200:
                    raise ProviderError(
                        f"{self.describe()} answered HTTP {status}: {_short(_error_message(raw))}",
                        status=status, retry_after=retry_after_from_headers(resp.headers, status),
                    )
        except ProviderError:
            raise
        except asyncio.TimeoutError:
            raise ProviderError(f"{self.describe()} request failed: timed out after "
                                f"{self.cfg.request_timeout_s:g}s") from None
        except (aiohttp.ClientError, OSError) as e:
            raise ProviderError(f"{self.describe()} request failed: {type(e).__name__}: {_short(str(e))}") from None
        try:
            payload = _loads(raw)
        except ValueError as e:  # a 200 whose body is not JSON (e.g. a proxy's HTML page)
            raise ProviderError(f"{self.describe()} sent an unreadable response: {_short(str(e))}: "
                                f"{_short(raw.decode('utf-8', 'replace'), 120)}") from None
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            # not an answer (OpenRouter sends upstream errors as 200 + "error"): never cache it
            error = payload.get("error") if isinstance(payload, dict) else None
            raise ProviderError(f"{self.describe()} answered without a completion: {_short(str(error or 'no choices'))}")
        choice = choices[0]
        message = choice.get("message")
        usage = payload.get("usage") or {}
        return ChatResponse(
            text=message.get("content") if isinstance(message, dict) else None,
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=choice.get("finish_reason"),
            model=payload.get("model") or self.model,
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            try:
                await session.close()
            except RuntimeError:  # created on an event loop that has since closed
                pass


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


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."
