"""A real, local, fake Gemini ``generateContent`` server for tests.

Google's ``google-genai`` SDK speaks real HTTP to it (its async client uses aiohttp, its sync client
``httpx2``; transport mocks would see neither). It runs an aiohttp app on its own event loop in a
background thread, listening on 127.0.0.1 with an OS-assigned port, and records every request.

    with FakeGemini() as srv:
        cfg = OracleConfig(provider="gemini", model="fake", base_url=srv.base_url, api_key_env=...)
        ...
        assert srv.count == 20

The SDK (3.x) posts to ``{base_url}/{api_version}/models/{model}:generateContent`` with the key in
the ``x-goog-api-key`` header; ``api_version`` is ``v1`` by default (``v1beta`` with
``GOOGLE_GENAI_API_VERSION=beta``). The server answers any version.

What it answers is decided per request by ``responder(body) -> reply``. A reply is one of

- a :class:`Reply` (status, text, finish reason, headers, raw body, prompt block: fault injection),
- a ``dict``: the label object, sent as the candidate's JSON text,
- a ``str`` (or ``None``): the candidate's text as is (``None``: a candidate with no parts),

and the default responder (:func:`default_label`) returns a schema-valid label: integer scores
derived from a hash of the first user turn (so a record gets the same scores on every attempt and
every run) plus a short reasoning string. It takes the schema from
``generationConfig.responseJsonSchema`` (or ``responseSchema``) when the request carries one, else
the dimension names listed in the prompt.

Knobs (attributes, changeable while the server runs): ``latency_s``, ``responder``, and ``faults``,
a mapping from the 1-based request number to a reply that overrides the responder for that request.

Faults a reply can inject: an HTTP error with ``Retry-After`` / ``retry-after-ms`` / rate-limit
headers (:meth:`Reply.error`, :meth:`Reply.rate_limited`), a connection reset with no response
(:meth:`Reply.connection_reset`), a stall longer than the client's timeout (:meth:`Reply.stall`), a
body that is not JSON (``raw_body``), and answers that are malformed, schema-violating, truncated
(finish reason ``MAX_TOKENS``) or empty. ``headers`` (an attribute) is sent with every response,
e.g. the ``x-ratelimit-*`` headers of :func:`ratelimit_headers` (a reply's own headers win).

What it saw besides the requests: ``received`` (with arrival times, ``mono`` for measuring),
``finished_at`` (when each request ended: answered or dropped), ``in_flight`` / ``peak_in_flight``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from typing_extensions import Self

GENERATE_PATH = re.compile(r"^/(?P<version>v1[a-z0-9]*)/models/(?P<model>[^/:]+):generateContent$")

_RUBRIC_LINE = re.compile(r"^\s*-\s*([a-z][a-z0-9_]*)\s*:", re.MULTILINE)
_EACH_OF = re.compile(r"for each of ([a-z0-9_, ]+?)(?:,? and\b|\.|$)", re.MULTILINE)

#: google.rpc status names the API puts in error bodies
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@dataclass
class Reply:
    """One scripted answer. ``status`` != 200 sends a Google-style error body instead."""

    text: str | None = ""
    finish_reason: str = "STOP"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error_message: str = "fake server error"
    #: bytes sent as the whole HTTP body instead of a response (e.g. a malformed body)
    raw_body: bytes | None = None
    #: overrides the server's latency for this reply (seconds)
    latency_s: float | None = None
    #: usageMetadata counts (promptTokenCount, candidatesTokenCount, thoughtsTokenCount)
    usage: dict[str, int] | None = None
    #: a thought part sent before the answer (what a thinking model returns with includeThoughts)
    thought: str | None = None
    #: the prompt was blocked: no candidates, promptFeedback.blockReason set to this
    block_reason: str | None = None
    #: drop the connection (TCP reset) after the latency instead of answering
    reset: bool = False

    # ---- constructors for the usual faults
    @classmethod
    def label(cls, obj: Mapping[str, Any], **kw: Any) -> Reply:
        return cls(text=json.dumps(obj), **kw)

    @classmethod
    def error(
        cls,
        status: int = 500,
        retry_after: float | None = None,
        message: str = "",
        *,
        retry_after_ms: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """An HTTP error; ``retry_after`` (seconds) sets Retry-After (the SDK ignores it; the
        engine reads it), ``retry_after_ms`` the ``retry-after-ms`` header; ``headers`` others."""
        return cls(
            status=status,
            headers=_error_headers(retry_after, retry_after_ms, headers),
            error_message=message or f"fake HTTP {status}",
        )

    @classmethod
    def rate_limited(
        cls,
        retry_after: float | None = 0.05,
        *,
        retry_after_ms: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """A 429 RESOURCE_EXHAUSTED; see :meth:`error` for the headers."""
        return cls.error(
            429,
            retry_after=retry_after,
            message="Resource has been exhausted (fake)",
            retry_after_ms=retry_after_ms,
            headers=headers,
        )

    @classmethod
    def connection_reset(cls, after_s: float = 0.0) -> Reply:
        """Read the request, wait ``after_s``, then reset the connection without a response."""
        return cls(reset=True, latency_s=after_s)

    @classmethod
    def stall(cls, seconds: float = 5.0) -> Reply:
        """Say nothing for ``seconds`` (set it past the client's timeout), then drop the
        connection. The stall ends early when the client gives up and closes the connection."""
        return cls(reset=True, latency_s=seconds)

    @classmethod
    def malformed(cls, text: str = '{"deployment_stage": 5, "scale": ') -> Reply:
        """Text that is not valid JSON (with finish reason STOP)."""
        return cls(text=text)

    @classmethod
    def truncated(cls, body: Mapping[str, Any] | None = None, keep: float = 0.5) -> Reply:
        """A JSON answer cut off part way, with finish reason MAX_TOKENS."""
        full = json.dumps(default_label(body)) if body else '{"deployment_stage": 3, "scale": 4}'
        return cls(text=full[: max(1, int(len(full) * keep))], finish_reason="MAX_TOKENS")

    @classmethod
    def empty(cls, text: str | None = "") -> Reply:
        return cls(text=text)

    @classmethod
    def blocked(cls, reason: str = "SAFETY") -> Reply:
        return cls(text=None, block_reason=reason)

    @classmethod
    def schema_violation(cls, body: Mapping[str, Any], how: str = "out_of_range") -> Reply:
        """Valid JSON that breaks the schema: a score above the maximum, a missing or extra key."""
        return cls(text=json.dumps(violating_label(body, how)))


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _error_headers(retry_after: float | None, retry_after_ms: float | None,
                   extra: Mapping[str, str] | None) -> dict[str, str]:
    headers = dict(extra or {})
    if retry_after is not None:
        headers["Retry-After"] = _seconds(retry_after)
    if retry_after_ms is not None:
        headers["retry-after-ms"] = _seconds(retry_after_ms)
    return headers


def ratelimit_headers(
    *,
    limit_requests: int | None = None,
    remaining_requests: int | None = None,
    reset_requests: str | None = None,
    limit_tokens: int | None = None,
    remaining_tokens: int | None = None,
    reset_tokens: str | None = None,
) -> dict[str, str]:
    """``x-ratelimit-*`` headers as OpenAI-style APIs send them (resets as durations: ``"1s"``,
    ``"6m0s"``, ``"20ms"``), for :attr:`FakeGemini.headers` or a reply's headers."""
    values = {
        "x-ratelimit-limit-requests": limit_requests,
        "x-ratelimit-remaining-requests": remaining_requests,
        "x-ratelimit-reset-requests": reset_requests,
        "x-ratelimit-limit-tokens": limit_tokens,
        "x-ratelimit-remaining-tokens": remaining_tokens,
        "x-ratelimit-reset-tokens": reset_tokens,
    }
    return {k: str(v) for k, v in values.items() if v is not None}


def _reset_connection(request: web.Request) -> None:
    """Drop the connection without a response: SO_LINGER 0 makes the close a TCP reset."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _wait_unless_gone(request: web.Request, seconds: float) -> None:
    """Sleep ``seconds``, or less when the client closes the connection first."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(min(left, 0.01))


# --------------------------------------------------------------------------- request helpers
def _text_of(content: Mapping[str, Any] | None) -> str:
    parts = (content or {}).get("parts") or []
    return "".join(str(p.get("text") or "") for p in parts if isinstance(p, Mapping))


def user_messages(body: Mapping[str, Any]) -> list[str]:
    return [_text_of(c) for c in body.get("contents", []) if c.get("role", "user") == "user"]


def first_user_message(body: Mapping[str, Any]) -> str:
    users = user_messages(body)
    return users[0] if users else ""


def model_messages(body: Mapping[str, Any]) -> list[str]:
    """The earlier answers in the conversation (role ``model``)."""
    return [_text_of(c) for c in body.get("contents", []) if c.get("role") == "model"]


def turn(body: Mapping[str, Any]) -> int:
    """0 for a first attempt, n after n earlier answers in the conversation (re-asks)."""
    return len(model_messages(body))


def system_instruction(body: Mapping[str, Any]) -> str:
    return _text_of(body.get("systemInstruction") or body.get("system_instruction"))


def generation_config(body: Mapping[str, Any]) -> dict[str, Any]:
    return dict(body.get("generationConfig") or body.get("generation_config") or {})


def _get(d: Mapping[str, Any], camel: str) -> Any:
    """``d[camel]``, or its snake_case spelling (the API takes both; the SDK sends some of each)."""
    if camel in d:
        return d[camel]
    return d.get(re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower())


def thinking_budget(body: Mapping[str, Any]) -> int | None:
    thinking = _get(generation_config(body), "thinkingConfig") or {}
    return _get(thinking, "thinkingBudget")


def prompt_title(body: Mapping[str, Any]) -> str:
    """The ``Title:`` line of the first user turn (how tests tell records apart)."""
    m = re.search(r"^Title: (.*)$", first_user_message(body), re.MULTILINE)
    return m.group(1).strip() if m else ""


def _words(text: str | None) -> int:
    return len((text or "").split())


def schema_of(body: Mapping[str, Any]) -> dict[str, Any] | None:
    config = generation_config(body)
    for key in ("responseJsonSchema", "responseSchema"):
        schema = _get(config, key)
        if isinstance(schema, dict):
            return schema
    return None


def _dimension_names(body: Mapping[str, Any]) -> list[str]:
    """Dimension names from the prompt: rubric lines ``- name: ...``, else ``for each of a, b``."""
    for text in reversed(user_messages(body)):
        names = list(dict.fromkeys(_RUBRIC_LINE.findall(text)))
        if names:
            return names
        m = _EACH_OF.search(text)
        if m:
            return [n.strip() for n in m.group(1).split(",") if n.strip()]
    return []


def default_label(body: Mapping[str, Any] | None) -> dict[str, Any]:
    """A schema-valid label; scores are a deterministic function of the first user turn."""
    body = body or {}
    seed = hashlib.sha256(first_user_message(body).encode("utf-8")).digest()
    schema = schema_of(body)
    props: dict[str, Any] = {}
    if schema is not None:
        props = schema.get("properties", {})
        ints = [k for k, p in props.items() if str(p.get("type", "")).lower() == "integer"]
        strings = [k for k, p in props.items() if str(p.get("type", "")).lower() == "string"]
    else:
        ints, strings = _dimension_names(body), ["reasoning"]
    out: dict[str, Any] = {}
    for i, name in enumerate(ints):
        lo = int(props.get(name, {}).get("minimum", 0))
        hi = int(props.get(name, {}).get("maximum", 10))
        out[name] = lo + seed[i % len(seed)] % (hi - lo + 1)
    for name in strings:
        text = f"Fake oracle judgement {seed.hex()[:8]}: scores follow the rubric."
        limit = props.get(name, {}).get("maxLength")
        out[name] = text[: int(limit)] if limit else text
    return out


def violating_label(body: Mapping[str, Any], how: str = "out_of_range") -> dict[str, Any]:
    obj = dict(default_label(body))
    first = next(k for k in obj if k != "reasoning")
    if how == "out_of_range":
        obj[first] = 11
    elif how == "missing_key":
        del obj[first]
    elif how == "extra_key":
        obj["overall"] = 9.5
    else:
        raise ValueError(f"unknown schema violation {how!r}")
    return obj


def as_reply(answer: Any) -> Reply:
    if isinstance(answer, Reply):
        return answer
    if isinstance(answer, Mapping):
        return Reply.label(answer)
    if answer is None or isinstance(answer, str):
        return Reply(text=answer)
    raise TypeError(
        f"a responder must return a Reply, dict, str or None, not {type(answer).__name__}"
    )


# --------------------------------------------------------------------------- the server
@dataclass(frozen=True)
class Received:
    """One request as the server saw it."""

    n: int  # 1-based, in arrival order
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    time: float
    #: time.monotonic() at arrival (for measuring rates and delays)
    mono: float = 0.0

    @property
    def api_key(self) -> str | None:
        """The key as sent: the ``x-goog-api-key`` header (or a ``key`` query parameter)."""
        return self.headers.get("x-goog-api-key") or self.query.get("key")

    @property
    def model(self) -> str | None:
        m = GENERATE_PATH.match(self.path)
        return m.group("model") if m else None

    @property
    def api_version(self) -> str | None:
        m = GENERATE_PATH.match(self.path)
        return m.group("version") if m else None


class FakeGemini:
    def __init__(
        self,
        responder: Callable[[dict[str, Any]], Any] | None = None,
        *,
        latency_s: float = 0.0,
        faults: Mapping[int, Reply] | None = None,
        start_timeout_s: float = 30.0,
    ):
        self.responder = responder or default_label
        self.latency_s = latency_s
        self.faults: dict[int, Reply] = dict(faults or {})
        #: headers sent with every response (a reply's own headers win)
        self.headers: dict[str, str] = {}
        self.start_timeout_s = start_timeout_s
        self._lock = threading.Lock()
        self._received: list[Received] = []  # generateContent requests
        self._other: list[Received] = []  # everything else (answered 404)
        self._answered = 0
        self._responder_errors: list[BaseException] = []
        self._finished: dict[int, float] = {}  # request number -> monotonic time it ended
        self._in_flight = 0
        self._peak_in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------ what tests read
    @property
    def base_url(self) -> str:
        """What ``oracle.base_url`` should be: the SDK adds ``/{api_version}/models/...`` itself."""
        assert self.port is not None, "server not started"
        return f"http://127.0.0.1:{self.port}"

    @property
    def received(self) -> list[Received]:
        """Every generateContent request (a snapshot), in arrival order."""
        with self._lock:
            return list(self._received)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of every generateContent request (a snapshot)."""
        return [r.body for r in self.received]

    @property
    def api_keys(self) -> list[str | None]:
        return [r.api_key for r in self.received]

    @property
    def other_requests(self) -> list[Received]:
        with self._lock:
            return list(self._other)

    @property
    def count(self) -> int:
        """generateContent requests received (answered or still being answered)."""
        with self._lock:
            return len(self._received)

    @property
    def answered(self) -> int:
        with self._lock:
            return self._answered

    @property
    def responder_errors(self) -> list[BaseException]:
        with self._lock:
            return list(self._responder_errors)

    @property
    def finished_at(self) -> dict[int, float]:
        """Request number -> ``time.monotonic()`` when it ended (answered, refused or dropped)."""
        with self._lock:
            return dict(self._finished)

    @property
    def in_flight(self) -> int:
        """generateContent requests received and not finished yet."""
        with self._lock:
            return self._in_flight

    @property
    def peak_in_flight(self) -> int:
        """The most generateContent requests in flight at once (since start or reset)."""
        with self._lock:
            return self._peak_in_flight

    def reset(self) -> None:
        """Forget what was received (counters restart; faults keep their request numbers)."""
        with self._lock:
            self._received.clear()
            self._other.clear()
            self._answered = 0
            self._responder_errors.clear()
            self._finished.clear()
            self._peak_in_flight = self._in_flight

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(512)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_app(sock))
            except Exception as e:  # noqa: BLE001 - reported by start()
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=serve, name=f"FakeGemini:{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(self.start_timeout_s):
            raise RuntimeError("fake Gemini server did not start in time")
        if failure:
            raise RuntimeError(f"fake Gemini server failed to start: {failure[0]!r}")
        return self

    async def _start_app(self, sock: socket.socket) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop = self._loop
        if self._runner is not None:
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop)
            with contextlib.suppress(Exception):  # best effort on shutdown
                fut.result(timeout=15)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=15)
        self._thread = None
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ request handling
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            raw = await request.read()
        except ConnectionError:  # the client went away mid-request
            return web.Response(status=499)
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in request.headers.items()}
        query = dict(request.query)
        is_generate = request.method == "POST" and GENERATE_PATH.match(request.path) is not None
        with self._lock:
            box = self._received if is_generate else self._other
            n = len(self._received) + 1 if is_generate else 0
            box.append(
                Received(
                    n, request.method, request.path, query, headers, body, time.time(),
                    time.monotonic(),
                )
            )
        if not is_generate:
            return _error_response(404, f"Unknown request URL: {request.method} {request.path}")
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        try:
            return await self._answer(request, body, n)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._finished[n] = time.monotonic()

    async def _answer(self, request: web.Request, body: Any, n: int) -> web.StreamResponse:
        if not isinstance(body, dict):
            self._mark_answered()
            return _error_response(400, "request body is not a JSON object")
        try:
            reply = self.faults.get(n) or as_reply(self.responder(body))
        except Exception as e:  # noqa: BLE001 - a responder bug: answer 400 (not retried), remember it
            with self._lock:
                self._responder_errors.append(e)
            reply = Reply.error(
                400, message=f"fake server responder raised {type(e).__name__}: {e}"
            )
        delay = self.latency_s if reply.latency_s is None else reply.latency_s
        if reply.reset:
            await _wait_unless_gone(request, delay)
            _reset_connection(request)
            raise asyncio.CancelledError  # no response: aiohttp drops the (closed) connection
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            response = self._render(reply, body, request.path)
            for k, v in self.headers.items():
                if k not in response.headers:
                    response.headers[k] = v
            return response
        finally:
            self._mark_answered()

    def _mark_answered(self) -> None:
        with self._lock:
            self._answered += 1

    def _render(self, reply: Reply, body: dict[str, Any], path: str) -> web.Response:
        if reply.raw_body is not None:
            return web.Response(
                status=reply.status,
                body=reply.raw_body,
                headers=reply.headers,
                content_type="application/json",
            )
        if reply.status != 200:
            return _error_response(reply.status, reply.error_message, reply.headers)
        prompt_words = sum(
            _words(t)
            for t in [system_instruction(body), *user_messages(body), *model_messages(body)]
        )
        usage = {
            "promptTokenCount": prompt_words,
            "candidatesTokenCount": _words(reply.text),
            **(reply.usage or {}),
        }
        usage["totalTokenCount"] = sum(v for k, v in usage.items() if k != "totalTokenCount")
        match = GENERATE_PATH.match(path)
        payload: dict[str, Any] = {
            "usageMetadata": usage,
            "modelVersion": match.group("model") if match else "fake",
            "responseId": f"fake-{hashlib.sha256(json.dumps(body).encode()).hexdigest()[:12]}",
        }
        if reply.block_reason is not None:
            payload["promptFeedback"] = {"blockReason": reply.block_reason}
            return web.json_response(payload, headers=reply.headers)
        parts: list[dict[str, Any]] = []
        if reply.thought is not None:
            parts.append({"text": reply.thought, "thought": True})
        if reply.text is not None:
            parts.append({"text": reply.text})
        content: dict[str, Any] = {"role": "model"}
        if parts:
            content["parts"] = parts
        payload["candidates"] = [
            {"content": content, "finishReason": reply.finish_reason, "index": 0}
        ]
        return web.json_response(payload, headers=reply.headers)


def _error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    payload = {
        "error": {
            "code": status,
            "message": message,
            "status": _STATUS_NAMES.get(status, "UNKNOWN"),
        }
    }
    return web.json_response(payload, status=status, headers=dict(headers or {}))
