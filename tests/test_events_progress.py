"""Acceptance: ``events.jsonl`` and live progress say what happened, with the documented fields.

One run against the fake OpenAI server with a throttled request, a failed one and a record that
never validates writes every kind of online event (``run_start``, ``request_done``, ``retry``,
``rate_limited``, ``invalid``, ``run_end``), each with exactly its fields, and counts that agree
with the metrics. With ``label.progress=log`` and a short ``progress_interval_s`` the log gets a
line every interval with done/total, spend and projection, and the ETA; with ``progress=panel`` on
a forced terminal (a recording rich Console set on ``Progress.console``) the panel shows the same
numbers.
"""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from distill import pipeline
from distill.config import LabelConfig
from distill.filterspec import load_filter
from distill.labeling.progress import Progress
from distill.providers import oracle_config
from tests.fakes.articles import write_articles
from tests.fakes.openai_server import FakeOpenAI, Reply, default_label, prompt_title

REPO = Path(__file__).resolve().parents[1]
SPEC = load_filter(REPO / "filters" / "sustainability_tech_deployment" / "v1")
KEY_ENV = "DISTILL_TEST_OPENAI_EVENTS_KEY"
MAX_ATTEMPTS = 2
PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 10.0}
USAGE = {"prompt_tokens": 1000, "completion_tokens": 100}  # $0.002 a request

# every run is bounded: a regression that waits out a long Retry-After fails, not hangs
pytestmark = pytest.mark.timeout(120)

#: the fields of each event, besides "t" (unix time) and "event"
FIELDS = {
    "run_start": {"total", "oracle", "limits", "budget_usd"},
    "request_done": {"id", "oracle", "input_tokens", "output_tokens", "cost_usd", "finish_reason"},
    "retry": {"id", "oracle", "status", "attempt", "delay_s", "error"},
    "rate_limited": {"id", "oracle", "status", "retry_after"},
    "invalid": {"id", "reason", "oracle"},
    "run_end": {"records", "requests", "cache_hits", "attempts", "valid", "invalid", "skipped",
                "provider_errors", "transport_retries", "rate_limited", "input_tokens",
                "output_tokens", "cached_input_tokens", "cached_output_tokens", "cost_usd", "gold_checked",
                "gold_unusable",
                "gold_agreed"},
}


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test-" + uuid.uuid4().hex)


def scripted(body: dict[str, Any], served: dict[str, int]) -> Reply:
    """Record 1 is throttled once, record 2 fails once with a 500, record 3 never validates."""
    title = prompt_title(body)
    served[title] = served.get(title, 0) + 1
    if title.endswith(" number 1") and served[title] == 1:
        return Reply.rate_limited(0.1)
    if title.endswith(" number 2") and served[title] == 1:
        return Reply.error(500)
    if title.endswith(" number 3"):
        return Reply.malformed()
    return Reply.label(default_label(body), usage=dict(USAGE))


def run(tmp_path: Path, srv: FakeOpenAI, **label_kw: Any) -> dict[str, Any]:
    cfg = oracle_config(provider="openai", model="fake-events", base_url=srv.base_url,
                       api_key_env=KEY_ENV, max_tokens=300, price=PRICE, request_timeout_s=30,
                       sdk_max_retries=0, limits={"rpm": 6000})
    lcfg = LabelConfig(**{"max_words": 200, "max_attempts": MAX_ATTEMPTS, "concurrency": 2,
                          "transport_retries": 2, "backoff_initial_s": 0.01, "budget_usd": 10.0,
                          "cache_path": str(tmp_path / "cache.sqlite"),
                          "output_dir": str(tmp_path / "labels"), **label_kw})
    return pipeline.label(lcfg, cfg, SPEC, tmp_path / "passed.jsonl", metrics_dir=tmp_path)


def test_events_have_their_fields_and_agree_with_the_metrics(tmp_path):
    records = write_articles(tmp_path / "passed.jsonl", 12, prefix="events")
    ids = {r["id"] for r in records}
    served: dict[str, int] = {}
    with FakeOpenAI(lambda body: scripted(body, served)) as srv:
        metrics = run(tmp_path, srv, progress="off")
    events = [json.loads(line) for line in
              (tmp_path / "labels" / "events.jsonl").read_text(encoding="utf-8").splitlines()]

    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    assert set(kinds) == set(FIELDS)
    for e in events:
        assert set(e) == {"t", "event"} | FIELDS[e["event"]], e
        assert isinstance(e["t"], float)
    assert [e["t"] for e in events] == sorted(e["t"] for e in events)

    by_kind: dict[str, list[dict[str, Any]]] = {k: [] for k in FIELDS}
    for e in events:
        by_kind[e["event"]].append(e)
    oracle = "openai:fake-events"
    (start,) = by_kind["run_start"]
    assert start == {**start, "total": 12, "oracle": oracle, "budget_usd": 10.0}
    assert start["limits"] == "6000 rpm, concurrency 2 (adaptive)"

    done = by_kind["request_done"]
    assert len(done) == metrics["requests"]
    assert all(e["id"] in ids and e["oracle"] == oracle for e in done)
    assert sum(e["cost_usd"] for e in done) == pytest.approx(metrics["cost_usd"])
    assert {e["finish_reason"] for e in done} == {"stop"}

    retries = by_kind["retry"]
    assert len(retries) == metrics["transport_retries"] == 2
    assert {(e["id"], e["status"], e["attempt"]) for e in retries} == \
        {("events-001", 429, 1), ("events-002", 500, 1)}
    assert all(e["delay_s"] >= 0 and e["error"] for e in retries)
    assert next(e for e in retries if e["status"] == 429)["delay_s"] >= 0.1  # the Retry-After

    (throttled,) = by_kind["rate_limited"]
    assert throttled == {**throttled, "id": "events-001", "status": 429, "retry_after": 0.1}
    assert metrics["rate_limited"] == 1

    (invalid,) = by_kind["invalid"]
    assert invalid == {**invalid, "id": "events-003", "reason": "bad_json", "oracle": oracle}

    (end,) = by_kind["run_end"]
    assert end == {"t": end["t"], "event": "run_end",
                   **{k: v for k, v in metrics.items() if k in FIELDS["run_end"]}}
    assert end["valid"] == 11 and end["invalid"] == 1


LINE = re.compile(
    r"label: (?P<done>\d+)/(?P<total>\d+) \(valid (?P<valid>\d+), invalid (?P<invalid>\d+)\); "
    r"(?P<rate>[\d.]+) records/s; (?P<paid>\d+) paid, (?P<cached>\d+) cached, (?P<retries>\d+) "
    r"retries, (?P<limited>\d+) rate-limited; tokens (?P<tin>\d+) in / (?P<tout>\d+) out; "
    r"\$(?P<spent>[\d.]+) of \$(?P<budget>[\d.]+) spent, \$(?P<projected>[\d.]+) projected; "
    r"ETA (?P<eta>\d+s|\?)$")


def test_progress_log_lines_come_every_interval(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="distill")
    write_articles(tmp_path / "passed.jsonl", 30, prefix="events")
    served: dict[str, int] = {}
    with FakeOpenAI(lambda body: scripted(body, served), latency_s=0.06) as srv:
        metrics = run(tmp_path, srv, progress="log", progress_interval_s=0.1)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("label: ")
             and "/30 " in r.getMessage()]
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert len(parsed) >= 5, lines  # about 1 s of work at a line per 0.1 s (and a final one)
    final = parsed[-1]
    assert (int(final["done"]), int(final["total"])) == (30, 30)
    assert (int(final["valid"]), int(final["invalid"])) == (29, 1)
    assert float(final["spent"]) == pytest.approx(metrics["cost_usd"], abs=1e-4)
    assert float(final["budget"]) == 10.0
    assert int(final["retries"]) == 2 and int(final["limited"]) == 1
    done = [int(m["done"]) for m in parsed]
    assert done == sorted(done) and done[0] < 30  # lines while it ran, not only at the end
    spent = [float(m["spent"]) for m in parsed]
    assert spent == sorted(spent)
    midway = [m for m in parsed if 0 < int(m["done"]) < 30]
    assert midway and all(m["eta"] != "?" and float(m["projected"]) >= float(m["spent"])
                          for m in midway)


def test_progress_panel_renders_the_numbers(tmp_path, monkeypatch):
    from rich.console import Console

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=140, color_system=None)
    monkeypatch.setattr(Progress, "console", console)
    write_articles(tmp_path / "passed.jsonl", 20, prefix="events")
    served: dict[str, int] = {}
    with FakeOpenAI(lambda body: scripted(body, served), latency_s=0.05) as srv:
        metrics = run(tmp_path, srv, progress="panel")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())  # cursor moves
    assert "progress" in text and "20/20  valid 19  invalid 1" in text
    assert re.search(r"requests +\d+ paid  0 cached  2 retries  1 rate-limited", text)
    assert f"${metrics['cost_usd']:.4f} of $10.00" in text
    assert "projected $" in text and "records/s" in text
    assert re.search(r"limits +6000 rpm, concurrency 2 \(adaptive\)", text)
    assert re.search(r"event +rate_limited: id=events-001", text)
