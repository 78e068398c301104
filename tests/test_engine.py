"""The labelling engine on its own, with scripted in-process providers: deterministic checks of the
circuit breaker, of which oracle a failed record names, of the metrics a fully cached run keeps, of
the live event stream and of the budget's refusal to run without a price."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from distill import pipeline
from distill.config import LabelConfig
from distill.errors import ConfigError
from distill.filterspec import load_filter
from distill.labeling.budget import Budget
from distill.labeling.build import build_labeler
from distill.labeling.cache import ResponseCache
from distill.labeling.engine import Labeler
from distill.labeling.events import Events
from distill.labeling.limits import Scheduler
from distill.providers import ChatRequest, ChatResponse, Provider, ProviderError, RateLimits, oracle_config
from tests.fakes.articles import synthetic_articles

REPO = Path(__file__).resolve().parents[1]
SPEC = load_filter(REPO / "filters" / "sustainability_tech_deployment" / "v1")


class Scripted(Provider):
    """A provider whose answer to each request is decided by ``script(title, n)`` (``n``: the
    provider's request count so far): a ChatResponse, or an exception to raise."""

    name = "openai"

    def __init__(self, model: str, script: Callable[[str, int], Any], delay_s: float = 0.0):
        super().__init__(oracle_config(provider="openai", model=model, api_key_env="UNUSED_KEY"))
        self.script = script
        self.delay_s = delay_s
        self.sent: list[str] = []

    async def complete(self, request: ChatRequest) -> ChatResponse:
        title = request.messages[1]["content"].split("Title: ", 1)[1].split("\n", 1)[0]
        self.sent.append(title)
        await asyncio.sleep(self.delay_s)
        outcome = self.script(title, len(self.sent))
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def answer(title: str, n: int) -> ChatResponse:
    label = {d: len(title) % 11 for d in SPEC.dimension_names} | {"reasoning": f"about {title}"}
    return ChatResponse(json.dumps(label), input_tokens=100, output_tokens=20, finish_reason="stop")


def labeler(tmp_path: Path, providers, **kw: Any) -> Labeler:
    return Labeler(SPEC, providers, ResponseCache(tmp_path / "cache.sqlite"), max_words=200, max_attempts=2, **kw)


async def collect(lab: Labeler, records, concurrency: int) -> list[tuple[str, dict]]:
    return [o async for o in lab.run(records, concurrency)]


# ----------------------------------------------------------------------------- the circuit breaker
def test_no_request_leaves_after_the_breaker_trips_even_from_records_waiting_for_a_slot(tmp_path):
    """Concurrency 1, so other records always wait for the slot while a request is out: the 20th
    failure trips the breaker and the request queued behind it is never sent (21 before the fix)."""
    dead = Scripted("dead", lambda title, n: ProviderError("HTTP 503", status=503))
    lab = labeler(tmp_path, dead, scheduler=Scheduler(RateLimits(), 1), max_consecutive_errors=20)
    with pytest.raises(ProviderError, match="20 requests in a row failed"):
        asyncio.run(collect(lab, synthetic_articles(40), 1))
    assert len(dead.sent) == 20


# ----------------------------------------------------------------------------- failed records
def test_a_record_that_gets_no_answer_names_the_oracle_it_was_sent_to(tmp_path):
    """A mix of two oracles: ``a`` goes down on the first record (which fails over to ``b``); a later
    record that ``b`` cannot answer is reported with ``b``, the only oracle it was sent to (the
    engine used to name the first configured oracle)."""
    records = synthetic_articles(6)
    doomed = records[4]["title"]
    a = Scripted("a", lambda title, n: ProviderError("quota exhausted", status=403))
    b = Scripted("b", lambda title, n: ProviderError("bad request", status=400) if title == doomed
                 else answer(title, n))
    lab = labeler(tmp_path, [(a, 1.0), (b, 1.0)])
    outcomes = asyncio.run(collect(lab, records, 1))
    invalid = [row for kind, row in outcomes if kind == "invalid"]
    assert [row["id"] for row in invalid] == [records[4]["id"]]
    assert invalid[0]["oracle"] == "openai:b" and invalid[0]["reason"] == "provider_error"
    assert doomed not in a.sent  # a was down by then: the record was only sent to b
    assert [kind for kind, _ in outcomes].count("valid") == 5


# ----------------------------------------------------------------------------- metrics of a cached run
def test_a_run_answered_from_the_cache_keeps_its_per_oracle_metrics(tmp_path):
    cfg = LabelConfig(max_words=200, cache_path=str(tmp_path / "cache.sqlite"), output_dir=str(tmp_path / "labels"),
                      progress="off")
    oracle = oracle_config(provider="openai", model="m", api_key_env="UNUSED_KEY")
    records = synthetic_articles(5)
    (tmp_path / "passed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    def run() -> dict[str, Any]:
        provider = Scripted("m", answer)
        return pipeline.label(cfg, oracle, SPEC, tmp_path / "passed.jsonl", metrics_dir=tmp_path, provider=provider)

    paid, cached = run(), run()
    assert paid["by_provider"]["openai:m"]["requests"] == 5 and paid["by_provider"]["openai:m"]["cache_hits"] == 0
    assert cached["requests"] == 0 and cached["cache_hits"] == 5
    assert set(cached["by_provider"]) == {"openai:m"}  # the section is there, with the same keys
    assert cached["by_provider"]["openai:m"] == {"requests": 0, "cache_hits": 5, "input_tokens": 0,
                                                 "output_tokens": 0, "cost_usd": 0.0}


# ----------------------------------------------------------------------------- live events
def test_events_reach_the_file_while_the_run_is_going(tmp_path):
    """A dashboard tailing events.jsonl sees each answer as it happens, not at the end of the run."""
    path = tmp_path / "events.jsonl"
    seen_during_run: list[int] = []
    gate = threading.Event()

    def script(title: str, n: int) -> ChatResponse:
        if n == 4:  # three answers are in: look at the file from outside, mid-run
            seen_during_run.append(sum(1 for line in path.read_text().splitlines() if '"request_done"' in line))
            gate.set()
        return answer(title, n)

    events = Events(path)
    lab = labeler(tmp_path, Scripted("m", script), events=events)
    asyncio.run(collect(lab, synthetic_articles(6), 1))
    events.close()
    assert gate.is_set() and seen_during_run == [3]


# ----------------------------------------------------------------------------- budget without a price
def test_a_budget_needs_a_price_before_any_request(tmp_path):
    """`-S oracle=openai -S oracle.model=... -S label.budget_usd=0.001` with a model that has no
    known price fails before the first request, saying what to set; a model with a published price
    (gpt-4o-mini) gets it whichever oracle file names it, and the budget holds."""
    records = synthetic_articles(30)
    (tmp_path / "passed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = LabelConfig(max_words=200, budget_usd=0.001, cache_path=str(tmp_path / "cache.sqlite"),
                      output_dir=str(tmp_path / "labels"), progress="off", concurrency=1)
    unpriced = oracle_config(provider="openai", model="my-finetune", api_key_env="UNUSED_KEY")
    provider = Scripted("my-finetune", answer)
    with pytest.raises(ConfigError, match=r"no price is known for openai:my-finetune.*input_per_mtok"):
        pipeline.label(cfg, unpriced, SPEC, tmp_path / "passed.jsonl", metrics_dir=tmp_path, provider=provider)
    assert provider.sent == []

    priced = oracle_config(provider="openai", model="gpt-4o-mini", api_key_env="UNUSED_KEY")
    lab = build_labeler(SPEC, priced, cfg, ResponseCache(tmp_path / "cache.sqlite"),
                        providers=[(Scripted("gpt-4o-mini", answer), 1.0)], budget=Budget(0.001))
    asyncio.run(collect(lab, records, 1))
    # 100 input + 20 output tokens at $0.15 / $0.60 per million: $0.000027 a request; the cap stops
    # admitting once spent + the worst case (384 output tokens reserved) would pass $0.001
    assert 0 < lab.stats.requests < 30 and lab.budget.spent <= 0.001
    assert lab.stats.cost_usd == pytest.approx(lab.stats.requests * (100 * 0.15 + 20 * 0.60) / 1e6)
