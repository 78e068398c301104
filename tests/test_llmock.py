"""Resilience of the OpenAI path, judged by an independent chaos server: LLMock (``pip install llmock``).

LLMock serves the OpenAI chat-completions API on 127.0.0.1, injects the faults it is told to (429 with
Retry-After, 5xx, 400, slow answers, an outage, random errors), records every attempt with its timing,
and then grades the client: ``retry_after_ignored``, ``retried_non_retryable`` and ``retry_storm`` are
errors; ``no_backoff`` and ``gave_up`` are warnings. Each test runs the real label stage
(``pipeline.label``) through both transports (the SDK and the aiohttp client) and asserts LLMock's
verdict.

llmock is a test-only tool (the `dev` extra installs it); the tests skip only if it cannot be imported.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from llmock.chaos import ChaosSettings
from llmock.pytest_plugin import LLMock
from llmock.scenarios import Fail
from llmock.testing import LLMockServer

from distill import pipeline
from distill.config import LabelConfig
from distill.errors import DistillError
from distill.filterspec import load_filter
from distill.providers import oracle_config
from tests.fakes.articles import write_articles

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[1]
SPEC = load_filter(REPO / "filters" / "sustainability_tech_deployment" / "v1")
KEY_ENV = "DISTILL_TEST_LLMOCK_KEY"
TRANSPORTS = ["aiohttp", "sdk"]


@pytest.fixture(scope="module")
def server():
    with LLMockServer() as srv:
        yield srv


@pytest.fixture
def mock(server: LLMockServer, monkeypatch: pytest.MonkeyPatch) -> LLMock:
    monkeypatch.setenv(KEY_ENV, "sk-llmock-" + uuid.uuid4().hex)
    return LLMock(server).reset()


def set_chaos(mock: LLMock, server: LLMockServer, **rates: float) -> None:
    """Random errors at these rates (status -> share of requests), as ``llmock serve --error-rate``."""
    chaos = ChaosSettings(error_rates={int(k.strip("s")): v for k, v in rates.items()})
    server.state.chaos = chaos
    server.app.state.chaos_settings = chaos


def label(tmp_path: Path, mock: LLMock, transport: str, n: int = 16, **kw: Any) -> dict[str, Any]:
    write_articles(tmp_path / "passed.jsonl", n)
    oracle = oracle_config(provider="openai", model="gpt-4o-mini", base_url=mock.base_url("openai"),
                          api_key_env=KEY_ENV, transport=transport, sdk_max_retries=0,
                          request_timeout_s=kw.pop("request_timeout_s", 30))
    cfg = LabelConfig(**{"max_words": 200, "max_attempts": 2, "concurrency": 4, "progress": "off",
                         "transport_retries": 6, "backoff_initial_s": 0.05, "backoff_max_s": 2.0,
                         "cache_path": str(tmp_path / "cache.sqlite"), "output_dir": str(tmp_path / "labels"), **kw})
    return pipeline.label(cfg, oracle, SPEC, tmp_path / "passed.jsonl", metrics_dir=tmp_path)


def assert_verdict(mock: LLMock, *, strict: bool, allowed_warnings: set[str] = frozenset()) -> None:
    verdict = mock.verdict()
    assert verdict.passed, verdict.render()  # no errors, ever
    if strict:
        unexpected = [f for f in verdict.warnings if f.code not in allowed_warnings]
        assert not unexpected, verdict.render()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rate_limits_wait_for_retry_after(tmp_path, mock, transport):
    mock.rate_limit(times=3, retry_after=0.4)
    metrics = label(tmp_path, mock, transport)
    assert metrics["valid"] == 16 and metrics["rate_limited"] == 3
    assert_verdict(mock, strict=True)
    assert mock.verdict().faults == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_server_errors_are_retried_with_backoff(tmp_path, mock, transport):
    mock.add(Fail(503, retry_after=0.2, times=2), Fail(500, times=2), Fail(502, retry_after=0.1, times=1))
    metrics = label(tmp_path, mock, transport)
    assert metrics["valid"] == 16 and metrics["transport_retries"] == 5
    assert_verdict(mock, strict=True)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("status", [400, 401, 422])
def test_client_errors_are_never_retried(tmp_path, mock, transport, status):
    mock.fail(status, times=1)
    with pytest.raises(DistillError, match="1 record"):
        label(tmp_path, mock, transport)
    assert_verdict(mock, strict=True)
    assert sum(1 for r in mock.requests if r.status == status) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_context_overflow_is_not_retried(tmp_path, mock, transport):
    mock.context_overflow(times=1)
    with pytest.raises(DistillError, match="1 record"):
        label(tmp_path, mock, transport)
    assert_verdict(mock, strict=True)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_slow_answer_times_out_and_is_retried(tmp_path, mock, transport):
    mock.delay(3.0, times=1)
    metrics = label(tmp_path, mock, transport, n=8, request_timeout_s=0.5)
    assert metrics["valid"] == 8 and metrics["transport_retries"] >= 1
    assert_verdict(mock, strict=True)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_outage_stops_the_run_without_a_retry_storm(tmp_path, mock, transport):
    mock.outage(status=503)
    with pytest.raises(DistillError, match="in a row failed"):
        label(tmp_path, mock, transport, n=12)  # each 503 asks for Retry-After: 1 s, and gets it
    # the circuit breaker stops every record mid-retry: LLMock calls those "gave up" (a warning)
    assert_verdict(mock, strict=True, allowed_warnings={"gave_up"})
    assert max(len(c.attempts) for c in mock.verdict().calls) <= 7  # 1 + transport_retries


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_random_chaos_every_record_labelled(tmp_path, mock, server, transport):
    set_chaos(mock, server, s429=0.15, s500=0.1, s503=0.05)
    metrics = label(tmp_path, mock, transport, n=40, concurrency=8, transport_retries=9)
    assert metrics["valid"] == 40
    assert metrics["transport_retries"] > 0
    # A 429 (Retry-After: 1 s) pauses every request (the scheduler's global back-off), so a record whose
    # own 500s carry no Retry-After may wait out that same 1 s pause twice in a row, which LLMock's
    # heuristic reads as a "constant interval". Waiting with no delay at all is never acceptable.
    assert_verdict(mock, strict=True, allowed_warnings={"no_backoff"})
    assert not [f for f in mock.verdict().warnings if "no delay" in f.title], mock.verdict().render()
