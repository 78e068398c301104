"""Training examples for a generative student, with the base model's own chat template.

Each split row becomes token ids and labels: the prompt (system + user, exactly what the oracle read)
rendered with ``add_generation_prompt=True`` and tokenised on its own (exactly what the model reads when
it predicts), then the rest of the rendered conversation (the answer and the turn's end) tokenised on its
own. Labels are -100 on every prompt token, so the loss is on the assistant turn only, and stop after the
end-of-sequence token the template writes (what follows it is never generated). This works with any
template: trl's ``assistant_only_loss`` needs ``{% generation %}`` markers most templates lack, and
without them it would train on the prompt too.

What is checked before any training, each failure naming what to change:

- the base has a chat template, which renders the prompt alone as a prefix of the whole conversation
  and the answer byte for byte (a template that rewrites the answer would teach something else);
- the assistant turn ends with the tokenizer's end-of-sequence token, so generation learns to stop;
- every example fits ``max_length``: an example is never silently truncated (cutting the answer
  teaches unfinished JSON); it fails naming the longest example and the setting to raise, or, with
  ``on_too_long: drop``, is left out and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from distill.errors import ConfigError
from distill.students import prompt_messages

IGNORE = -100


class TemplateError(ConfigError):
    """The base's chat template cannot give a verified completion-only loss."""


def answer_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    return [m for m in row["messages"] if m["role"] == "assistant"]


def render_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """The text a generative student reads: the prompt through the chat template, ready for the answer."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@dataclass
class Encoded:
    id: str
    input_ids: list[int]
    labels: list[int]
    prompt_tokens: int
    answer_tokens: int  # labelled tokens: the answer and the end-of-sequence token


def encode(tokenizer, row: dict[str, Any]) -> Encoded:
    """Token ids and labels of one split row (see the module docstring)."""
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError("the student's base has no chat template: name a chat model as student.base_model, or "
                            "add a chat_template to its tokenizer_config.json")
    prompt, answer = prompt_messages(row), answer_messages(row)
    if len(answer) != 1:
        raise ConfigError(f"{row.get('id')}: a training row needs exactly one assistant message, got {len(answer)}")
    prompt_text = render_prompt(tokenizer, prompt)
    full_text = tokenizer.apply_chat_template([*prompt, *answer], tokenize=False)
    if not full_text.startswith(prompt_text):
        raise TemplateError(
            "the chat template renders the prompt differently with and without the answer (so training would not "
            "see what the model reads when it predicts): compare\n"
            f"  prompt alone: ...{prompt_text[-120:]!r}\n"
            f"  with answer:  ...{full_text[len(prompt_text) - 120:][:200]!r}"
            "\nuse a base whose template renders the generation prompt as the start of the assistant turn")
    rest = full_text[len(prompt_text):]
    content = answer[0]["content"]
    if not rest.startswith(content):
        raise TemplateError(f"the chat template does not write the answer verbatim after the generation prompt "
                            f"(it writes {rest[:80]!r}, the answer is {content[:80]!r}): a template that rewrites "
                            "the assistant's text would teach the student something else")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    rest_ids = tokenizer(rest, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is None or eos not in rest_ids:
        raise TemplateError(
            f"the chat template ends the assistant turn with {rest[len(content):]!r}, which does not contain the "
            f"tokenizer's end-of-sequence token {tokenizer.eos_token!r}: the student would never learn to stop. Set "
            "eos_token in the base's tokenizer_config.json to the token that ends a turn")
    stop = rest_ids.index(eos) + 1
    labels = [IGNORE] * len(prompt_ids) + rest_ids[:stop] + [IGNORE] * (len(rest_ids) - stop)
    return Encoded(row.get("id", ""), prompt_ids + rest_ids, labels, len(prompt_ids), stop)


@dataclass
class Prepared:
    examples: list[Encoded]
    dropped: list[str] = field(default_factory=list)
    longest: int = 0
    longest_answer: int = 0

    def stats(self) -> dict[str, Any]:
        return {"examples": len(self.examples), "dropped_too_long": len(self.dropped),
                "longest_tokens": self.longest, "longest_answer_tokens": self.longest_answer}


def prepare(tokenizer, rows: list[dict[str, Any]], max_length: int | None, on_too_long: str = "fail",
            what: str = "train") -> Prepared:
    """Encode ``rows``; check each against ``max_length`` (None: no limit) as the module says."""
    encoded = [encode(tokenizer, r) for r in rows]
    out = Prepared(examples=encoded)
    if encoded:
        out.longest = max(len(e.input_ids) for e in encoded)
        out.longest_answer = max(e.answer_tokens for e in encoded)
    if max_length is None:
        return out
    long = [e for e in encoded if len(e.input_ids) > max_length]
    if not long:
        return out
    worst = max(long, key=lambda e: len(e.input_ids))
    if on_too_long == "drop":
        out.examples = [e for e in encoded if len(e.input_ids) <= max_length]
        out.dropped = [e.id for e in long]
        if not out.examples:
            raise ConfigError(f"every {what} example is longer than student.max_length={max_length} tokens (the "
                              f"longest, {worst.id}, is {len(worst.input_ids)}): raise student.max_length")
        return out
    raise ConfigError(
        f"{len(long)} {what} example(s) are longer than student.max_length={max_length} tokens; the longest, "
        f"{worst.id}, is {len(worst.input_ids)} tokens ({worst.prompt_tokens} prompt + {worst.answer_tokens} answer). "
        f"Examples are never truncated (a cut answer teaches unfinished JSON): raise student.max_length to at least "
        f"{len(worst.input_ids)} (null fits the longest), or set student.on_too_long=drop to leave them out")


def new_token_budget(longest_answer: int) -> int:
    """``max_new_tokens`` when the config leaves it null: the longest training answer (with its end token)
    and a tenth more (at least 8 tokens). An answer much longer than any the oracle wrote is a runaway,
    and every token of it holds up its whole batch."""
    return longest_answer + max(8, math.ceil(longest_answer / 10))
