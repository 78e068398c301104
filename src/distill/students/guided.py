"""Schema-constrained decoding for the generative student (``student.constrained``, on by default).

The student writes its answer under its JSON schema the way the embedded oracle does: at every step
llguidance (the schema compiled to a grammar, with bounded integers, enums and string lengths) says which
tokens can continue a valid answer, and every other token's logit is set to -inf before the greedy pick
or the draw. The answer is therefore always parseable and within the schema's bounds when it ends; what
it says is still the student's. It is a decoding rule, not a repair: nothing is changed after the fact,
and an answer cut by ``max_new_tokens`` is still invalid (``truncated``). Deployed students decode the
same way with any engine that takes a JSON schema (llama.cpp's llguidance or grammar support, Ollama's
``format``, vLLM's ``guided_json``); ``student.constrained=false`` measures what the weights alone
produce.

The answer is laid out as the training answers were (:func:`layout_of`, saved in the student's manifest):
exactly, when they all share one single-line layout; else with the student's own whitespace in runs of
at most 24 characters.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

#: llguidance's JSON options when the training answers share no single-line layout (indented, mixed):
#: the whitespace between tokens is the student's, at most 24 characters a run, so an undertrained
#: student cannot write whitespace until max_new_tokens
FLEXIBLE_LAYOUT = {"whitespace_flexible": True, "whitespace_pattern": r"[ \t\n\r]{0,24}"}
#: the single-line layouts a training set can share: (item separator, key separator)
_SEPARATORS = ((", ", ": "), (",", ":"))

_TOKENIZERS: dict[tuple[int, int], Any] = {}


def layout_of(answers: list[str]) -> dict[str, Any]:
    """The layout the student learns from its training ``answers`` (the oracle's JSON texts): the one
    single-line layout they all share (``{"a": 1, "b": 2}`` or ``{"a":1,"b":2}``), written exactly;
    else :data:`FLEXIBLE_LAYOUT`. Saved with the student, so it decodes the way it was taught."""
    for items, keys in _SEPARATORS:
        if answers and all(_written_as(a, items, keys) for a in answers):
            return {"whitespace_flexible": False, "item_separator": items, "key_separator": keys}
    return dict(FLEXIBLE_LAYOUT)


def _written_as(text: str, items: str, keys: str) -> bool:
    try:
        obj = json.loads(text)
    except ValueError:
        return False
    text = text.strip()
    return any(json.dumps(obj, separators=(items, keys), ensure_ascii=ascii) == text for ascii in (False, True))


@lru_cache(maxsize=64)
def _grammar(schema_json: str, layout_json: str) -> str:
    import llguidance

    return llguidance.LLMatcher.grammar_from_json_schema(json.loads(schema_json), defaults=json.loads(layout_json))


def grammar(schema: dict[str, Any], layout: dict[str, Any] | None = None) -> str:
    """llguidance's grammar for ``schema`` written in ``layout`` (default :data:`FLEXIBLE_LAYOUT`), cached by
    their JSON (keys in their order: the grammar writes the properties in the order the schema lists
    them, the order the oracle's answers had)."""
    return _grammar(json.dumps(schema), json.dumps(layout or FLEXIBLE_LAYOUT, sort_keys=True))


def _lltokenizer(tokenizer, n_vocab: int):
    """llguidance's view of a Hugging Face fast tokenizer, once per tokenizer and vocabulary size.

    A byte-level BPE vocabulary (``Ġ`` for a space) is given a plain ``ByteLevel`` decoder first: the
    tokenizer converted from the packaged GGUF decodes through a sequence (byte fallback, ``▁``, byte
    level) in which llguidance would read ``Ġ`` as the two characters ``Ä`` and ``ł``, and no answer
    could contain a space."""
    import llguidance
    from tokenizers import Tokenizer, decoders

    key = (id(tokenizer), n_vocab)
    if key not in _TOKENIZERS:
        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())  # a copy: the student's stays as it is
        backend.no_padding()
        backend.no_truncation()
        if "ByteLevel" in repr(backend.pre_tokenizer):
            backend.decoder = decoders.ByteLevel()
        lltok = llguidance.LLTokenizer(backend.to_str(), n_vocab=n_vocab, eos_token=tokenizer.eos_token_id)
        _TOKENIZERS[key] = (tokenizer, lltok)
    return _TOKENIZERS[key][1]


def schema_processor(tokenizer, schemas: list[dict[str, Any] | None], prompt_length: int,
                     layout: dict[str, Any] | None = None):
    """A transformers ``LogitsProcessor`` for one left-padded batch: row i decodes under ``schemas[i]``
    (None: unconstrained) in ``layout``; ``prompt_length`` is the padded prompt's length, where the
    answers begin."""
    import numpy as np
    import torch
    from transformers import LogitsProcessor

    class SchemaLogits(LogitsProcessor):
        def __init__(self) -> None:
            self.matchers: list[Any] | None = None
            self.done = [False] * len(schemas)

        def _start(self, n_vocab: int) -> None:
            import llguidance

            lltok = _lltokenizer(tokenizer, max(n_vocab, len(tokenizer)))
            self.matchers = []
            for schema in schemas:
                if schema is None:
                    self.matchers.append(None)
                    continue
                matcher = llguidance.LLMatcher(lltok, grammar(schema, layout), log_level=0)
                if matcher.is_error():
                    raise ValueError(f"the answer schema cannot be turned into a grammar: {matcher.get_error()}")
                self.matchers.append(matcher)

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            n_vocab = scores.shape[-1]
            if self.matchers is None:
                self._start(n_vocab)
            eos = tokenizer.eos_token_id
            generated = input_ids.shape[1] - prompt_length
            for i, matcher in enumerate(self.matchers):
                if matcher is None:
                    continue
                if generated > 0 and not self.done[i]:
                    last = int(input_ids[i, -1])
                    if last == eos or not matcher.consume_token(last):
                        self.done[i] = True
                if self.done[i] or matcher.is_stopped():
                    allowed = np.zeros(n_vocab, dtype=bool)  # the answer is complete: only the end
                    allowed[eos] = True
                else:
                    bits = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
                    allowed = np.unpackbits(bits, bitorder="little")[:n_vocab].astype(bool)
                    if allowed.size < n_vocab:
                        allowed = np.concatenate([allowed, np.zeros(n_vocab - allowed.size, dtype=bool)])
                scores[i, torch.from_numpy(~allowed)] = float("-inf")
            return scores

    return SchemaLogits()
