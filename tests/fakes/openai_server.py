"""A real, local, fake OpenAI chat-completions server for tests.

The official ``openai`` SDK speaks real HTTP to it (the SDK uses ``httpx2``, so transport mocks would
not see its requests). It runs an aiohttp app on its own event loop in a background thread, listening
on 127.0.0.1 with an OS-assigned port, and records every request it receives.

    with FakeOpenAI(latency_s=0.05) as srv:
        cfg = oracle_config(provider="openai", model="fake", base_url=srv.base_url, api_key_env=...)
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

Responders can tell requests apart with :func:`prompt_title` (the record), :func:`turn` (0 for a
first attempt, 1 after one re-ask) and :func:`first_user_message`. The knobs (``latency_s``,
``responder``, ``faults``, ``headers``: e.g. :func:`ratelimit_headers`), the faults a reply can
inject and what the server saw (``received``, ``count``, ``answered``, ``finished_at``,
``in_flight``, ...) are those of every fake (:mod:`tests.fakes._server`); here a truncated answer
has ``finish_reason="length"``, ``received[i].authorization`` and ``authorizations`` give the keys
sent, and ``other_requests`` is any request but ``POST /v1/chat/completions``. This module holds
the OpenAI wire format only.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes._server import (
    BaseReceived,
    BaseReply,
    FakeServer,
    cut,
    ratelimit_headers,  # noqa: F401 - re-exported
    scripted_label,
    title_of,
    violate,
    words,
)

CHAT_PATH = "/v1/chat/completions"


@dataclass
class Reply(BaseReply):
    """One scripted answer. ``status`` != 200 sends an OpenAI-style error body instead."""

    content: str | None = ""
    finish_reason: str = "stop"

    # ---- constructors for the usual faults (and BaseReply's error, rate_limited,
    # connection_reset, stall)
    @classmethod
    def label(cls, obj: Mapping[str, Any], **kw: Any) -> Reply:
        return cls(content=json.dumps(obj), **kw)

    @classmethod
    def from_text(cls, text: str | None) -> Reply:
        return cls(content=text)

    @classmethod
    def malformed(cls, text: str = '{"deployment_stage": 5, "scale": ') -> Reply:
        """Message content that is not valid JSON (with finish_reason "stop")."""
        return cls(content=text)

    @classmethod
    def truncated(cls, body: Mapping[str, Any] | None = None, keep: float = 0.5) -> Reply:
        """A JSON answer cut off part way, with finish_reason "length"."""
        full = json.dumps(default_label(body)) if body else '{"deployment_stage": 3, "scale": 4}'
        return cls(content=cut(full, keep), finish_reason="length")

    @classmethod
    def empty(cls, content: str | None = "") -> Reply:
        return cls(content=content)

    @classmethod
    def schema_violation(cls, body: Mapping[str, Any], how: str = "out_of_range") -> Reply:
        """Valid JSON that breaks the schema: a score above the maximum, or a missing key."""
        return cls(content=json.dumps(violate(default_label(body), how)))


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
    return title_of(first_user_message(body))


def _schema_of(body: Mapping[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            return schema
    return None


def default_label(body: Mapping[str, Any] | None) -> dict[str, Any]:
    """A schema-valid label; scores are a deterministic function of the first user message."""
    body = body or {}
    return scripted_label(first_user_message(body), _schema_of(body), user_messages(body))


def as_reply(answer: Any) -> Reply:
    return Reply.of(answer)


# --------------------------------------------------------------------------- the server
class Received(BaseReceived):
    """One request as the server saw it."""

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


class FakeOpenAI(FakeServer):
    provider = "OpenAI"
    url_prefix = "/v1"
    reply_type = Reply
    received_type = Received
    default_responder = staticmethod(default_label)

    @property
    def authorizations(self) -> list[str | None]:
        return [r.authorization for r in self.received]

    def _is_endpoint(self, request: web.Request) -> bool:
        return request.method == "POST" and request.path.rstrip("/") == CHAT_PATH

    def _refuse(self, status: int, message: str,
                headers: Mapping[str, str] | None = None) -> web.Response:
        return _error_response(status, message, "invalid_request_error", headers)

    def _render_error(self, reply: Reply) -> web.Response:
        kind = "rate_limit_error" if reply.status == 429 else "server_error"
        return _error_response(reply.status, reply.error_message, kind, reply.headers)

    def _render_ok(self, reply: Reply, body: dict[str, Any], n: int, path: str) -> web.Response:
        prompt_words = sum(words(m.get("content")) for m in body.get("messages", []))
        usage = reply.usage or {"prompt_tokens": prompt_words, "completion_tokens": words(reply.content)}
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
