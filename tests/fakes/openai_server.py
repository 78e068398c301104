"""A real, local, fake OpenAI chat-completions server for tests.

The official ``openai`` SDK speaks real HTTP to it (the SDK uses ``httpx2``, so transport mocks would
not see its requests). It runs an aiohttp app on its own event loop in a background thread, listening
on 127.0.0.1 with an OS-assigned port, and records every request it receives.

    with FakeOpenAI(latency_s=0.05) as srv:
        cfg = OracleConfig(provider="openai", model="fake", base_url=srv.base_url, api_key_env=...)
        ...
        assert srv.count == 20

What it answers is decided per request by ``responder(body) -> reply``. A reply is one of

- a :class:`Reply` (status, content, finish_reason, headers, raw body: fault injection),
- a ``dict``: the label object, sent as the JSON message content,
- a ``str`` (or ``None``): the message content as is,

and the default responder (:func:`default_label`) returns a schema-valid label: integer scores derived
from a hash of the first user message (so a record gets the same scores on every attempt and every run)
plus a short reasoning string. It takes the schema from ``response_format.json_schema.schema`` when the
request carries one, else the dimension names listed in the prompt.

Knobs (attributes, changeable while the server runs): ``latency_s`` (seconds before each answer),
``responder``, ``faults``, a mapping from the 1-based request number to a reply that overrides the
responder for that request, and ``headers``, sent with every response (e.g. the ``x-ratelimit-*``
headers a real API sends: :func:`ratelimit_headers`; a reply's own headers win). Responders can tell
requests apart with :func:`prompt_title` (the record), :func:`turn` (0 for a first attempt, 1 after
one re-ask) and :func:`first_user_message`.

Faults a reply can inject: an HTTP error with ``Retry-After`` / ``retry-after-ms`` / rate-limit
headers (:meth:`Reply.error`, :meth:`Reply.rate_limited`), a connection reset with no response
(:meth:`Reply.connection_reset`), a stall longer than the client's timeout (:meth:`Reply.stall`), a
body that is not JSON (``raw_body``), and answers that are malformed, schema-violating, truncated
(``finish_reason="length"``) or empty.

What it saw: ``requests`` (JSON bodies), ``received`` (with headers, e.g. ``.authorization``, and
arrival times), ``authorizations``, ``count`` (received), ``answered`` (responses written),
``finished_at`` (when each request ended: answered or dropped), ``in_flight`` / ``peak_in_flight``,
``other_requests`` (any path but ``POST /v1/chat/completions``, answered 404) and
``responder_errors``; ``reset()`` forgets it.
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

CHAT_PATH = "/v1/chat/completions"

_RUBRIC_LINE = re.compile(r"^\s*-\s*([a-z][a-z0-9_]*)\s*:", re.MULTILINE)
_EACH_OF = re.compile(r"for each of ([a-z0-9_, ]+?)(?:,? and\b|\.|$)", re.MULTILINE)


@dataclass
class Reply:
    """One scripted answer. ``status`` != 200 sends an OpenAI-style error body instead."""

    content: str | None = ""
    finish_reason: str = "stop"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error_message: str = "fake server error"
    #: bytes sent as the whole HTTP body instead of a chat completion (e.g. a malformed body)
    raw_body: bytes | None = None
    #: overrides the server's latency for this reply (seconds)
    latency_s: float | None = None
    usage: dict[str, int] | None = None
    #: drop the connection (TCP reset) after the latency instead of answering
    reset: bool = False

    # ---- constructors for the usual faults
    @classmethod
    def label(cls, obj: Mapping[str, Any], **kw: Any) -> Reply:
        return cls(content=json.dumps(obj), **kw)

    @classmethod
    def error(cls, status: int = 500, retry_after: float | None = None, message: str = "", *,
              retry_after_ms: float | None = None,
              headers: Mapping[str, str] | None = None) -> Reply:
        """An HTTP error; ``retry_after`` (seconds, may be fractional) sets the Retry-After header,
        ``retry_after_ms`` the ``retry-after-ms`` header; ``headers`` adds any others."""
        return cls(status=status, headers=_error_headers(retry_after, retry_after_ms, headers),
                   error_message=message or f"fake HTTP {status}")

    @classmethod
    def rate_limited(cls, retry_after: float | None = 0.05, *, retry_after_ms: float | None = None,
                     headers: Mapping[str, str] | None = None) -> Reply:
        """A 429; see :meth:`error` for the headers (and :func:`ratelimit_headers`)."""
        return cls.error(429, retry_after=retry_after, message="Rate limit reached (fake)",
                         retry_after_ms=retry_after_ms, headers=headers)

    @classmethod
    def connection_reset(cls, after_s: float = 0.0) -> Reply:
        """Read the request, wait ``after_s``, then reset the connection without a response."""
        return cls(reset=True, latency_s=after_s)

    @classmethod
    def stall(cls, seconds: float = 5.0) -> Reply:
        """Say nothing for ``seconds`` (set it past the client's timeout), then drop the connection.
        The stall ends early when the client gives up and closes the connection."""
        return cls(reset=True, latency_s=seconds)

    @classmethod
    def malformed(cls, text: str = '{"deployment_stage": 5, "scale": ') -> Reply:
        """Message content that is not valid JSON (with finish_reason "stop")."""
        return cls(content=text)

    @classmethod
    def truncated(cls, body: Mapping[str, Any] | None = None, keep: float = 0.5) -> Reply:
        """A JSON answer cut off part way, with finish_reason "length"."""
        full = json.dumps(default_label(body)) if body else '{"deployment_stage": 3, "scale": 4}'
        return cls(content=full[: max(1, int(len(full) * keep))], finish_reason="length")

    @classmethod
    def empty(cls, content: str | None = "") -> Reply:
        return cls(content=content)

    @classmethod
    def schema_violation(cls, body: Mapping[str, Any], how: str = "out_of_range") -> Reply:
        """Valid JSON that breaks the schema: a score above the maximum, or a missing key."""
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
        return cls(content=json.dumps(obj))


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


def ratelimit_headers(*, limit_requests: int | None = None, remaining_requests: int | None = None,
                      reset_requests: str | None = None, limit_tokens: int | None = None,
                      remaining_tokens: int | None = None, reset_tokens: str | None = None
                      ) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers (resets as durations: ``"1s"``, ``"6m0s"``, ``"20ms"``),
    for :attr:`FakeOpenAI.headers` or a reply's headers."""
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
def user_messages(body: Mapping[str, Any]) -> list[str]:
    return [str(m.get("content") or "") for m in body.get("messages", []) if m.get("role") == "user"]


def first_user_message(body: Mapping[str, Any]) -> str:
    users = user_messages(body)
    return users[0] if users else ""


def turn(body: Mapping[str, Any]) -> int:
    """0 for a first attempt, n after n earlier answers in the conversation (re-asks)."""
    return sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")


def prompt_title(body: Mapping[str, Any]) -> str:
    """The ``Title:`` line of the first user message (how tests tell records apart)."""
    m = re.search(r"^Title: (.*)$", first_user_message(body), re.MULTILINE)
    return m.group(1).strip() if m else ""


def _words(text: str | None) -> int:
    return len((text or "").split())


def _schema_of(body: Mapping[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            return schema
    return None


def _dimension_names(body: Mapping[str, Any]) -> list[str]:
    """Dimension names from the prompt: rubric lines ``- name: ...``, else ``for each of a, b, c``."""
    for text in reversed(user_messages(body)):
        names = list(dict.fromkeys(_RUBRIC_LINE.findall(text)))
        if names:
            return names
        m = _EACH_OF.search(text)
        if m:
            return [n.strip() for n in m.group(1).split(",") if n.strip()]
    return []


def default_label(body: Mapping[str, Any]) -> dict[str, Any]:
    """A schema-valid label; scores are a deterministic function of the first user message."""
    seed = hashlib.sha256(first_user_message(body).encode("utf-8")).digest()
    schema = _schema_of(body)
    out: dict[str, Any] = {}
    if schema is not None:
        props = schema.get("properties", {})
        ints = [k for k, p in props.items() if p.get("type") == "integer"]
        strings = [k for k, p in props.items() if p.get("type") == "string"]
    else:
        ints, strings = _dimension_names(body), ["reasoning"]
        props = {}
    for i, name in enumerate(ints):
        lo = int(props.get(name, {}).get("minimum", 0))
        hi = int(props.get(name, {}).get("maximum", 10))
        out[name] = lo + seed[i % len(seed)] % (hi - lo + 1)
    for name in strings:
        text = f"Fake oracle judgement {seed.hex()[:8]}: scores follow the rubric."
        limit = props.get(name, {}).get("maxLength")
        out[name] = text[:limit] if limit else text
    return out


def as_reply(answer: Any) -> Reply:
    if isinstance(answer, Reply):
        return answer
    if isinstance(answer, Mapping):
        return Reply.label(answer)
    if answer is None or isinstance(answer, str):
        return Reply(content=answer)
    raise TypeError(f"a responder must return a Reply, dict, str or None, not {type(answer).__name__}")


# --------------------------------------------------------------------------- the server
@dataclass(frozen=True)
class Received:
    """One request as the server saw it."""

    n: int  # 1-based, in arrival order
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float
    #: time.monotonic() at arrival (for measuring rates and delays)
    mono: float = 0.0

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


class FakeOpenAI:
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
        self._received: list[Received] = []  # chat-completions requests
        self._other: list[Received] = []  # everything else (answered 404)
        self._answered = 0
        self._finished: dict[int, float] = {}  # request number -> monotonic time it ended
        self._in_flight = 0
        self._peak_in_flight = 0
        self._responder_errors: list[BaseException] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------ what tests read
    @property
    def base_url(self) -> str:
        assert self.port is not None, "server not started"
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def received(self) -> list[Received]:
        """Every chat-completions request (a snapshot), in arrival order."""
        with self._lock:
            return list(self._received)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of every chat-completions request (a snapshot)."""
        return [r.body for r in self.received]

    @property
    def authorizations(self) -> list[str | None]:
        return [r.authorization for r in self.received]

    @property
    def other_requests(self) -> list[Received]:
        with self._lock:
            return list(self._other)

    @property
    def count(self) -> int:
        """Chat-completions requests received (answered or still being answered)."""
        with self._lock:
            return len(self._received)

    @property
    def answered(self) -> int:
        """Chat-completions requests whose response has been written."""
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
        """Chat-completions requests received and not finished yet."""
        with self._lock:
            return self._in_flight

    @property
    def peak_in_flight(self) -> int:
        """The most chat-completions requests in flight at once (since start or reset)."""
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

    def wait_for(self, predicate: Callable[[FakeOpenAI], bool], timeout_s: float = 60.0,
                 poll_s: float = 0.005) -> bool:
        """Poll ``predicate(self)`` until true or ``timeout_s`` passes; returns the last result."""
        deadline = time.monotonic() + timeout_s
        while True:
            if predicate(self):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(poll_s)

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

        self._thread = threading.Thread(target=serve, name=f"FakeOpenAI:{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(self.start_timeout_s):
            raise RuntimeError("fake OpenAI server did not start in time")
        if failure:
            raise RuntimeError(f"fake OpenAI server failed to start: {failure[0]!r}")
        return self

    async def _start_app(self, sock: socket.socket) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
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
        except ConnectionError:  # the client went away (cancelled or killed) mid-request
            return web.Response(status=499)
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in request.headers.items()}
        is_chat = request.method == "POST" and request.path.rstrip("/") == CHAT_PATH
        with self._lock:
            box = self._received if is_chat else self._other
            n = len(self._received) + 1 if is_chat else 0
            box.append(Received(n, request.method, request.path, headers, body, time.time(),
                                time.monotonic()))
        if not is_chat:
            return _error_response(404, f"Unknown request URL: {request.method} {request.path}",
                                   "invalid_request_error")
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
            return _error_response(400, "request body is not a JSON object", "invalid_request_error")
        try:
            reply = self.faults.get(n) or as_reply(self.responder(body))
        except Exception as e:  # noqa: BLE001 - a responder bug: answer 500, remember it
            with self._lock:
                self._responder_errors.append(e)
            reply = Reply.error(500, message=f"fake server responder raised {type(e).__name__}: {e}")
            reply.headers["x-should-retry"] = "false"
        delay = self.latency_s if reply.latency_s is None else reply.latency_s
        if reply.reset:
            await _wait_unless_gone(request, delay)
            _reset_connection(request)
            raise asyncio.CancelledError  # no response: aiohttp drops the (closed) connection
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            response = self._render(reply, body, n)
            for k, v in self.headers.items():
                if k not in response.headers:
                    response.headers[k] = v
            return response
        finally:
            self._mark_answered()

    def _mark_answered(self) -> None:
        with self._lock:
            self._answered += 1

    def _render(self, reply: Reply, body: dict[str, Any], n: int) -> web.Response:
        if reply.raw_body is not None:
            return web.Response(status=reply.status, body=reply.raw_body, headers=reply.headers,
                                content_type="application/json")
        if reply.status != 200:
            kind = "rate_limit_error" if reply.status == 429 else "server_error"
            return _error_response(reply.status, reply.error_message, kind, reply.headers)
        prompt_words = sum(_words(m.get("content")) for m in body.get("messages", []))
        usage = reply.usage or {"prompt_tokens": prompt_words, "completion_tokens": _words(reply.content)}
        usage = {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
        payload = {
            "id": f"chatcmpl-fake-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "system_fingerprint": "fp_fake",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": reply.content, "refusal": None},
                "logprobs": None,
                "finish_reason": reply.finish_reason,
            }],
            "usage": usage,
        }
        return web.json_response(payload, headers=reply.headers)


def _error_response(status: int, message: str, kind: str,
                    headers: Mapping[str, str] | None = None) -> web.Response:
    payload = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return web.json_response(payload, status=status, headers=dict(headers or {}))


def main(argv: list[str] | None = None) -> None:
    """Serve in a process of its own (for throughput measurements): prints the base URL, then serves
    the default responder until interrupted. ``python -m tests.fakes.openai_server --latency 0.05``"""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    import signal

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with FakeOpenAI(latency_s=args.latency) as srv:
        print(srv.base_url, flush=True)
        while not stop.wait(0.5):
            pass
        print(f"served {srv.count} requests", flush=True)


if __name__ == "__main__":
    main()
