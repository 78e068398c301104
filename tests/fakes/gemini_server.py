"""A real, local, fake Gemini ``generateContent`` server for tests.

Google's ``google-genai`` SDK speaks real HTTP to it (its async client uses aiohttp, its sync client
``httpx2``; transport mocks would see neither). It runs an aiohttp app on its own event loop in a
background thread, listening on 127.0.0.1 with an OS-assigned port, and records every request.

    with FakeGemini() as srv:
        cfg = oracle_config(provider="gemini", model="fake", base_url=srv.base_url, api_key_env=...)
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

The knobs, the faults a reply can inject and what the server saw are those of every fake
(:mod:`tests.fakes._server`); here a truncated answer has finish reason ``MAX_TOKENS``, and
:meth:`Reply.blocked` blocks the prompt. This module holds the Gemini wire format only.
"""

from __future__ import annotations

import hashlib
import json
import re
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

GENERATE_PATH = re.compile(r"^/(?P<version>v1[a-z0-9]*)/models/(?P<model>[^/:]+):generateContent$")

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
class Reply(BaseReply):
    """One scripted answer. ``status`` != 200 sends a Google-style error body instead.

    ``usage`` holds usageMetadata counts (promptTokenCount, candidatesTokenCount,
    thoughtsTokenCount). :meth:`error`'s ``retry_after`` sets Retry-After (the SDK ignores it; the
    engine reads it).
    """

    text: str | None = ""
    finish_reason: str = "STOP"
    #: a thought part sent before the answer (what a thinking model returns with includeThoughts)
    thought: str | None = None
    #: the prompt was blocked: no candidates, promptFeedback.blockReason set to this
    block_reason: str | None = None

    rate_limit_message = "Resource has been exhausted (fake)"

    # ---- constructors for the usual faults (and BaseReply's error, rate_limited,
    # connection_reset, stall)
    @classmethod
    def label(cls, obj: Mapping[str, Any], **kw: Any) -> Reply:
        return cls(text=json.dumps(obj), **kw)

    @classmethod
    def from_text(cls, text: str | None) -> Reply:
        return cls(text=text)

    @classmethod
    def malformed(cls, text: str = '{"deployment_stage": 5, "scale": ') -> Reply:
        """Text that is not valid JSON (with finish reason STOP)."""
        return cls(text=text)

    @classmethod
    def truncated(cls, body: Mapping[str, Any] | None = None, keep: float = 0.5) -> Reply:
        """A JSON answer cut off part way, with finish reason MAX_TOKENS."""
        full = json.dumps(default_label(body)) if body else '{"deployment_stage": 3, "scale": 4}'
        return cls(text=cut(full, keep), finish_reason="MAX_TOKENS")

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
    return title_of(first_user_message(body))


def schema_of(body: Mapping[str, Any]) -> dict[str, Any] | None:
    config = generation_config(body)
    for key in ("responseJsonSchema", "responseSchema"):
        schema = _get(config, key)
        if isinstance(schema, dict):
            return schema
    return None


def default_label(body: Mapping[str, Any] | None) -> dict[str, Any]:
    """A schema-valid label; scores are a deterministic function of the first user turn."""
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


class FakeGemini(FakeServer):
    """``base_url`` is what ``oracle.base_url`` should be: the SDK adds
    ``/{api_version}/models/...`` itself."""

    provider = "Gemini"
    reply_type = Reply
    received_type = Received
    default_responder = staticmethod(default_label)
    #: a responder bug is answered 400 (not retried)
    responder_error_status = 400
    responder_error_headers: Mapping[str, str] = {}

    @property
    def api_keys(self) -> list[str | None]:
        return [r.api_key for r in self.received]

    def _is_endpoint(self, request: web.Request) -> bool:
        return request.method == "POST" and GENERATE_PATH.match(request.path) is not None

    def _refuse(self, status: int, message: str,
                headers: Mapping[str, str] | None = None) -> web.Response:
        return _error_response(status, message, headers)

    def _render_ok(self, reply: Reply, body: dict[str, Any], n: int, path: str) -> web.Response:
        prompt_words = sum(
            words(t)
            for t in [system_instruction(body), *user_messages(body), *model_messages(body)]
        )
        usage = {
            "promptTokenCount": prompt_words,
            "candidatesTokenCount": words(reply.text),
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
