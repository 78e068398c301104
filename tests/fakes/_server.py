"""What the fake provider servers share: the server, its request book, fault injection, labels.

Each provider's fake (``openai_server``, ``gemini_server``, ``anthropic_server``) subclasses
:class:`FakeServer` and :class:`BaseReply` and keeps only its wire format: which requests are its
endpoint, how a reply is encoded, what its error bodies look like.

:class:`FakeServer` runs an aiohttp app on its own event loop in a background thread, listening on
127.0.0.1 with an OS-assigned port, and records every request it receives. What it answers is
decided per request by ``responder(body) -> reply``: a reply object, a ``dict`` (the label) or a
``str`` / ``None`` (the answer's text as is). Knobs (attributes, changeable while the server runs):
``latency_s`` (seconds before each answer), ``responder``, ``faults`` (the 1-based request number
-> a reply that overrides the responder for that request) and ``headers`` (sent with every
response; a reply's own headers win).

Faults a reply can inject: an HTTP error with ``Retry-After`` / ``retry-after-ms`` / rate-limit
headers (:meth:`BaseReply.error`, :meth:`BaseReply.rate_limited`, :func:`ratelimit_headers`), a
connection reset with no response (:meth:`BaseReply.connection_reset`), a stall longer than the
client's timeout (:meth:`BaseReply.stall`), a body that is not JSON (``raw_body``), and, with each
provider's own constructors, answers that are malformed, schema-violating, truncated or empty.

What it saw: ``received`` (:class:`BaseReceived`: headers, arrival times, ``mono`` for measuring),
``requests`` (the bodies), ``count`` (received), ``answered`` (responses written), ``finished_at``
(when each request ended: answered or dropped), ``in_flight`` / ``peak_in_flight``,
``other_requests`` (any request but the endpoint's, answered 404) and ``responder_errors`` (a
responder that raised: the request is answered with an error the SDK does not retry);
``reset()`` forgets it and ``wait_for(predicate)`` polls it.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import web
from typing_extensions import Self

_RUBRIC_LINE = re.compile(r"^\s*-\s*([a-z][a-z0-9_]*)\s*:", re.MULTILINE)
_EACH_OF = re.compile(r"for each of ([a-z0-9_, ]+?)(?:,? and\b|\.|$)", re.MULTILINE)


# --------------------------------------------------------------------------- headers
def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def error_headers(retry_after: float | None, retry_after_ms: float | None,
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
    """``x-ratelimit-*`` headers as OpenAI sends them (resets as durations: ``"1s"``, ``"6m0s"``,
    ``"20ms"``), for a server's ``headers`` or a reply's headers."""
    values = {
        "x-ratelimit-limit-requests": limit_requests,
        "x-ratelimit-remaining-requests": remaining_requests,
        "x-ratelimit-reset-requests": reset_requests,
        "x-ratelimit-limit-tokens": limit_tokens,
        "x-ratelimit-remaining-tokens": remaining_tokens,
        "x-ratelimit-reset-tokens": reset_tokens,
    }
    return {k: str(v) for k, v in values.items() if v is not None}


# --------------------------------------------------------------------------- scripted labels
def title_of(text: str) -> str:
    """The ``Title:`` line of a prompt (how tests tell records apart)."""
    m = re.search(r"^Title: (.*)$", text, re.MULTILINE)
    return m.group(1).strip() if m else ""


def words(text: str | None) -> int:
    return len((text or "").split())


def dimension_names(user_texts: Sequence[str]) -> list[str]:
    """Dimension names from the prompt: rubric lines ``- name: ...``, else ``for each of a, b``."""
    for text in reversed(user_texts):
        names = list(dict.fromkeys(_RUBRIC_LINE.findall(text)))
        if names:
            return names
        m = _EACH_OF.search(text)
        if m:
            return [n.strip() for n in m.group(1).split(",") if n.strip()]
    return []


def scripted_label(seed_text: str, schema: Mapping[str, Any] | None,
                   user_texts: Sequence[str]) -> dict[str, Any]:
    """A schema-valid label whose scores are a deterministic function of ``seed_text`` (the first
    user message): from ``schema`` when the request carries one, else from the dimension names
    listed in ``user_texts``; plus a short reasoning string."""
    seed = hashlib.sha256(seed_text.encode("utf-8")).digest()
    props: dict[str, Any] = {}
    if schema is not None:
        props = schema.get("properties", {})
        ints = [k for k, p in props.items() if str(p.get("type", "")).lower() == "integer"]
        strings = [k for k, p in props.items() if str(p.get("type", "")).lower() == "string"]
    else:
        ints, strings = dimension_names(user_texts), ["reasoning"]
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


def violate(label: Mapping[str, Any], how: str = "out_of_range") -> dict[str, Any]:
    """``label`` broken: its first score above the maximum, missing, or an extra key added."""
    obj = dict(label)
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


def cut(text: str, keep: float) -> str:
    """The first ``keep`` part of ``text`` (at least one character): a truncated answer."""
    return text[: max(1, int(len(text) * keep))]


# --------------------------------------------------------------------------- replies
@dataclass(kw_only=True)
class BaseReply:
    """One scripted answer: what every provider's ``Reply`` has (its own fields come first).

    ``status`` != 200 sends the provider's error body instead of an answer.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error_message: str = "fake server error"
    #: bytes sent as the whole HTTP body instead of an answer (e.g. a malformed body)
    raw_body: bytes | None = None
    #: overrides the server's latency for this reply (seconds)
    latency_s: float | None = None
    #: the answer's token counts, in the provider's names
    usage: dict[str, int] | None = None
    #: drop the connection (TCP reset) after the latency instead of answering
    reset: bool = False

    #: the message of :meth:`rate_limited`
    rate_limit_message: ClassVar[str] = "Rate limit reached (fake)"

    # ---- what a subclass defines: the answer for a label, and for a text (or None)
    @classmethod
    def label(cls, obj: Mapping[str, Any], **kw: Any) -> Self:
        raise NotImplementedError

    @classmethod
    def from_text(cls, text: str | None) -> Self:
        raise NotImplementedError

    @classmethod
    def of(cls, answer: Any) -> Self:
        """A responder's answer as a reply: a reply as is, a dict as the label, a str as text."""
        if isinstance(answer, cls):
            return answer
        if isinstance(answer, Mapping):
            return cls.label(answer)
        if answer is None or isinstance(answer, str):
            return cls.from_text(answer)
        raise TypeError(
            f"a responder must return a Reply, dict, str or None, not {type(answer).__name__}"
        )

    # ---- constructors for the usual faults
    @classmethod
    def error(cls, status: int = 500, retry_after: float | None = None, message: str = "", *,
              retry_after_ms: float | None = None,
              headers: Mapping[str, str] | None = None) -> Self:
        """An HTTP error; ``retry_after`` (seconds, may be fractional) sets the Retry-After header,
        ``retry_after_ms`` the ``retry-after-ms`` header; ``headers`` adds any others."""
        return cls(status=status, headers=error_headers(retry_after, retry_after_ms, headers),
                   error_message=message or f"fake HTTP {status}")

    @classmethod
    def rate_limited(cls, retry_after: float | None = 0.05, *, retry_after_ms: float | None = None,
                     headers: Mapping[str, str] | None = None) -> Self:
        """A 429; see :meth:`error` for the headers (and :func:`ratelimit_headers`)."""
        return cls.error(429, retry_after=retry_after, message=cls.rate_limit_message,
                         retry_after_ms=retry_after_ms, headers=headers)

    @classmethod
    def connection_reset(cls, after_s: float = 0.0) -> Self:
        """Read the request, wait ``after_s``, then reset the connection without a response."""
        return cls(reset=True, latency_s=after_s)

    @classmethod
    def stall(cls, seconds: float = 5.0) -> Self:
        """Say nothing for ``seconds`` (set it past the client's timeout), then drop the connection.
        The stall ends early when the client gives up and closes the connection."""
        return cls(reset=True, latency_s=seconds)


# --------------------------------------------------------------------------- connections
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


async def read_body(request: web.Request) -> Any:
    """The request's JSON body; ``None`` when empty, the text when it is not JSON."""
    raw = await request.read()
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")


def lower_headers(request: web.Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}


# --------------------------------------------------------------------------- the server
@dataclass(frozen=True)
class BaseReceived:
    """One request as the server saw it."""

    n: int  # 1-based, in arrival order (0 for other requests)
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float
    #: time.monotonic() at arrival (for measuring rates and delays)
    mono: float = 0.0
    query: dict[str, str] = field(default_factory=dict)


class FakeServer:
    """A fake provider API on 127.0.0.1 (see the module's docstring); a subclass sets the class
    attributes below and defines :meth:`_is_endpoint`, :meth:`_refuse` and :meth:`_render_ok`."""

    #: in thread names and start errors ("OpenAI")
    provider: ClassVar[str] = "provider"
    #: what ``base_url`` adds after ``http://127.0.0.1:{port}`` (the SDK adds the rest)
    url_prefix: ClassVar[str] = ""
    reply_type: ClassVar[type[BaseReply]] = BaseReply
    received_type: ClassVar[type[BaseReceived]] = BaseReceived
    #: how a responder that raises is answered: status and extra headers (not retried)
    responder_error_status: ClassVar[int] = 500
    responder_error_headers: ClassVar[Mapping[str, str]] = {"x-should-retry": "false"}

    @staticmethod
    def default_responder(body: dict[str, Any]) -> Any:
        raise NotImplementedError

    def __init__(
        self,
        responder: Callable[[dict[str, Any]], Any] | None = None,
        *,
        latency_s: float = 0.0,
        faults: Mapping[int, BaseReply] | None = None,
        start_timeout_s: float = 30.0,
    ):
        self.responder = responder or self.default_responder
        self.latency_s = latency_s
        self.faults: dict[int, BaseReply] = dict(faults or {})
        #: headers sent with every response (a reply's own headers win)
        self.headers: dict[str, str] = {}
        self.start_timeout_s = start_timeout_s
        self._lock = threading.Lock()
        self._received: list[BaseReceived] = []  # requests to the endpoint
        self._other: list[BaseReceived] = []  # everything else (answered 404)
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
        """What ``oracle.base_url`` should be."""
        assert self.port is not None, "server not started"
        return f"http://127.0.0.1:{self.port}{self.url_prefix}"

    @property
    def received(self) -> list[BaseReceived]:
        """Every request to the endpoint (a snapshot), in arrival order."""
        with self._lock:
            return list(self._received)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of every request to the endpoint (a snapshot)."""
        return [r.body for r in self.received]

    @property
    def other_requests(self) -> list[BaseReceived]:
        with self._lock:
            return list(self._other)

    @property
    def count(self) -> int:
        """Requests to the endpoint received (answered or still being answered)."""
        with self._lock:
            return len(self._received)

    @property
    def answered(self) -> int:
        """Requests to the endpoint whose response has been written."""
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
        """Requests to the endpoint received and not finished yet."""
        with self._lock:
            return self._in_flight

    @property
    def peak_in_flight(self) -> int:
        """The most requests to the endpoint in flight at once (since start or reset)."""
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

    def wait_for(self, predicate: Callable[[Self], bool], timeout_s: float = 60.0,
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

        name = f"Fake{self.provider}:{self.port}"
        self._thread = threading.Thread(target=serve, name=name, daemon=True)
        self._thread.start()
        if not ready.wait(self.start_timeout_s):
            raise RuntimeError(f"fake {self.provider} server did not start in time")
        if failure:
            raise RuntimeError(f"fake {self.provider} server failed to start: {failure[0]!r}")
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

    # ------------------------------------------------------------------ what a subclass defines
    def _is_endpoint(self, request: web.Request) -> bool:
        """Whether ``request`` is one the server answers (the rest are answered 404)."""
        raise NotImplementedError

    def _refuse(self, status: int, message: str,
                headers: Mapping[str, str] | None = None) -> web.Response:
        """The provider's error response (unknown URL, a body that is not an object)."""
        raise NotImplementedError

    def _render_ok(self, reply: Any, body: dict[str, Any], n: int, path: str) -> web.Response:
        """The provider's answer for a 200 ``reply`` to request ``n`` (to ``path``)."""
        raise NotImplementedError

    def _render_error(self, reply: Any) -> web.Response:
        """The provider's error response for a reply whose status is not 200."""
        return self._refuse(reply.status, reply.error_message, reply.headers)

    # ------------------------------------------------------------------ request handling
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_body(request)
        except ConnectionError:  # the client went away (cancelled or killed) mid-request
            return web.Response(status=499)
        is_endpoint = self._is_endpoint(request)
        with self._lock:
            box = self._received if is_endpoint else self._other
            n = len(self._received) + 1 if is_endpoint else 0
            box.append(self.received_type(n, request.method, request.path, lower_headers(request),
                                          body, time.time(), time.monotonic(),
                                          dict(request.query)))
        if not is_endpoint:
            return self._refuse(404, f"Unknown request URL: {request.method} {request.path}")
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        try:
            return await self._answer(request, body, n)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._finished[n] = time.monotonic()

    def _reply_for(self, body: dict[str, Any], fault: BaseReply | None) -> Any:
        """``fault``, else the responder's answer as a reply; a responder that raises is answered
        with an error (and remembered in :attr:`responder_errors`)."""
        try:
            return fault or self.reply_type.of(self.responder(body))
        except Exception as e:  # noqa: BLE001 - a responder bug: answer an error, remember it
            with self._lock:
                self._responder_errors.append(e)
            reply = self.reply_type.error(
                self.responder_error_status,
                message=f"fake server responder raised {type(e).__name__}: {e}",
            )
            reply.headers.update(self.responder_error_headers)
            return reply

    async def _answer(self, request: web.Request, body: Any, n: int) -> web.StreamResponse:
        if not isinstance(body, dict):
            self._mark_answered()
            return self._refuse(400, "request body is not a JSON object")
        reply = self._reply_for(body, self.faults.get(n))
        delay = self.latency_s if reply.latency_s is None else reply.latency_s
        if reply.reset:
            await _wait_unless_gone(request, delay)
            _reset_connection(request)
            raise asyncio.CancelledError  # no response: aiohttp drops the (closed) connection
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            response = self._render(reply, body, n, request.path)
            for k, v in self.headers.items():
                if k not in response.headers:
                    response.headers[k] = v
            return response
        finally:
            self._mark_answered()

    def _mark_answered(self) -> None:
        with self._lock:
            self._answered += 1

    def _render(self, reply: Any, body: dict[str, Any], n: int, path: str) -> web.Response:
        if reply.raw_body is not None:
            return web.Response(status=reply.status, body=reply.raw_body, headers=reply.headers,
                                content_type="application/json")
        if reply.status != 200:
            return self._render_error(reply)
        return self._render_ok(reply, body, n, path)
