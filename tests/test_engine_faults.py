"""Acceptance: every input ends as a valid label or an invalid record with its reason, whatever the
oracle does, and the retry budgets hold.

Each test runs ``distill.pipeline.label`` against one of the three fake servers (the official SDKs
speak real HTTP to 127.0.0.1) with one fault injected on a subset of the records: some records see
it once, one sees it on every request. What is checked is measured at the server where it can be:

- no crash (a record whose requests fail for good ends in ``invalid.jsonl`` with reason
  ``provider_error`` and the stage raises the documented DistillError *after* writing its outputs);
- no lost record: every input id is in ``labels.jsonl`` or ``invalid.jsonl``, exactly once;
- an invalid record carries its reason and every attempt;
- per request (one record, one conversation turn) the server sees at most ``1 + transport_retries``
  requests, and per record at most ``max_attempts`` turns;
- a 429's Retry-After (``Retry-After`` seconds, ``retry-after-ms``) is honoured: the retry arrives
  no earlier than the advertised delay after the 429 left the server;
- a request stalled past ``oracle.request_timeout_s`` is retried;
- after the server recovers, a rerun asks only for what failed at the transport level (answers
  already given, valid or not, replay from the cache).
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from distill import pipeline
from distill.config import LabelConfig
from distill.errors import DistillError
from distill.filterspec import load_filter
from distill.providers import ProviderConfig, oracle_config
from tests.fakes import anthropic_server, gemini_server, openai_server
from tests.fakes.articles import write_articles

REPO = Path(__file__).resolve().parents[1]
SPEC = load_filter(REPO / "filters" / "sustainability_tech_deployment" / "v1")
N_RECORDS = 8
TRANSPORT_RETRIES = 2
MAX_ATTEMPTS = 3
RETRY_AFTER_S = 0.3
STALL_TIMEOUT_S = 0.5  # oracle.request_timeout_s in the stall tests (a stall lasts 8 times that)

# every run is bounded: a regression that waits out a long Retry-After fails, not hangs
pytestmark = pytest.mark.timeout(120)

SERVERS: dict[str, tuple[ModuleType, type, dict[str, Any]]] = {
    "openai": (openai_server, openai_server.FakeOpenAI, {}),
    "gemini": (gemini_server, gemini_server.FakeGemini, {"thinking_budget": 0}),
    "anthropic": (anthropic_server, anthropic_server.FakeAnthropic, {}),
}


# --------------------------------------------------------------------------- the faults
@dataclass(frozen=True)
class Fault:
    """``make(mod, body, variant)`` builds the reply; ``reason`` is what an invalid record says."""

    make: Callable[[ModuleType, dict[str, Any], int], Any]
    reason: str  # the invalid reason when it never stops: provider_error for transport faults
    transport: bool

    @property
    def throttled(self) -> bool:
        return self is FAULTS["rate_limited"]


def _rate_limited(mod: ModuleType, body: dict[str, Any], variant: int) -> Any:
    # variant 0: Retry-After in seconds; 1: retry-after-ms only; 2 (the permanent one): seconds
    if variant == 1:
        return mod.Reply.rate_limited(None, retry_after_ms=RETRY_AFTER_S * 1000)
    return mod.Reply.rate_limited(RETRY_AFTER_S)


FAULTS: dict[str, Fault] = {
    "rate_limited": Fault(_rate_limited, "provider_error", True),
    "http_500": Fault(lambda mod, body, v: mod.Reply.error(500), "provider_error", True),
    "http_503": Fault(lambda mod, body, v: mod.Reply.error(503), "provider_error", True),
    "connection_reset": Fault(lambda mod, body, v: mod.Reply.connection_reset(), "provider_error",
                              True),
    "stall": Fault(lambda mod, body, v: mod.Reply.stall(STALL_TIMEOUT_S * 8), "provider_error",
                   True),
    "garbled_body": Fault(lambda mod, body, v: mod.Reply(raw_body=b"<html>upstream error</html>"),
                          "provider_error", True),
    "malformed_json": Fault(lambda mod, body, v: mod.Reply.malformed(), "bad_json", False),
    "schema_violation": Fault(lambda mod, body, v: mod.Reply.schema_violation(
        body, ("out_of_range", "missing_key", "extra_key")[v % 3]), "schema", False),
    "truncated": Fault(lambda mod, body, v: mod.Reply.truncated(body), "truncated", False),
    "empty": Fault(lambda mod, body, v: mod.Reply.empty(), "empty", False),
}

#: record index -> (times the fault is served, variant); None: on every request
ONCE = (1, 2)
PERMANENT = 5
PLAN = {1: (1, 0), 2: (1, 1), PERMANENT: (None, 2)}


class Script:
    """A responder: the planned fault for the planned records, a valid label otherwise."""

    def __init__(self, mod: ModuleType, fault: Fault, titles: dict[int, str]):
        self.mod = mod
        self.fault = fault
        self.plan = {titles[i]: spec for i, spec in PLAN.items()}
        self.served: Counter[str] = Counter()
        self.recovered = False

    def __call__(self, body: dict[str, Any]) -> Any:
        title = self.mod.prompt_title(body)
        plan = self.plan.get(title)
        if plan is not None and not self.recovered:
            times, variant = plan
            if times is None or self.served[title] < times:
                self.served[title] += 1
                return self.fault.make(self.mod, body, variant)
        return self.mod.default_label(body)


# --------------------------------------------------------------------------- helpers
def oracle_cfg(name: str, srv: Any, key_env: str, **kw: Any) -> ProviderConfig:
    _, _, extra = SERVERS[name]
    base = {"provider": name, "model": f"{name}-fake-faults", "base_url": srv.base_url,
            "api_key_env": key_env, "temperature": 0.0, "max_tokens": 300, "seed": 7,
            "request_timeout_s": 30, "sdk_max_retries": 0, **extra}
    return oracle_config(**{**base, **kw})


def label_cfg(tmp_path: Path, **kw: Any) -> LabelConfig:
    base = {"max_words": 200, "max_attempts": MAX_ATTEMPTS, "transport_retries": TRANSPORT_RETRIES,
            "backoff_initial_s": 0.01, "backoff_max_s": 2.0, "concurrency": 4, "progress": "off",
            "cache_path": str(tmp_path / "cache" / "llm.sqlite"),
            "output_dir": str(tmp_path / "labels")}
    return LabelConfig(**{**base, **kw})


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def per_request(mod: ModuleType, srv: Any) -> dict[tuple[str, int], list[Any]]:
    """Server-side requests grouped by (record title, conversation turn): one logical request."""
    groups: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for r in srv.received:
        groups[(mod.prompt_title(r.body), mod.turn(r.body))].append(r)
    return groups


def run_label(tmp_path: Path, cfg: ProviderConfig, lcfg: LabelConfig, expect_error: bool
              ) -> dict[str, Any]:
    t0 = time.monotonic()
    if expect_error:
        with pytest.raises(DistillError, match="got no answer after retries"):
            pipeline.label(lcfg, cfg, SPEC, tmp_path / "passed.jsonl", metrics_dir=tmp_path)
    else:
        pipeline.label(lcfg, cfg, SPEC, tmp_path / "passed.jsonl", metrics_dir=tmp_path)
    assert time.monotonic() - t0 < 60
    # the outputs and metrics are written either way
    return json.loads((tmp_path / "label.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- the test
@pytest.mark.parametrize("fault_name", list(FAULTS))
@pytest.mark.parametrize("provider", list(SERVERS))
def test_fault_ends_in_valid_or_invalid_and_budgets_hold(provider, fault_name, tmp_path,
                                                         monkeypatch):
    mod, server_cls, _ = SERVERS[provider]
    fault = FAULTS[fault_name]
    key_env = f"DISTILL_TEST_{provider.upper()}_FAULTS_KEY"
    monkeypatch.setenv(key_env, "test-" + uuid.uuid4().hex)
    records = write_articles(tmp_path / "passed.jsonl", N_RECORDS,
                             prefix=f"{provider}-{fault_name}")
    titles = {i: r["title"] for i, r in enumerate(records)}
    timeout = STALL_TIMEOUT_S if fault_name == "stall" else 30
    lcfg = label_cfg(tmp_path)

    with server_cls() as srv:
        script = Script(mod, fault, titles)
        srv.responder = script
        cfg = oracle_cfg(provider, srv, key_env, request_timeout_s=timeout)
        metrics = run_label(tmp_path, cfg, lcfg, expect_error=fault.transport)
        first_run = srv.received
        finished = srv.finished_at
        groups = per_request(mod, srv)

        # --- no record lost, none twice
        out = tmp_path / "labels"
        valid = read_rows(out / "labels.jsonl")
        invalid = read_rows(out / "invalid.jsonl")
        ids = [r["id"] for r in valid] + [r["id"] for r in invalid]
        assert sorted(ids) == sorted(r["id"] for r in records)
        assert len(ids) == len(set(ids))

        # --- who ended where, and why
        permanent_id = records[PERMANENT]["id"]
        assert [r["id"] for r in invalid] == [permanent_id]
        bad = invalid[0]
        assert bad["reason"] == fault.reason
        assert bad["messages"] and bad["oracle"] == cfg.provider + ":" + cfg.model
        if fault.transport:  # no answer: the transport error, said once per provider tried
            assert [a["reason"] for a in bad["attempts"]] == ["provider_error"]
            assert bad["attempts"][0]["detail"]
        else:  # every content attempt, with what the validator said about it
            assert [a["attempt"] for a in bad["attempts"]] == list(range(1, MAX_ATTEMPTS + 1))
            assert all(a["reason"] == fault.reason and a["detail"] for a in bad["attempts"])
        assert metrics["invalid_reasons"] == {fault.reason: 1}
        assert metrics["valid"] == N_RECORDS - 1 and metrics["invalid"] == 1
        by_id = {r["id"]: r for r in valid}
        for i in ONCE:  # faulted once, then fine: valid (a re-ask for content faults)
            assert by_id[records[i]["id"]]["attempts"] == (1 if fault.transport else 2)

        # --- budgets, counted at the server
        assert all(len(reqs) <= 1 + TRANSPORT_RETRIES for reqs in groups.values())
        turns = Counter(title for title, _ in groups)
        assert max(turns.values()) <= MAX_ATTEMPTS
        if fault.transport:
            assert len(groups[(titles[PERMANENT], 0)]) == 1 + TRANSPORT_RETRIES  # all retries used
            for i in ONCE:
                assert len(groups[(titles[i], 0)]) == 2  # one failure, one retry
            assert turns[titles[PERMANENT]] == 1
        else:  # content faults are re-asked (a new turn), never retried as transport failures
            assert all(len(reqs) == 1 for reqs in groups.values())
            assert turns[titles[PERMANENT]] == MAX_ATTEMPTS
            for i in ONCE:
                assert turns[titles[i]] == 2
        assert metrics["transport_retries"] == sum(len(r) - 1 for r in groups.values())
        assert metrics["requests"] + (1 + TRANSPORT_RETRIES + 2 if fault.transport else 0) == \
            len(first_run)
        throttles_served = len(ONCE) + 1 + TRANSPORT_RETRIES if fault.throttled else 0
        assert metrics["rate_limited"] == throttles_served

        # --- Retry-After honoured, measured at the server
        events = read_rows(out / "events.jsonl")
        throttles = [e for e in events if e["event"] == "rate_limited"]
        assert len(throttles) == metrics["rate_limited"]
        assert all(e["retry_after"] == pytest.approx(RETRY_AFTER_S) for e in throttles)
        if fault.throttled:
            for (title, _), reqs in groups.items():
                for earlier, later in itertools.pairwise(reqs):
                    waited = later.mono - finished[earlier.n]
                    assert waited >= RETRY_AFTER_S, (title, waited)
                    # and not much later (the slack is for a starved CI machine: the wrong waits this
                    # guards against are the 6-minute token reset or a default backoff's 60 s)
                    assert waited < RETRY_AFTER_S + 2.5, (title, waited)
        if fault_name == "stall":  # the stalled request was given up at the client's timeout
            for i in ONCE:
                first, retry = groups[(titles[i], 0)]
                assert retry.mono - first.mono >= STALL_TIMEOUT_S * 0.9
                assert retry.mono - first.mono < STALL_TIMEOUT_S * 8

        # --- the server recovers: a rerun asks only for what failed at the transport level
        labels_before = (out / "labels.jsonl").read_bytes()
        script.recovered = True
        srv.reset()
        metrics = run_label(tmp_path, cfg, lcfg, expect_error=False)
        asked = [(mod.prompt_title(b), mod.turn(b)) for b in srv.requests]
        if fault.transport:
            assert asked == [(titles[PERMANENT], 0)]
            valid = read_rows(out / "labels.jsonl")
            assert sorted(r["id"] for r in valid) == sorted(r["id"] for r in records)
            assert read_rows(out / "invalid.jsonl") == []
            assert metrics["requests"] == 1 and metrics["valid"] == N_RECORDS
        else:  # the invalid answers were paid for: they replay, nothing is asked again
            assert asked == []
            assert (out / "labels.jsonl").read_bytes() == labels_before
            again = read_rows(out / "invalid.jsonl")
            assert [r["id"] for r in again] == [permanent_id]
            assert [a["cached"] for a in again[0]["attempts"]] == [True] * MAX_ATTEMPTS
            assert metrics["requests"] == 0
        assert not srv.responder_errors
        assert not srv.other_requests


# --------------------------------------------------------------------------- rate-limit headers
@pytest.mark.parametrize("provider", list(SERVERS))
def test_ratelimit_headers_on_every_response(provider, tmp_path, monkeypatch):
    """A server that sends ``x-ratelimit-*`` on every response, as OpenAI does (its documented
    example: requests reset in 1s, tokens in 6m0s). A 429 without Retry-After waits for its own
    ``x-ratelimit-reset-*``; a 500 backs off exponentially instead of waiting minutes for the token
    window; an absurd Retry-After (an hour) is capped at ``label.backoff_max_s`` for the retry and
    for the pause it puts on every other request."""
    mod, server_cls, _ = SERVERS[provider]
    key_env = f"DISTILL_TEST_{provider.upper()}_FAULTS_KEY"
    monkeypatch.setenv(key_env, "test-" + uuid.uuid4().hex)
    records = write_articles(tmp_path / "passed.jsonl", 6, prefix=f"{provider}-headers")
    reset_title, failed_title, hour_title = (records[i]["title"] for i in (1, 2, 3))
    served: Counter[str] = Counter()

    def responder(body: dict[str, Any]) -> Any:
        title = mod.prompt_title(body)
        served[title] += 1
        if served[title] > 1:
            return mod.default_label(body)
        # the 429s leave the server after the 500 has been retried: their pause holds everyone
        if title == reset_title:
            reply = mod.Reply.rate_limited(None, headers=mod.ratelimit_headers(
                remaining_requests=0, reset_requests="250ms", reset_tokens="400ms"))
            reply.latency_s = 0.3
            return reply
        if title == failed_title:
            return mod.Reply.error(500)
        if title == hour_title:
            reply = mod.Reply.rate_limited(3600)
            reply.latency_s = 0.3
            return reply
        return mod.default_label(body)

    backoff_max_s = 1.0
    with server_cls(responder) as srv:
        srv.headers = mod.ratelimit_headers(limit_requests=500, remaining_requests=499,
                                            reset_requests="5s", limit_tokens=200000,
                                            remaining_tokens=1000, reset_tokens="6m0s")
        cfg = oracle_cfg(provider, srv, key_env)
        t0 = time.monotonic()
        metrics = run_label(tmp_path, cfg, label_cfg(tmp_path, backoff_max_s=backoff_max_s),
                            expect_error=False)
        elapsed = time.monotonic() - t0
        groups = per_request(mod, srv)
        finished = srv.finished_at
    assert metrics["valid"] == 6 and metrics["transport_retries"] == 3
    first, retry = groups[(reset_title, 0)]
    assert 0.4 <= retry.mono - finished[first.n] < 0.4 + 2.5  # the reply's reset, not the server's (5 s)
    first, retry = groups[(failed_title, 0)]
    assert retry.mono - finished[first.n] < 2.5, "a 500 waited for x-ratelimit-reset-*"
    first, retry = groups[(hour_title, 0)]
    assert backoff_max_s <= retry.mono - finished[first.n] < backoff_max_s + 2.5
    assert elapsed < 10  # nobody waited an hour (or six minutes)


# --------------------------------------------------------------------------- mixed faults
@pytest.mark.parametrize("provider", list(SERVERS))
def test_transport_failure_on_a_reask_keeps_the_earlier_attempts(provider, tmp_path, monkeypatch):
    """A bad answer, then the re-ask fails for good at the transport level: the invalid record
    holds both, the answer that was not accepted and the transport error."""
    mod, server_cls, _ = SERVERS[provider]
    key_env = f"DISTILL_TEST_{provider.upper()}_FAULTS_KEY"
    monkeypatch.setenv(key_env, "test-" + uuid.uuid4().hex)
    records = write_articles(tmp_path / "passed.jsonl", 3, prefix=f"{provider}-mixed")
    target = records[1]["title"]

    def responder(body: dict[str, Any]) -> Any:
        if mod.prompt_title(body) != target:
            return mod.default_label(body)
        return mod.Reply.malformed() if mod.turn(body) == 0 else mod.Reply.error(503)

    with server_cls(responder) as srv:
        cfg = oracle_cfg(provider, srv, key_env)
        run_label(tmp_path, cfg, label_cfg(tmp_path), expect_error=True)
        groups = per_request(mod, srv)
    assert len(groups[(target, 0)]) == 1 and len(groups[(target, 1)]) == 1 + TRANSPORT_RETRIES
    (bad,) = read_rows(tmp_path / "labels" / "invalid.jsonl")
    assert bad["id"] == records[1]["id"] and bad["reason"] == "provider_error"
    assert [a["reason"] for a in bad["attempts"]] == ["bad_json", "provider_error"]
    assert bad["attempts"][0]["text"] and "503" in bad["attempts"][1]["detail"]


@pytest.mark.parametrize("provider", list(SERVERS))
def test_a_dead_server_is_not_hammered(provider, tmp_path, monkeypatch):
    """Every request fails (503): after 20 failures in a row the circuit breaker stops the run.
    Counted at the server: nothing is sent once it has tripped, neither the retries of records in
    progress nor the first request of records started after it (at most the requests already in
    flight, one per concurrency slot, arrive after the 20th failure)."""
    mod, server_cls, _ = SERVERS[provider]
    key_env = f"DISTILL_TEST_{provider.upper()}_FAULTS_KEY"
    monkeypatch.setenv(key_env, "test-" + uuid.uuid4().hex)
    write_articles(tmp_path / "passed.jsonl", 40, prefix=f"{provider}-dead")
    concurrency = 4
    with server_cls(lambda body: mod.Reply.error(503, retry_after=0.01), latency_s=0.01) as srv:
        cfg = oracle_cfg(provider, srv, key_env)
        lcfg = label_cfg(tmp_path, transport_retries=6, concurrency=concurrency)
        with pytest.raises(DistillError, match="requests in a row failed") as stopped:
            pipeline.label(lcfg, cfg, SPEC, tmp_path / "passed.jsonl", metrics_dir=tmp_path)
        assert "rerun the stage to resume" in str(stopped.value)
        assert 20 <= srv.count <= 20 + concurrency - 1
