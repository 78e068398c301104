"""The Gemini oracle, end to end over real HTTP.

Google's ``google-genai`` SDK talks to a fake ``generateContent`` server on 127.0.0.1
(``tests/fakes/gemini_server.py``) through :class:`distill.labeling.engine.Labeler`, the real response
cache and the real filter; nothing of ours is mocked.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from distill.compress import compress
from distill.errors import ConfigError
from distill.filterspec import load_filter
from distill.providers import ProviderConfig, make_provider
from distill.providers.gemini import GeminiProvider, finish_reason, gemini_schema
from tests.fakes.articles import synthetic_articles
from tests.fakes.gemini_server import (
    FakeGemini,
    Reply,
    default_label,
    first_user_message,
    generation_config,
    model_messages,
    prompt_title,
    system_instruction,
    thinking_budget,
    turn,
    user_messages,
    violating_label,
)
from tests.oracle_harness import (
    checked,
    fake_oracle,
    label_records,
    requests_by_title,
    set_key,
)

SPEC = load_filter("filters/sustainability_tech_deployment/v1")
DIMS = SPEC.dimension_names
KEY_ENV = "DISTILL_TEST_GEMINI_KEY"
MODEL = "gemini-fake-flash"
N = 10
MAX_WORDS = 200


# --------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's backoff is 1 s and up, with up to 1 s of jitter: shorten it for tests."""
    monkeypatch.setattr(GeminiProvider, "retry_initial_delay_s", 0.01)
    monkeypatch.setattr(GeminiProvider, "retry_max_delay_s", 0.05)
    monkeypatch.setattr(GeminiProvider, "retry_jitter_s", 0.0)


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    return set_key(monkeypatch, KEY_ENV, "AIza-test-")


@pytest.fixture
def srv():
    yield from checked(FakeGemini())


@pytest.fixture
def records() -> list[dict[str, Any]]:
    return synthetic_articles(N)


def oracle_cfg(server: FakeGemini, **kw: Any) -> ProviderConfig:
    return fake_oracle("gemini", MODEL, server.base_url, KEY_ENV, **{"thinking_budget": 0, **kw})


def run(tmp_path: Path, server: FakeGemini, records: list[dict[str, Any]], *,
        max_attempts: int = 3, concurrency: int = 4, **cfg_kw: Any):
    """Label ``records``; returns (valid rows by title, invalid rows by title, stats as a dict)."""
    cfg = oracle_cfg(server, **cfg_kw)
    return label_records(tmp_path, cfg, SPEC, records, max_words=MAX_WORDS,
                         max_attempts=max_attempts, concurrency=concurrency)


def by_title(server: FakeGemini) -> dict[str, list[dict[str, Any]]]:
    return requests_by_title(server, prompt_title, turn)


# --------------------------------------------------------------------------------- the happy path
def test_labels_every_record_and_sends_what_the_config_says(tmp_path, srv, records, api_key):
    valid, invalid, stats = run(tmp_path, srv, records)

    assert len(valid) == N and not invalid
    assert stats["requests"] == N and stats["valid"] == N and stats["cache_hits"] == 0
    assert stats["input_tokens"] > 0 and stats["output_tokens"] > 0
    assert srv.count == N
    for r in srv.received:
        assert r.path == f"/v1/models/{MODEL}:generateContent" and r.api_version == "v1"
        assert r.api_key == api_key
    for record in records:
        rendered = SPEC.render({**record, "text": compress(record["text"], MAX_WORDS)})
        [body] = by_title(srv)[record["title"]]
        assert system_instruction(body) == rendered[0]["content"]
        assert [c["role"] for c in body["contents"]] == ["user"]
        assert user_messages(body) == [rendered[1]["content"]]
        config = generation_config(body)
        assert (
            config["temperature"] == 0.0
            and config["maxOutputTokens"] == 300
            and config["seed"] == 7
        )
        assert config["responseMimeType"] == "application/json"
        assert config["responseJsonSchema"] == SPEC.json_schema
        assert thinking_budget(body) == 0
        row = valid[record["title"]]
        assert row["label"] == default_label(body)
        assert row["scores"] == {d: default_label(body)[d] for d in DIMS}
        assert row["oracle"] == f"gemini:{MODEL}" and row["attempts"] == 1
        assert row["messages"] == rendered
        assert row["usage"]["input_tokens"] > 0


@pytest.mark.parametrize("budget", [None, 512])
def test_thinking_budget_is_sent_only_when_set_and_keys_the_cache(
    tmp_path, srv, records, api_key, budget
):
    run(tmp_path, srv, records[:2])  # thinking off (budget 0)
    valid, _, stats = run(tmp_path, srv, records[:2], thinking_budget=budget)

    assert stats["requests"] == 2 and stats["cache_hits"] == 0  # a different question
    assert len(valid) == 2
    for body in srv.requests[2:]:
        assert thinking_budget(body) == budget
        if budget is None:
            assert "thinkingConfig" not in generation_config(body)


def test_thoughts_are_not_part_of_the_answer(tmp_path, srv, records, api_key):
    srv.responder = lambda body: Reply.label(
        default_label(body), thought="Let me think {not json}", usage={"thoughtsTokenCount": 40}
    )
    valid, invalid, stats = run(tmp_path, srv, records[:3], thinking_budget=None)

    assert len(valid) == 3 and not invalid
    assert stats["output_tokens"] >= 3 * 40  # thinking is billed as output


def test_unsupported_schema_keywords_are_dropped():
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "x": {"type": "integer", "minimum": 0, "maximum": 3, "multipleOf": 1},
            "$schema": {"type": "string", "examples": ["a property may be called anything"]},
            "items": {"type": "array", "items": {"type": "string", "contentEncoding": "base64"}},
        },
        "required": ["x"],
        "additionalProperties": False,
        "unevaluatedProperties": False,
    }
    assert gemini_schema(schema) == {
        "type": "object",
        "properties": {
            "x": {"type": "integer", "minimum": 0, "maximum": 3},
            "$schema": {"type": "string"},
            "items": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["x"],
        "additionalProperties": False,
    }
    assert gemini_schema(SPEC.json_schema) == SPEC.json_schema


def test_finish_reasons_map_to_the_engines_words():
    assert [
        finish_reason(r) for r in ("STOP", "MAX_TOKENS", "SAFETY", "RECITATION", "OTHER", None)
    ] == [
        "stop",
        "length",
        "refusal",
        "refusal",
        "other",
        None,
    ]


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
        assert [c["role"] for c in second["contents"]] == ["user", "model", "user"]
        assert second["contents"][0] == first["contents"][0]
        assert system_instruction(second) == system_instruction(first)
        assert model_messages(second) == [json.dumps(violating_label(first, how))]
        feedback = user_messages(second)[-1]
        assert "not accepted (schema)" in feedback and expected in feedback and DIMS[0] in feedback
        assert valid[title]["label"] == default_label(second)


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("truncated", "truncated"),
        ("empty", "empty"),
        ("none", "empty"),
        ("blocked", "refusal"),
        ("bad_json", "bad_json"),
    ],
)
def test_bad_answers_are_reasked_then_recover(tmp_path, srv, records, api_key, kind, reason):
    stuck = records[0]["title"]  # answers badly every time

    def fault(body: dict[str, Any]) -> Reply:
        return {
            "truncated": lambda: Reply.truncated(body),
            "empty": lambda: Reply.empty(""),
            "none": lambda: Reply.empty(None),
            "blocked": lambda: Reply.blocked("SAFETY"),
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
        previous = fault(bodies[0]).text or ""
        assert model_messages(bodies[1]) == [previous or "(empty answer)"]  # never an empty turn
    bad = invalid[stuck]
    assert bad["reason"] == reason and [a["reason"] for a in bad["attempts"]] == [reason, reason]
    expected_finish = {"truncated": "length", "blocked": "refusal"}.get(kind, "stop")
    assert all(a["finish_reason"] == expected_finish for a in bad["attempts"])
    assert stats["invalid_reasons"] == {reason: 1} and stats["valid"] == N - 1


# ----------------------------------------------------------------------------- transport failures
@pytest.mark.parametrize(
    "fault",
    [Reply.error(500), Reply.error(503), Reply.rate_limited(0.01)],
    ids=["500", "503", "429"],
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
    assert len(valid) == N and not invalid
    assert stats["requests"] == N and stats["provider_errors"] == 0


def test_permanent_http_error_is_a_provider_error_with_status_and_message(
    tmp_path, srv, records, api_key
):
    broken = records[2]["title"]
    srv.responder = lambda body: (
        Reply.error(500, message="upstream exploded")
        if prompt_title(body) == broken
        else default_label(body)
    )

    valid, invalid, stats = run(tmp_path, srv, records, sdk_max_retries=1)

    assert len(by_title(srv)[broken]) == 2  # the first try and one retry
    assert len(valid) == N - 1 and stats["provider_errors"] == 1
    [attempt] = invalid[broken]["attempts"]
    assert attempt["reason"] == "provider_error"
    assert attempt["detail"] == f"gemini:{MODEL} answered HTTP 500: upstream exploded"

    # nothing was cached for it: a rerun asks for exactly that record again
    srv.reset()
    srv.responder = default_label
    valid, invalid, stats = run(tmp_path, srv, records)
    assert srv.count == 1 and prompt_title(srv.requests[0]) == broken
    assert len(valid) == N and stats["cache_hits"] == N - 1


@pytest.mark.parametrize(
    "raw",
    [b"<html>502 Bad Gateway</html>", b'{"usageMetadata": {"promptTokenCount": 3}}'],
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
    monkeypatch.delenv("SOME_UNSET_GEMINI_VAR", raising=False)
    cfg = oracle_cfg(srv, api_key_env="SOME_UNSET_GEMINI_VAR")

    with pytest.raises(ConfigError, match="SOME_UNSET_GEMINI_VAR"):
        make_provider(cfg)
    assert srv.count == 0


def test_the_key_is_used_but_never_written_or_logged(
    tmp_path, srv, records, api_key, caplog, capfd
):
    caplog.set_level(logging.DEBUG)  # as chatty as it gets, the SDK's own debug logs included
    failing, invalid_one = records[1]["title"], records[2]["title"]

    def responder(body):
        if prompt_title(body) == failing:
            return Reply.error(403, message="permission denied (fake)")
        if prompt_title(body) == invalid_one:
            return Reply.malformed()
        return default_label(body)

    srv.responder = responder
    run(tmp_path, srv, records, sdk_max_retries=1)
    srv.responder = default_label
    run(tmp_path, srv, records)  # the rerun after recovery

    assert set(srv.api_keys) == {api_key}  # the key was really used, in the x-goog-api-key header
    needle = api_key.encode()
    scanned = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in scanned) and any(
        p.name == "outcomes.jsonl" for p in scanned
    )
    assert [str(p) for p in scanned if needle in p.read_bytes()] == []
    out, err = capfd.readouterr()
    assert api_key not in out and api_key not in err
    assert api_key not in caplog.text and all(api_key not in str(r.args) for r in caplog.records)


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
