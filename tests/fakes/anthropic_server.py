"""A real, local, fake Anthropic Messages API server for tests.

The official ``anthropic`` SDK speaks real HTTP to it (through ``httpx2``; transport mocks for httpx
would not see its requests). It runs an aiohttp app on its own event loop in a background thread,
listening on 127.0.0.1 with an OS-assigned port, and records every request it receives.

    with FakeAnthropic() as srv:
        cfg = oracle_config(provider="anthropic", model="m", base_url=srv.base_url, api_key_env=...)
        ...
        assert srv.count == 20

The SDK posts to ``{base_url}/v1/messages``. The key arrives as ``x-api-key`` (older SDKs) or, from
SDK 2.x, as ``Authorization: Bearer ...``; :attr:`Received.api_key` reads either.

What it answers is decided per request by ``responder(body) -> reply``. A reply is one of

- a :class:`Reply` (status, tool input, text, stop reason, headers, raw body: fault injection),
- a ``dict``: the label object, sent as the ``input`` of a ``tool_use`` block calling the request's
  first tool,
- a ``str`` (or ``None``): a text block holding it (``None``: no content blocks at all),

and the default responder (:func:`default_label`) returns a schema-valid label: integer scores
derived from a hash of the first user message (so a record gets the same scores on every attempt
and every run) plus a short reasoning string. It takes the schema from ``tools[0].input_schema``
when the request carries a tool, else the dimension names listed in the prompt.

The knobs, the faults a reply can inject and what the server saw are those of every fake
(:mod:`tests.fakes._server`); here a truncated answer is a tool call cut off with stop reason
``max_tokens``, a malformed one a text block, and :meth:`Reply.refusal` a refusal. This module holds
the Anthropic wire format only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes._server import (
    BaseReceived,
    BaseReply,
    FakeServer,
    ratelimit_headers,  # noqa: F401 - re-exported
    scripted_label,
    title_of,
    violate,
    words,
)

MESSAGES_PATH = "/v1/messages"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class Reply(BaseReply):
    """One scripted answer. ``status`` != 200 sends an Anthropic-style error body instead.

    A 200 message's content is a ``tool_use`` block with ``tool_input`` (when not None) after a text
    block with ``text`` (when not None). ``usage`` holds input_tokens / output_tokens.
    """

    tool_input: dict[str, Any] | None = None
    text: str | None = None
    stop_reason: str = "tool_use"

    rate_limit_message = "Number of requests has exceeded your rate limit (fake)"

    # ---- constructors for the usual faults (and BaseReply's error, rate_limited,
    # connection_reset, stall)
    @classmethod
    def label(cls, obj: Mapping[str, Any], **kw: Any) -> Reply:
        return cls(tool_input=dict(obj), **kw)

    @classmethod
    def from_text(cls, text: str | None) -> Reply:
        return cls.empty(text)

    @classmethod
    def malformed(cls, text: str = '{"deployment_stage": 5, "scale": ') -> Reply:
        """A text answer (no tool call) that is not valid JSON."""
        return cls(text=text, stop_reason="end_turn")

    @classmethod
    def truncated(cls, body: Mapping[str, Any] | None = None, keep: float = 0.5) -> Reply:
        """A tool call cut off at max_tokens: ``input`` holds only the first part of the label."""
        full = (
            default_label(body) if body else {"deployment_stage": 3, "scale": 4, "reasoning": "x"}
        )
        items = list(full.items())
        return cls(
            tool_input=dict(items[: max(1, int(len(items) * keep))]), stop_reason="max_tokens"
        )

    @classmethod
    def empty(cls, text: str | None = None) -> Reply:
        """No content blocks (``text=None``), or one text block holding ``text``."""
        return cls(text=text, stop_reason="end_turn")

    @classmethod
    def refusal(cls) -> Reply:
        return cls(stop_reason="refusal")

    @classmethod
    def schema_violation(cls, body: Mapping[str, Any], how: str = "out_of_range") -> Reply:
        """A tool call whose input breaks the schema: a score too high, a missing or extra key."""
        return cls(tool_input=violating_label(body, how))


# --------------------------------------------------------------------------- request helpers
def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(b.get("text") or "") for b in content if isinstance(b, Mapping))
    return ""


def user_messages(body: Mapping[str, Any]) -> list[str]:
    return [_text_of(m.get("content")) for m in body.get("messages", []) if m.get("role") == "user"]


def assistant_messages(body: Mapping[str, Any]) -> list[str]:
    return [
        _text_of(m.get("content")) for m in body.get("messages", []) if m.get("role") == "assistant"
    ]


def first_user_message(body: Mapping[str, Any]) -> str:
    users = user_messages(body)
    return users[0] if users else ""


def turn(body: Mapping[str, Any]) -> int:
    """0 for a first attempt, n after n earlier answers in the conversation (re-asks)."""
    return len(assistant_messages(body))


def system_prompt(body: Mapping[str, Any]) -> str:
    return _text_of(body.get("system"))


def prompt_title(body: Mapping[str, Any]) -> str:
    """The ``Title:`` line of the first user message (how tests tell records apart)."""
    return title_of(first_user_message(body))


def tool_name(body: Mapping[str, Any]) -> str | None:
    tools = body.get("tools") or []
    return tools[0].get("name") if tools else None


def schema_of(body: Mapping[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools") or []
    schema = tools[0].get("input_schema") if tools else None
    return schema if isinstance(schema, dict) else None


def default_label(body: Mapping[str, Any] | None) -> dict[str, Any]:
    """A schema-valid label; scores are a deterministic function of the first user message."""
    body = body or {}
    return scripted_label(first_user_message(body), schema_of(body), user_messages(body))


def violating_label(body: Mapping[str, Any], how: str = "out_of_range") -> dict[str, Any]:
    return violate(default_label(body), how)


def as_reply(answer: Any) -> Reply:
    return Reply.of(answer)


# --------------------------------------------------------------------------- the server
class Received(BaseReceived):
    """One request as the server saw it."""

    @property
    def api_key(self) -> str | None:
        """The key as sent: ``x-api-key``, else the token of ``Authorization: Bearer``."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        auth = self.headers.get("authorization", "")
        return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None

    @property
    def retry_count(self) -> str | None:
        return self.headers.get("x-stainless-retry-count")


class FakeAnthropic(FakeServer):
    """``base_url`` is what ``oracle.base_url`` should be: the SDK adds ``/v1/messages`` itself."""

    provider = "Anthropic"
    reply_type = Reply
    received_type = Received
    default_responder = staticmethod(default_label)

    @property
    def api_keys(self) -> list[str | None]:
        return [r.api_key for r in self.received]

    def _is_endpoint(self, request: web.Request) -> bool:
        return request.method == "POST" and request.path.rstrip("/") == MESSAGES_PATH

    def _refuse(self, status: int, message: str,
                headers: Mapping[str, str] | None = None) -> web.Response:
        return _error_response(status, message, headers)

    def _render_ok(self, reply: Reply, body: dict[str, Any], n: int, path: str) -> web.Response:
        content: list[dict[str, Any]] = []
        if reply.text is not None:
            content.append({"type": "text", "text": reply.text})
        if reply.tool_input is not None:
            content.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_fake_{n:06d}",
                    "name": tool_name(body) or "tool",
                    "input": reply.tool_input,
                }
            )
        prompt_words = sum(
            words(t)
            for t in [system_prompt(body), *user_messages(body), *assistant_messages(body)]
        )
        answer_words = words(reply.text) + words(
            json.dumps(reply.tool_input) if reply.tool_input else ""
        )
        usage = {"input_tokens": prompt_words, "output_tokens": answer_words, **(reply.usage or {})}
        payload = {
            "id": f"msg_fake_{n:06d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "fake"),
            "content": content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        return web.json_response(payload, headers=reply.headers)


def _error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    payload = {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message},
    }
    return web.json_response(payload, status=status, headers=dict(headers or {}))
