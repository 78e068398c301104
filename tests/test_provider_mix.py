"""Acceptance: ``oracle.mix`` routes records by weight, deterministically, and fails over.

Two fake OpenAI-compatible servers stand for two oracles: ``fake-a`` (the main oracle config,
weight 3) and ``fake-b`` (in ``oracle.mix``, weight 1). Routing is a hash of the record id: the same
record goes to the same oracle on every run, so a rerun is answered from the cache (zero requests),
and over 200 records the shares are close to 3:1. When one oracle is down (a permanent 503, or
nothing listening) its records fail over to the other after their transport retries, and every
record ends valid. ``metrics.by_provider`` counts what each oracle answered.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from distill import pipeline
from distill.config import LabelConfig
from distill.filterspec import load_filter
from distill.providers import ProviderConfig, oracle_config
from tests.fakes.articles import write_articles
from tests.fakes.openai_server import FakeOpenAI, Reply, prompt_title

REPO = Path(__file__).resolve().parents[1]
SPEC = load_filter(REPO / "filters" / "sustainability_tech_deployment" / "v1")
KEY_ENV = "DISTILL_TEST_OPENAI_MIX_KEY"
N = 200
TRANSPORT_RETRIES = 1
A, B = "openai:fake-a", "openai:fake-b"


# every run is bounded: a regression that waits out a long Retry-After fails, not hangs
pytestmark = pytest.mark.timeout(120)

@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test-" + uuid.uuid4().hex)


def mix_cfg(url_a: str, url_b: str) -> ProviderConfig:
    common = {"provider": "openai", "api_key_env": KEY_ENV, "request_timeout_s": 30,
              "sdk_max_retries": 0, "max_tokens": 300}
    return oracle_config(model="fake-a", base_url=url_a, weight=3, **common,
                        mix=[oracle_config(model="fake-b", base_url=url_b, weight=1, **common)])


def run(tmp_path: Path, cfg: ProviderConfig, name: str) -> dict[str, Any]:
    lcfg = LabelConfig(max_words=200, concurrency=8, progress="off",
                       transport_retries=TRANSPORT_RETRIES, backoff_initial_s=0.01,
                       cache_path=str(tmp_path / name / "cache.sqlite"),
                       output_dir=str(tmp_path / name / "labels"))
    return pipeline.label(lcfg, cfg, SPEC, tmp_path / "passed.jsonl", metrics_dir=tmp_path / name)


def rows(tmp_path: Path, name: str, file: str = "labels.jsonl") -> list[dict[str, Any]]:
    path = tmp_path / name / "labels" / file
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_weighted_routing_is_deterministic_and_cached(tmp_path):
    records = write_articles(tmp_path / "passed.jsonl", N, prefix="mix")
    title_of = {r["title"]: r["id"] for r in records}
    with FakeOpenAI() as a, FakeOpenAI() as b:
        cfg = mix_cfg(a.base_url, b.base_url)
        metrics = run(tmp_path, cfg, "first")
        to_a = {title_of[prompt_title(body)] for body in a.requests}
        to_b = {title_of[prompt_title(body)] for body in b.requests}

        # every record asked exactly once, of one oracle; the shares follow the weights
        assert a.count == len(to_a) and b.count == len(to_b) and not to_a & to_b
        assert len(to_a) + len(to_b) == N
        share_a = len(to_a) / N
        print(json.dumps({"share_a": share_a, "share_b": len(to_b) / N, "weights": "3:1"}))
        assert abs(share_a - 0.75) <= 0.06  # 200 records: one standard deviation is 0.031
        by_provider = metrics["by_provider"]
        assert by_provider[A]["requests"] == a.count and by_provider[B]["requests"] == b.count
        labels = rows(tmp_path, "first")
        assert {r["id"] for r in labels if r["oracle"] == A} == to_a
        assert {r["id"] for r in labels if r["oracle"] == B} == to_b

        # the same run again: every answer is cached, nothing is asked
        a.reset()
        b.reset()
        again = run(tmp_path, cfg, "first")
        assert a.count == 0 and b.count == 0
        assert again["cache_hits"] == N and again["requests"] == 0
        assert rows(tmp_path, "first") == labels

        # a fresh cache: the same record goes to the same oracle
        run(tmp_path, cfg, "fresh")
        assert {title_of[prompt_title(body)] for body in a.requests} == to_a
        assert {title_of[prompt_title(body)] for body in b.requests} == to_b


@pytest.mark.parametrize("down", ["http_503", "not_listening"])
def test_records_of_a_down_oracle_fail_over_and_end_valid(tmp_path, down):
    write_articles(tmp_path / "passed.jsonl", N, prefix="mix")
    with FakeOpenAI() as a, FakeOpenAI(lambda body: Reply.error(503)) as b:
        url_b = b.base_url
        if down == "not_listening":
            b.stop()
        metrics = run(tmp_path, mix_cfg(a.base_url, url_b), "down")
        asked_b = b.count

    assert metrics["valid"] == N and metrics["invalid"] == 0 and metrics["provider_errors"] == 0
    labels = rows(tmp_path, "down")
    assert len(labels) == N and {r["oracle"] for r in labels} == {A}
    assert rows(tmp_path, "down", "invalid.jsonl") == []
    assert metrics["by_provider"] == {A: metrics["by_provider"][A]}  # B answered nothing
    assert metrics["by_provider"][A]["requests"] == a.count == N
    # B was given up on after the first records routed to it used their retries: once marked
    # down, no record is sent to it (at most the 8 in progress at that moment had tried it)
    events = [json.loads(line) for line in (tmp_path / "down" / "labels" / "events.jsonl").open()]
    assert [e["oracle"] for e in events if e["event"] == "provider_down"][:1] == [B]
    if down == "http_503":
        assert 0 < asked_b <= 8 * (1 + TRANSPORT_RETRIES)
