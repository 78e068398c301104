"""Acceptance: ``label.budget_usd`` stops the stage within one in-flight request (per slot) of it.

Every answer from the fake OpenAI server reports the same usage (1,000 input and 100 output tokens)
and the prices make that exactly $0.002 a request. Before sending, the engine reserves a request's
worst case (its estimated input plus ``max_tokens`` of output) and admits it only if spent +
reserved + that worst case fits the cap; so spend never passes the cap, and when the stage stops it
is short of the cap by less than one worst-case request per concurrency slot (in fact by less than
one: the budget waits for reservations in flight to settle before it gives up). Counted at the
server: every request it saw was paid for, and none was started once the budget said stop. A rerun
with a raised cap replays what was paid from the cache and pays only for the rest.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from distill import pipeline
from distill.compress import compress
from distill.config import LabelConfig
from distill.errors import DistillError
from distill.filterspec import load_filter
from distill.labeling.engine import estimate_tokens
from distill.providers import oracle_config
from tests.fakes.articles import write_articles
from tests.fakes.openai_server import FakeOpenAI, Reply, default_label

REPO = Path(__file__).resolve().parents[1]
SPEC = load_filter(REPO / "filters" / "sustainability_tech_deployment" / "v1")
KEY_ENV = "DISTILL_TEST_OPENAI_BUDGET_KEY"
N = 60
MAX_WORDS = 200
MAX_TOKENS = 300
USAGE = {"prompt_tokens": 1000, "completion_tokens": 100}
PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 10.0}
COST = (1000 * 1.0 + 100 * 10.0) / 1e6  # $0.002 per request
CAP = 0.05  # 25 requests' worth


# every run is bounded: a regression that waits out a long Retry-After fails, not hangs
pytestmark = pytest.mark.timeout(120)

def responder(body: dict[str, Any]) -> Reply:
    return Reply.label(default_label(body), usage=dict(USAGE))


def worst_case(records: list[dict[str, Any]]) -> float:
    """The most the engine reserves for one request: estimated input plus max_tokens of output."""
    most = max(estimate_tokens(SPEC.render({**r, "text": compress(r["text"], MAX_WORDS)}))
               for r in records)
    return (most * PRICE["input_per_mtok"] + MAX_TOKENS * PRICE["output_per_mtok"]) / 1e6


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_budget_stops_within_one_request_per_slot_and_rerun_pays_only_the_rest(
        tmp_path, monkeypatch, concurrency):
    monkeypatch.setenv(KEY_ENV, "sk-test-" + uuid.uuid4().hex)
    records = write_articles(tmp_path / "passed.jsonl", N, prefix=f"budget-{concurrency}")
    reservation = worst_case(records)
    assert reservation > COST  # the reservation is pessimistic: max_tokens of output

    def run(cap: float) -> dict[str, Any]:
        cfg = oracle_config(provider="openai", model="fake-budget", base_url=srv.base_url,
                           api_key_env=KEY_ENV, max_tokens=MAX_TOKENS, price=PRICE,
                           request_timeout_s=30, sdk_max_retries=0)
        lcfg = LabelConfig(max_words=MAX_WORDS, concurrency=concurrency, budget_usd=cap,
                           progress="off", backoff_initial_s=0.01,
                           cache_path=str(tmp_path / "cache.sqlite"),
                           output_dir=str(tmp_path / "labels"))
        return pipeline.label(lcfg, cfg, SPEC, tmp_path / "passed.jsonl", metrics_dir=tmp_path)

    with FakeOpenAI(responder, latency_s=0.02) as srv:
        # --- the capped run stops, with what it spent written down
        with pytest.raises(DistillError, match="budget reached") as stopped:
            run(CAP)
        assert "Raise label.budget_usd and rerun" in str(stopped.value)
        metrics = json.loads((tmp_path / "label.json").read_text(encoding="utf-8"))
        paid = srv.count
        spent = metrics["cost_usd"]
        print(json.dumps({"concurrency": concurrency, "cap": CAP, "spent": spent, "requests": paid,
                          "floor": round(CAP - reservation * concurrency, 6)}))
        assert spent <= CAP
        assert spent >= CAP - reservation * concurrency  # within one worst case per slot
        # tighter: Budget.admit waits for the reservations in flight to settle before it gives up,
        # so the stop comes only when not even one more worst case fits
        assert spent > CAP - reservation
        # every request the server saw was answered and paid for: none started past the cap
        assert paid == srv.answered == metrics["requests"]
        assert spent == pytest.approx(paid * COST)
        assert paid * COST <= CAP
        assert metrics["stopped"].startswith("budget reached")
        assert metrics["valid"] == paid and metrics["skipped"] == N - paid
        labels = read_rows(tmp_path / "labels" / "labels.jsonl")
        assert len(labels) == paid and read_rows(tmp_path / "labels" / "invalid.jsonl") == []
        assert [r["id"] for r in labels] == [r["id"] for r in records[:paid]]  # input order

        events = read_rows(tmp_path / "labels" / "events.jsonl")
        stops = [e for e in events if e["event"] == "budget_reached"]
        assert len(stops) == 1 and stops[0]["cap_usd"] == CAP
        assert stops[0]["spent_usd"] <= CAP
        # nothing arrived at the server after the stop (nothing was in flight when it came)
        assert all(r.time <= stops[0]["t"] + 0.001 for r in srv.received)  # t: 3 decimals

        # --- a raised cap: the paid answers replay from the cache, only the rest is asked
        srv.reset()
        metrics = run(1.0)
        assert srv.count == N - paid
        assert metrics["cache_hits"] == paid and metrics["requests"] == N - paid
        assert metrics["cost_usd"] == pytest.approx((N - paid) * COST)
        assert metrics["valid"] == N and metrics["stopped"] is None
        assert [r["id"] for r in read_rows(tmp_path / "labels" / "labels.jsonl")] == \
            [r["id"] for r in records]


def test_budget_admits_first_come_first_served_and_closes_for_good():
    """A cheaper request never overtakes one waiting for room: a run labels a prefix of its input."""
    import asyncio

    from distill.labeling.budget import Budget

    async def scenario() -> tuple[list[bool], Budget]:
        budget = Budget(10.0)
        assert await budget.admit(4.0) and await budget.admit(4.0)  # two in flight, 8 reserved
        third = asyncio.ensure_future(budget.admit(4.0))  # does not fit now: waits
        fourth = asyncio.ensure_future(budget.admit(1.0))  # would fit, but queues behind the third
        await asyncio.sleep(0)
        assert not third.done() and not fourth.done() and budget.reserved == 8.0
        budget.settle(4.0, 4.0)  # spent 4, reserved 4: the third still does not fit (12 > 10)
        await asyncio.sleep(0)
        assert not third.done() and not fourth.done()
        budget.settle(4.0, 4.0)  # spent 8, nothing in flight: the head can never fit, so it closes
        results = [await third, await fourth, await budget.admit(0.5)]
        return results, budget

    results, budget = asyncio.run(scenario())
    assert results == [False, False, False]  # closed: even a request that fits is refused now
    assert budget.reached and budget.spent == 8.0 and budget.reserved == 0.0


def test_budget_waiter_admitted_when_a_settled_reservation_frees_room():
    import asyncio

    from distill.labeling.budget import Budget

    async def scenario() -> tuple[bool, bool, float]:
        budget = Budget(10.0)
        assert await budget.admit(6.0)
        waiting = asyncio.ensure_future(budget.admit(6.0))
        await asyncio.sleep(0)
        budget.settle(6.0, 2.0)  # the answer cost less than its worst case: 2 + 6 fits
        admitted = await waiting
        cancelled = asyncio.ensure_future(budget.admit(6.0))  # 2 + 6 + 6 > 10: waits
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        budget.settle(6.0, 1.0)  # the cancelled waiter is skipped, not admitted
        return admitted, budget.reached, budget.reserved

    admitted, reached, reserved = asyncio.run(scenario())
    assert admitted and not reached and reserved == 0.0
