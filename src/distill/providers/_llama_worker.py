"""The embedded oracle's worker process: llama.cpp (through llama-cpp-python) behind a pipe.

Started by :class:`distill.providers.local.LocalProvider` as ``python -m
distill.providers._llama_worker``; it never runs in the caller's process, so a crash in native code
kills this worker only and the caller reports it. One JSON object per line each way: the caller
writes a request on our stdin, we answer on the stdout we were started with (the C library's own
writes to stdout are sent to stderr, so they cannot corrupt the protocol).

Requests:

- ``{"op": "load", "model_path", "n_ctx", "n_threads", "n_batch", "seed", "vocab_only"}``
- ``{"op": "chat", "messages", "schema", "temperature", "max_tokens", "seed"}``: a schema-constrained
  chat completion (``text``, ``input_tokens``, ``output_tokens``, ``finish_reason``)
- ``{"op": "count", "messages"}``: prompt tokens of a conversation, as ``chat`` would count them

Every answer is ``{"ok": true, ...}`` or ``{"ok": false, "error": ..., "kind": ...}`` (``kind``:
``too_long`` when the prompt does not fit ``n_ctx``, ``error`` otherwise).

Decoding is constrained by llguidance (a JSON-schema grammar with bounded integers, string lengths
and enums enforced) rather than llama-cpp-python's own grammar sampler, for speed: measured on the
demo on 2 cores, 0.36 records/s with llama-cpp-python's sampler and 0.49 with this loop
(``benchmarks/RESULTS.md``). Three things make the difference:

- tokens the grammar forces (the JSON keys and punctuation, about half of a rubric answer) are
  evaluated in one batch, at prompt-reading speed, instead of one decode step each;
- the mask is checked for the model's top token first and applied to the whole vocabulary only
  when that token is not allowed;
- consecutive prompts that share a prefix (system prompt, rubric) reuse its KV cache.

Greedy at temperature 0; at a higher temperature, a seeded draw from the masked softmax.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

#: how llguidance lays out JSON: no free whitespace, the separators models usually write
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _protocol_stdout():
    """Keep the real stdout for answers; point fd 1 at stderr for everything else."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


class Worker:
    def __init__(self) -> None:
        self.llm = None
        self.formatter = None
        self.grammars: dict[str, str] = {}
        self.tokenizer = None  # llguidance's view of the vocabulary, built on first use (~0.3 s)
        self.eog: set[int] = set()

    # ------------------------------------------------------------------ load
    def load(self, req: dict[str, Any]) -> dict[str, Any]:
        import llama_cpp
        from llama_cpp import Llama

        t0 = time.perf_counter()
        self.llm = Llama(
            model_path=req["model_path"],
            n_ctx=req.get("n_ctx", 2048),
            n_threads=req.get("n_threads") or None,
            n_batch=req.get("n_batch", 512),
            seed=req.get("seed", 0),
            vocab_only=bool(req.get("vocab_only")),
            verbose=False,
        )
        self.formatter = _chat_formatter(self.llm)
        return {"version": llama_cpp.__version__, "load_s": round(time.perf_counter() - t0, 3),
                "n_ctx": self.llm.n_ctx(), "chat_template": self.formatter is not None}

    # ------------------------------------------------------------------ count
    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        if self.formatter is not None:
            result = self.formatter(messages=messages)
            text, add_bos = result.prompt, not result.added_special
        else:
            text = "".join(f"{m['role']}\n{m['content']}\n" for m in messages)
            add_bos = True
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def count(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"tokens": len(self.prompt_tokens(req["messages"]))}

    # ------------------------------------------------------------------ chat
    def matcher(self, schema: dict[str, Any]):
        import llguidance

        if self.tokenizer is None:
            self.eog, self.tokenizer = guidance_vocab(self.llm)
        key = json.dumps(schema, sort_keys=True)
        if key not in self.grammars:
            self.grammars[key] = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_LAYOUT)
        matcher = llguidance.LLMatcher(self.tokenizer, self.grammars[key], log_level=0)
        if matcher.is_error():
            raise ValueError(f"the JSON schema cannot be turned into a grammar: {matcher.get_error()}")
        return matcher

    def prefill(self, prompt: list[int]) -> None:
        """Evaluate ``prompt``, reusing the KV cache of the longest prefix it shares with what was
        evaluated before (at least the last token is evaluated, so its logits are fresh)."""
        llm = self.llm
        done = llm._input_ids
        n, limit = 0, min(len(done), len(prompt) - 1)
        while n < limit and done[n] == prompt[n]:
            n += 1
        llm.n_tokens = n
        llm.eval(prompt[n:])  # eval drops the KV cache past n_tokens first

    def chat(self, req: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        llm = self.llm
        prompt = self.prompt_tokens(req["messages"])
        room = llm.n_ctx() - len(prompt)
        if room < 16:
            return {"ok": False, "kind": "too_long",
                    "error": f"the prompt is {len(prompt)} tokens; the model's context (oracle.n_ctx) is "
                             f"{llm.n_ctx()}: raise oracle.n_ctx or lower label.max_words"}
        max_tokens = min(int(req.get("max_tokens", 256)), room)
        temperature = float(req.get("temperature") or 0.0)
        rng = np.random.default_rng(req.get("seed") or 0) if temperature > 0 else None
        matcher = self.matcher(req["schema"])
        self.prefill(prompt)
        n_vocab = llm.n_vocab()
        out: list[int] = []
        finish = "length"
        while len(out) < max_tokens:
            forced = matcher.compute_ff_tokens()
            if forced:  # what the grammar allows one way only: evaluated as one batch
                forced = forced[: max_tokens - len(out)]
                if not matcher.consume_tokens(forced):
                    raise RuntimeError(f"grammar: {matcher.get_error()}")
                out += forced
                llm.eval(forced)
                continue
            logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
            token = pick_token(logits, matcher, n_vocab, temperature, rng)
            if token in self.eog:
                finish = "stop"
                break
            if not matcher.consume_token(token):
                raise RuntimeError(f"grammar: {matcher.get_error()}")
            out.append(token)
            if matcher.is_stopped():
                finish = "stop"
                break
            llm.eval([token])
        text = llm.detokenize(out).decode("utf-8", errors="replace")
        return {"text": text, "input_tokens": len(prompt), "output_tokens": len(out), "finish_reason": finish}


def guidance_vocab(llm) -> tuple[set[int], Any]:
    """The end-of-generation token ids of the model loaded in ``llm``, and llguidance's view of its
    vocabulary (about 0.3 s for SmolLM2's 49,152 tokens)."""
    import llama_cpp
    from llguidance.llamacpp import lltokenizer_from_vocab

    vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
    eog = {t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)}
    return eog, lltokenizer_from_vocab(vocab, eos_token=sorted(eog))


def pick_token(logits, matcher, n_vocab: int, temperature: float = 0.0, rng=None) -> int:
    """The next token: the best allowed one (greedy), or a draw from the allowed ones' softmax."""
    import numpy as np

    mask = matcher.compute_bitmask()  # one bit a token, little-endian
    if rng is None:
        best = int(np.argmax(logits))
        if (mask[best >> 3] >> (best & 7)) & 1:
            return best
    allowed = np.unpackbits(np.frombuffer(mask, dtype=np.uint8), bitorder="little")[:n_vocab].astype(bool)
    masked = np.where(allowed, logits, -np.inf)
    if rng is None:
        return int(np.argmax(masked))
    z = (masked - masked.max()) / temperature
    p = np.exp(z)
    return int(rng.choice(n_vocab, p=p / p.sum()))


def _chat_formatter(llm):
    """The GGUF's own chat template, as llama-cpp-python's chat completion uses it."""
    from llama_cpp import llama_chat_format

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        return None
    eos_id, bos_id = llm.token_eos(), llm.token_bos()

    def text(token_id: int) -> str:
        if token_id == -1:
            return ""
        return llm._model.token_get_text(token_id)

    return llama_chat_format.Jinja2ChatFormatter(
        template=template, eos_token=text(eos_id), bos_token=text(bos_id), stop_token_ids=[eos_id])


def main() -> None:
    out = _protocol_stdout()
    worker = Worker()
    ops = {"load": worker.load, "chat": worker.chat, "count": worker.count}
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            op = ops[req["op"]]
            if req["op"] != "load" and worker.llm is None:
                raise RuntimeError("no model loaded")
            answer = op(req)
            answer = answer if "ok" in answer else {"ok": True, **answer}
        except Exception as e:  # noqa: BLE001 - reported to the caller, the worker stays up
            answer = {"ok": False, "kind": "error", "error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(answer, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
