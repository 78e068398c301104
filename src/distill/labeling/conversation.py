"""One record's conversation with the oracle: ask, validate, re-ask with the error, up to a limit.

The engine, the batch runner and the estimate all walk the same conversation (the engine through the
provider, the other two through the response cache), so it lives here once. A conversation starts
from the rendered prompt; :meth:`Conversation.messages` is what to send next (``None`` once it is
over); :meth:`Conversation.answer` takes the answer, validates it, and either finishes (valid, or
invalid after the last attempt) or appends the answer and the validator's feedback for the re-ask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distill.providers.base import ChatResponse
from distill.validate import Invalid, check

#: validate(text, finish_reason) -> the parsed answer, or Invalid with the reason and the feedback
Validator = Callable[[str | None, str | None], "dict[str, Any] | Invalid"]


def schema_validator(schema: dict[str, Any]) -> Validator:
    """The default validator: parse the JSON and check it against ``schema``."""
    return lambda text, finish_reason: check(text, schema, finish_reason)


@dataclass
class Conversation:
    prompt: list[dict[str, str]]
    validate: Validator
    max_attempts: int
    #: the JSON schema the answers are asked for (None: the task's own)
    schema: dict[str, Any] | None = None
    #: the messages of the next request (grows by an answer and a feedback message per re-ask)
    current: list[dict[str, str]] = field(init=False)
    #: every answer that was not accepted: attempt, reason, detail, finish_reason, text, cached
    attempts: list[dict[str, Any]] = field(default_factory=list)
    #: the accepted answer, parsed; None until (unless) one validates
    result: Any = None
    done: bool = False
    answers: int = 0

    def __post_init__(self) -> None:
        self.current = list(self.prompt)

    @property
    def valid(self) -> bool:
        return self.result is not None

    def messages(self) -> list[dict[str, str]] | None:
        return None if self.done else self.current

    def answer(self, response: ChatResponse, cached: bool = False) -> Any:
        """Take the answer to :meth:`messages`; returns the parsed answer or the :class:`Invalid`."""
        self.answers += 1
        outcome = self.validate(response.text, response.finish_reason)
        if not isinstance(outcome, Invalid):
            self.result, self.done = outcome, True
            return outcome
        self.attempts.append({
            "attempt": self.answers, "reason": outcome.reason, "detail": outcome.detail,
            "finish_reason": response.finish_reason, "text": response.text, "cached": cached,
        })
        if self.answers >= self.max_attempts:
            self.done = True
        else:
            self.current = [
                *self.current,
                {"role": "assistant", "content": response.text or ""},
                {"role": "user", "content": outcome.feedback},
            ]
        return outcome

    @property
    def reason(self) -> str | None:
        """Why the record failed (the last attempt's reason), None while valid or unanswered."""
        return self.attempts[-1]["reason"] if self.attempts and not self.valid else None
