"""The embedded oracle's speed on the demo corpus: the runtime's raw rates and records/s, before and after.

Measures, on the demo records that pass the prefilter (their real prompts, as the label stage renders
them), with the installed llama-cpp-python build:

- prompt reading (prefill) and plain generation, tokens/s;
- schema-constrained generation with llama-cpp-python's own grammar sampler, tokens/s;
- records/s labelling the same records three ways: llama-cpp-python's ``create_chat_completion``
  with ``response_format`` (what the local provider did before: the baseline), the same with the
  grammar built once instead of per request, and distill's local provider (worker process,
  llguidance decoding with forced-token batching and KV prefix reuse), with the share of answers
  that validate on the first attempt.

Run: ``.venv/bin/python benchmarks/local_oracle.py [--records 16] [--threads 2] [--write]``;
``--write`` replaces the section between the markers in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import time
from pathlib import Path

from _results import write_section

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
START, END = "<!-- local-oracle:start -->", "<!-- local-oracle:end -->"


def demo_prompts(n: int):
    from distill.compress import compress
    from distill.config import PrefilterConfig
    from distill.filterspec import load_filter
    from distill.prefilter import PASS, apply_rules, records_frame
    from distill.sources import read_corpus

    spec = load_filter(ROOT / "filters" / "sustainability_tech_deployment" / "v1")
    corpus = read_corpus(PrefilterConfig(input=str(ROOT / "data" / "raw" / "demo_corpus.jsonl"),
                                         metadata=["source", "published"]))
    decisions = apply_rules(records_frame(corpus.records), spec.prefilter).to_list()
    passed = [r for r, d in zip(corpus.records, decisions) if d == PASS][:n]
    return spec, [spec.render({**r, "text": compress(r["text"], 800)}) for r in passed]


def llama(threads: int):
    from llama_cpp import Llama

    from distill.providers.local import packaged_gguf

    return Llama(model_path=str(packaged_gguf()), n_ctx=2048, n_threads=threads, seed=0, verbose=False)


def raw_rates(llm, spec, prompts) -> dict[str, float]:
    from llama_cpp import LlamaGrammar

    from distill.providers._llama_worker import _chat_formatter

    fmt = _chat_formatter(llm)
    result = fmt(messages=prompts[0])
    tokens = llm.tokenize(result.prompt.encode(), add_bos=not result.added_special, special=True)
    llm.reset()
    t = time.perf_counter()
    llm.eval(tokens)
    prefill = len(tokens) / (time.perf_counter() - t)
    out = {"prompt_tokens": len(tokens), "prefill_tok_s": prefill}
    grammar = LlamaGrammar.from_json_schema(json.dumps(spec.json_schema), verbose=False)
    for name, kw in (("plain_tok_s", {}), ("grammar_tok_s", {"grammar": grammar})):
        llm.create_completion(prompt=tokens, max_tokens=1, temperature=0.0)  # the prompt is in the KV cache
        t = time.perf_counter()
        done = llm.create_completion(prompt=tokens, max_tokens=96, temperature=0.0, **kw)
        out[name] = done["usage"]["completion_tokens"] / (time.perf_counter() - t)
    return out


def baseline_records(llm, spec, prompts, grammar_once: bool) -> dict[str, float]:
    """What the local provider did before: create_chat_completion with response_format (a grammar
    compiled from the schema on every request), or with one grammar passed in."""
    from llama_cpp import LlamaGrammar

    from distill.validate import Invalid, check

    llm.reset()
    grammar = LlamaGrammar.from_json_schema(json.dumps(spec.json_schema), verbose=False) if grammar_once else None
    valid = out_tokens = 0
    t = time.perf_counter()
    for messages in prompts:
        kw = {"grammar": grammar} if grammar_once else {
            "response_format": {"type": "json_object", "schema": spec.json_schema}}
        r = llm.create_chat_completion(messages=messages, temperature=0.0, max_tokens=256, seed=0, **kw)
        choice = r["choices"][0]
        out_tokens += r["usage"]["completion_tokens"]
        valid += not isinstance(check(choice["message"]["content"], spec.json_schema, choice["finish_reason"]), Invalid)
    wall = time.perf_counter() - t
    return {"records_s": len(prompts) / wall, "valid": valid, "out_tokens": out_tokens / len(prompts), "wall_s": wall}


def distill_records(spec, prompts, threads: int) -> dict[str, float]:
    from distill.providers import ChatRequest, make_provider, oracle_config
    from distill.validate import Invalid, check

    provider = make_provider(oracle_config(provider="local", model="SmolLM2-135M-Instruct", n_threads=threads))

    async def go():
        valid = out_tokens = 0
        await provider.complete(ChatRequest(messages=[{"role": "user", "content": "hi"}], schema={"type": "string"},
                                            max_tokens=2))  # start the worker, load the model: not timed
        t = time.perf_counter()
        for messages in prompts:
            r = await provider.complete(ChatRequest(messages=messages, schema=spec.json_schema, max_tokens=256))
            out_tokens += r.output_tokens
            valid += not isinstance(check(r.text, spec.json_schema, r.finish_reason), Invalid)
        wall = time.perf_counter() - t
        await provider.aclose()
        return {"records_s": len(prompts) / wall, "valid": valid, "out_tokens": out_tokens / len(prompts),
                "wall_s": wall}

    return asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = ap.parse_args()

    import llama_cpp

    spec, prompts = demo_prompts(args.records)
    llm = llama(args.threads)
    features = re.findall(r"(\w+) = 1", llama_cpp.llama_print_system_info().decode())
    raw = raw_rates(llm, spec, prompts)
    before = baseline_records(llm, spec, prompts, grammar_once=False)
    once = baseline_records(llm, spec, prompts, grammar_once=True)
    del llm
    after = distill_records(spec, prompts, args.threads)
    load = os.getloadavg()[0]

    lines = [
        START,
        "## Embedded oracle (llama.cpp) on the demo corpus",
        "",
        (f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
         f"load average {load:.2f} when the run ended; llama-cpp-python {llama_cpp.__version__} built with "
         f"{' '.join(features)}; {args.threads} threads"),
        (f"- Date: {time.strftime('%Y-%m-%d')}; command: `.venv/bin/python benchmarks/local_oracle.py "
         f"--records {args.records} --threads {args.threads}`"),
        (f"- Data: the first {len(prompts)} demo records that pass the prefilter, rendered as the label stage "
         f"renders them (about {raw['prompt_tokens']} prompt tokens each, of which the system prompt and rubric "
         "are shared)"),
        "",
        "| runtime rate | tokens/s |",
        "|---|---:|",
        f"| prompt reading (prefill, {raw['prompt_tokens']} tokens) | {raw['prefill_tok_s']:.0f} |",
        f"| plain generation | {raw['plain_tok_s']:.1f} |",
        f"| generation under llama-cpp-python's JSON-schema grammar | {raw['grammar_tok_s']:.1f} |",
        "",
        "| labelling a record (greedy, max 256 tokens) | records/s | valid first time | output tokens | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in (("llama-cpp-python `create_chat_completion` + `response_format` (before)", before),
                    ("the same, grammar compiled once", once),
                    ("distill's local provider: worker, llguidance, forced tokens batched (after)", after)):
        lines.append(f"| {name} | {r['records_s']:.2f} | {r['valid']}/{len(prompts)} | {r['out_tokens']:.0f} | "
                     f"{r['records_s'] / before['records_s']:.2f}x |")
    lines += ["", END]
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(START, END, table, RESULTS)


if __name__ == "__main__":
    main()
