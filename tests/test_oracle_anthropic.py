"""The Anthropic oracle, end to end over real HTTP.

The official ``anthropic`` SDK talks to a fake Messages API server on 127.0.0.1
(``tests/fakes/anthropic_server.py``) through :class:`distill.labeling.engine.Labeler`, the real
response cache and the real filter; nothing of ours is mocked.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from distill.compress import compress
from distill.errors import ConfigError
from distill.filterspec import load_filter
from distill.providers import ProviderConfig, make_provider
from distill.providers.anthropic import TOOL_NAME
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    Reply,
    assistant_messages,
    default_label,
    first_user_message,
    prompt_title,
    turn,
    user_messages,
    violating_label,
)
from tests.fakes.articles import synthetic_articles
from tests.oracle_harness import (
    checked,
    fake_oracle,
    label_records,
    requests_by_title,
    set_key,
)

SPEC = load_filter("filters/sustainability_tech_deployment/v1")
DIMS = SPEC.dimension_names
KEY_ENV = "DISTILL_TEST_ANTHROPIC_KEY"
MODEL = "claude-fake-haiku"
N = 10
MAX_WORDS = 200


# --------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    return set_key(monkeypatch, KEY_ENV, "sk-ant-test-")


@pytest.fixture
def srv():
    yield from checked(FakeAnthropic())


@pytest.fixture
def records() -> list[dict[str, Any]]:
    return synthetic_articles(N)


def oracle_cfg(server: FakeAnthropic, **kw: Any) -> ProviderConfig:
    return fake_oracle("anthropic", MODEL, server.base_url, KEY_ENV, **kw)


def run(tmp_path: Path, server: FakeAnthropic, records: list[dict[str, Any]], *,
        max_attempts: int = 3, concurrency: int = 4, **cfg_kw: Any):
    """Label ``records``; returns (valid rows by title, invalid rows by title, stats as a dict)."""
    cfg = oracle_cfg(server, **cfg_kw)
    return label_records(tmp_path, cfg, SPEC, records, max_words=MAX_WORDS,
                         max_attempts=max_attempts, concurrency=concurrency)


def by_title(server: FakeAnthropic) -> dict[str, list[dict[str, Any]]]:
    return requests_by_title(server, prompt_title, turn)


# --------------------------------------------------------------------------------- the happy path
def test_labels_every_record_and_sends_what_the_config_says(tmp_path, srv, records, api_key):
    valid, invalid, stats = run(tmp_path, srv, records)

    assert len(valid) == N and not invalid
    assert stats["requests"] == N and stats["valid"] == N and stats["cache_hits"] == 0
    assert stats["input_tokens"] > 0 and stats["output_tokens"] > 0
    assert srv.count == N
    for r in srv.received:
        assert r.path == "/v1/messages" and r.api_key == api_key
        assert r.headers.get("anthropic-version")
    for record in records:
        rendered = SPEC.render({**record, "text": compress(record["text"], MAX_WORDS)})
        [body] = by_title(srv)[record["title"]]
        assert body["model"] == MODEL and body["max_tokens"] == 300 and body["temperature"] == 0.0
        assert "seed" not in body  # the Messages API has none
        assert body["system"] == rendered[0]["content"]
        assert body["messages"] == [{"role": "user", "content": rendered[1]["content"]}]
        [tool] = body["tools"]
        assert tool["name"] == TOOL_NAME and tool["input_schema"] == SPEC.json_schema
        assert body["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
        row = valid[record["title"]]
        assert row["label"] == default_label(body)
        assert row["scores"] == {d: default_label(body)[d] for d in DIMS}
        assert row["oracle"] == f"anthropic:{MODEL}" and row["attempts"] == 1
        assert row["messages"] == rendered


def test_a_text_answer_is_used_when_there_is_no_tool_call(tmp_path, srv, records, api_key):
    srv.responder = lambda body: (
        "Here it is:\n```json\n" + json.dumps(default_label(body)) + "\n```"
    )

    valid, invalid, _ = run(tmp_path, srv, records[:3])

    assert len(valid) == 3 and not invalid
    for body in srv.requests:
        assert valid[prompt_title(body)]["label"] == default_label(body)


def test_a_model_that_refuses_temperature_is_asked_again_without_it(
    tmp_path, srv, records, api_key
):
    def responder(body):
        if "temperature" in body:
            return Reply.error(400, message="`temperature` is deprecated for this model.")
        return default_label(body)

    srv.responder = responder
    valid, invalid, stats = run(tmp_path, srv, records, concurrency=1)

    assert len(valid) == N and not invalid and stats["provider_errors"] == 0
    assert srv.count == N + 1  # one refusal, then never sent again
    assert ["temperature" in b for b in srv.requests] == [True] + [False] * N


def test_concurrent_requests_all_refused_for_temperature_are_all_asked_again(
    tmp_path, srv, records, api_key
):
    """Eight requests leave with a temperature before the first refusal comes back: each of them is
    asked again without it (the decision is the request's own, not a flag another request flipped)."""

    def responder(body):
        if "temperature" in body:
            return dataclasses.replace(Reply.error(400, message="`temperature` is deprecated for this model."),
                                       latency_s=0.2)
        return default_label(body)

    srv.responder = responder
    valid, invalid, stats = run(tmp_path, srv, records[:8], concurrency=8)

    assert len(valid) == 8 and not invalid and stats["provider_errors"] == 0
    with_temperature = [b for b in srv.requests if "temperature" in b]
    assert len(with_temperature) == 8  # all left before any refusal arrived
    assert srv.count == 16  # each asked once more, without it


def test_other_bad_requests_are_not_retried(tmp_path, srv, records, api_key):
    srv.responder = lambda body: Reply.error(
        400, message="messages: text content blocks must be non-empty"
    )

    valid, invalid, _ = run(tmp_path, srv, records[:1])

    assert srv.count == 1 and not valid
    [attempt] = invalid[records[0]["title"]]["attempts"]
    assert attempt["detail"] == (
        f"anthropic:{MODEL} answered HTTP 400: messages: text content blocks must be non-empty"
    )


# ----------------------------------------------------------------------- validation and re-asking
@pytest.mark.parametrize(
    "how, expected",
    [
        ("out_of_range", "11 is greater than the maximum of 10"),
        ("missing_key", "is a required property"),
    ],
)
def test_reask_carries_the_previous_answer_and_the_validation_error(
    tmp_path, srv, records, api_key, how, expected
):
    srv.responder = lambda body: (
        Reply.schema_violation(body, how) if turn(body) == 0 else default_label(body)
    )

    valid, invalid, stats = run(tmp_path, srv, records)

    assert len(valid) == N and not invalid and all(r["attempts"] == 2 for r in valid.values())
    assert srv.count == stats["requests"] == 2 * N
    for title, (first, second) in by_title(srv).items():
        assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
        assert second["messages"][0] == first["messages"][0] and second["system"] == first["system"]
        assert assistant_messages(second) == [json.dumps(violating_label(first, how))]
        feedback = user_messages(second)[-1]
        assert "not accepted (schema)" in feedback and expected in feedback and DIMS[0] in feedback
        assert second["tools"] == first["tools"] and second["tool_choice"] == first["tool_choice"]
        assert valid[title]["label"] == default_label(second)


@pytest.mark.parametrize(
    "kind, reason, finish",
    [
        ("truncated", "truncated", "length"),
        ("no_content", "empty", "stop"),
        ("blank_text", "empty", "stop"),
        ("refusal", "refusal", "refusal"),
        ("bad_json", "bad_json", "stop"),
    ],
)
def test_bad_answers_are_reasked_then_recover(
    tmp_path, srv, records, api_key, kind, reason, finish
):
    stuck = records[0]["title"]  # answers badly every time

    def fault(body: dict[str, Any]) -> Reply:
        return {
            "truncated": lambda: Reply.truncated(body),
            "no_content": lambda: Reply.empty(None),
            "blank_text": lambda: Reply.empty("  "),
            "refusal": lambda: Reply.refusal(),
            "bad_json": lambda: Reply.malformed("Sure! deployment_stage=7, scale=3"),
        }[kind]()

    srv.responder = lambda body: (
        fault(body) if turn(body) == 0 or prompt_title(body) == stuck else default_label(body)
    )
    valid, invalid, stats = run(tmp_path, srv, records, max_attempts=2)

    assert len(valid) == N - 1 and all(r["attempts"] == 2 for r in valid.values())
    for bodies in by_title(srv).values():
        assert len(bodies) == 2
        assert f"not accepted ({reason})" in user_messages(bodies[1])[-1]
        [previous] = assistant_messages(bodies[1])
        assert previous.strip()  # the API refuses empty turns
        if kind == "truncated":  # the unfinished object, left unclosed
            partial = fault(bodies[0]).tool_input
            assert previous == json.dumps(partial)[:-1]
    bad = invalid[stuck]
    assert bad["reason"] == reason and [a["reason"] for a in bad["attempts"]] == [reason, reason]
    assert all(a["finish_reason"] == finish for a in bad["attempts"])
    assert stats["invalid_reasons"] == {reason: 1} and stats["valid"] == N - 1


# ----------------------------------------------------------------------------- transport failures
@pytest.mark.parametrize(
    "fault",
    [
        Reply.error(500, retry_after=0.01),
        Reply.error(529, retry_after=0.01),
        Reply.rate_limited(0.01),
    ],
    ids=["500", "529", "429"],
)
def test_transient_http_errors_are_retried_by_the_sdk(tmp_path, srv, records, api_key, fault):
    seen: set[str] = set()

    def responder(body):
        prompt = first_user_message(body)
        if prompt not in seen:
            seen.add(prompt)
            return fault
        return default_label(body)

    srv.responder = responder
    valid, invalid, stats = run(tmp_path, srv, records, sdk_max_retries=2)

    assert srv.count == 2 * N
    assert Counter(r.retry_count for r in srv.received) == {"0": N, "1": N}
    assert len(valid) == N and not invalid
    assert stats["requests"] == N and stats["provider_errors"] == 0


def test_permanent_http_error_is_a_provider_error_with_status_and_message(
    tmp_path, srv, records, api_key
):
    broken = records[2]["title"]
    srv.responder = lambda body: (
        Reply.error(500, retry_after=0.01, message="upstream exploded")
        if prompt_title(body) == broken
        else default_label(body)
    )

    valid, invalid, stats = run(tmp_path, srv, records, sdk_max_retries=1)

    assert len(by_title(srv)[broken]) == 2  # the first try and one retry
    assert len(valid) == N - 1 and stats["provider_errors"] == 1
    [attempt] = invalid[broken]["attempts"]
    assert attempt["reason"] == "provider_error"
    assert attempt["detail"] == f"anthropic:{MODEL} answered HTTP 500: upstream exploded"

    srv.reset()
    srv.responder = default_label
    valid, invalid, stats = run(tmp_path, srv, records)
    assert srv.count == 1 and prompt_title(srv.requests[0]) == broken
    assert len(valid) == N and stats["cache_hits"] == N - 1


@pytest.mark.parametrize(
    "raw",
    [
        b"<html>502 Bad Gateway</html>",
        b'{"type": "error", "error": {"type": "api_error", "message": "x"}}',
    ],
    ids=["not_json", "json_without_an_answer"],
)
def test_a_200_that_is_not_an_answer_is_a_provider_error_never_cached(
    tmp_path, srv, records, api_key, raw
):
    broken = records[6]["title"]
    srv.responder = lambda body: (
        Reply(raw_body=raw) if prompt_title(body) == broken else default_label(body)
    )

    valid, invalid, stats = run(tmp_path, srv, records)

    assert invalid[broken]["reason"] == "provider_error" and stats["provider_errors"] == 1
    srv.reset()
    srv.responder = default_label
    valid, invalid, stats = run(tmp_path, srv, records)
    assert srv.count == 1 and len(valid) == N


# ----------------------------------------------------------------------- keys, secrets, the cache
def test_missing_key_fails_before_any_request(srv, monkeypatch):
    monkeypatch.delenv("SOME_UNSET_ANTHROPIC_VAR", raising=False)
    cfg = oracle_cfg(srv, api_key_env="SOME_UNSET_ANTHROPIC_VAR")

    with pytest.raises(ConfigError, match="SOME_UNSET_ANTHROPIC_VAR"):
        make_provider(cfg)
    assert srv.count == 0


def test_the_key_is_used_but_never_written_or_logged(
    tmp_path, srv, records, api_key, caplog, capfd
):
    caplog.set_level(logging.DEBUG)  # as chatty as it gets, the SDK's own debug logs included
    failing, invalid_one = records[1]["title"], records[2]["title"]

    def responder(body):
        if prompt_title(body) == failing:
            return Reply.error(500, retry_after=0.01)
        if prompt_title(body) == invalid_one:
            return Reply.malformed()
        return default_label(body)

    srv.responder = responder
    run(tmp_path, srv, records, sdk_max_retries=1)
    srv.responder = default_label
    run(tmp_path, srv, records)  # the rerun after recovery

    assert set(srv.api_keys) == {api_key}  # the key was really used
    needle = api_key.encode()
    scanned = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in scanned) and any(
        p.name == "outcomes.jsonl" for p in scanned
    )
    assert [str(p) for p in scanned if needle in p.read_bytes()] == []
    out, err = capfd.readouterr()
    assert api_key not in out and api_key not in err
    assert caplog.records and api_key not in caplog.text
    assert all(api_key not in str(r.args) for r in caplog.records)


def test_rerun_through_the_same_cache_makes_no_requests(tmp_path, srv, records, api_key):
    srv.responder = lambda body: (
        Reply.schema_violation(body) if turn(body) == 0 else default_label(body)
    )
    first, _, _ = run(tmp_path, srv, records)
    assert srv.count == 2 * N
    srv.reset()

    again, invalid, stats = run(tmp_path, srv, records)

    assert srv.count == 0 and not invalid
    assert again == first
    assert (
        stats["requests"] == 0 and stats["cache_hits"] == 2 * N and stats["cached_input_tokens"] > 0
    )
