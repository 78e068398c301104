"""Ask the oracle to repair an answer from a reviewer's instruction: one more turn of the record's
conversation, through the labeling engine.

The conversation is the record's prompt (exactly as the label stage sent it), the oracle's answer, and
a user turn carrying the instruction. :func:`distill.labeling.build.build_labeler` wires the oracle from
``params.yaml`` as the label stage does (same generation parameters, re-asks, retries, response cache),
so the repaired answer is validated against the schema (and re-asked with the validator's message),
cached in ``label.cache_path`` (asking the same again is free) and returned for the reviewer to accept.
Nothing is written to the label stage's outputs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill import jsonl
from distill.config import load_dotenv, read_params, section
from distill.errors import DistillError
from distill.filterspec import FilterSpec

INSTRUCTION = (
    "A reviewer checked your answer and asks you to revise it:\n\n{instruction}\n\n"
    "Answer again with the complete JSON object, following the same schema."
)


class RepairError(DistillError):
    """The oracle could not be asked, or gave no valid repaired answer."""


@dataclass
class Repair:
    answer: dict[str, Any]
    cost_usd: float
    cached: bool


def repair_messages(row: dict[str, Any], instruction: str) -> list[dict[str, str]]:
    prompt = [m for m in row["messages"] if m.get("role") in ("system", "user")][:2]
    return [*prompt, {"role": "assistant", "content": jsonl.dumps(row["label"])},
            {"role": "user", "content": INSTRUCTION.format(instruction=instruction.strip())}]


def repair(params_path: str | Path, spec: FilterSpec, row: dict[str, Any], instruction: str) -> Repair:
    """One repair of a label row's answer; raises RepairError with the reason when none validates."""
    from distill.labeling.build import build_labeler, providers_for
    from distill.labeling.cache import ResponseCache

    if not instruction.strip():
        raise RepairError("write what the oracle should change first")
    load_dotenv()
    params = read_params(params_path)
    oracle = section(params, "oracle", params_path)
    label_cfg = section(params, "label", params_path)
    providers = providers_for(oracle)  # keys are checked here, before any request
    cache = ResponseCache(label_cfg.cache_path)
    labeler = build_labeler(spec, oracle, label_cfg, cache, providers=providers, limits=False)
    item = {**row, "messages": repair_messages(row, instruction)}

    async def run() -> tuple[str, dict[str, Any]]:
        try:
            return await labeler.follow_up(item)
        finally:
            for provider, _ in providers:
                await provider.aclose()

    try:
        kind, out = asyncio.run(run())
    except DistillError:
        raise
    except Exception as e:  # a provider error after its retries: say what it was, keep the app up
        raise RepairError(f"the oracle could not be asked: {e}") from e
    finally:
        cache.close()
    if kind != "valid":
        last = (out.get("attempts") or [{}])[-1]
        raise RepairError(f"the oracle's repaired answer did not validate ({last.get('reason', kind)}): "
                          f"{last.get('detail', '')}")
    stats = labeler.stats
    return Repair(answer=out["label"], cost_usd=round(stats.cost_usd, 8), cached=stats.requests == 0)
