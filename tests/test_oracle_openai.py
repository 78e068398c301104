"""The label stage's OpenAI-compatible oracle path, end to end over real HTTP.

The official ``openai`` SDK talks to a fake chat-completions server on 127.0.0.1
(``tests/fakes/openai_server.py``); nothing of ours is mocked. Each test scripts the server's answers
per request and checks what the stage wrote, what it counted and what it sent.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from distill import pipeline
from distill.compress import compress
from distill.config import ConfigError, LabelConfig
from distill.errors import DistillError
from distill.filterspec import FilterSpec, load_filter
from distill.providers import ProviderConfig, make_provider
from tests.fakes.articles import write_articles
from tests.fakes.openai_server import (
    FakeOpenAI,
    Reply,
    default_label,
    first_user_message,
    prompt_title,
    turn,
)
from tests.oracle_harness import checked, fake_oracle, requests_by_title, set_key

REPO = Path(__file__).resolve().parents[1]
FILTER_DIR = REPO / "filters" / "sustainability_tech_deployment" / "v1"
SPEC = load_filter(FILTER_DIR)
DIMS = SPEC.dimension_names
KEY_ENV = "DISTILL_TEST_OPENAI_KEY"
MODEL = "fake-oracle-1"
N = 20


# ----------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    return set_key(monkeypatch, KEY_ENV, "sk-test-")


@pytest.fixture
def srv():
    yield from checked(FakeOpenAI())


@pytest.fixture
def records(tmp_path: Path) -> list[dict[str, Any]]:
    return write_articles(tmp_path / "passed.jsonl", N)


def oracle_cfg(server: FakeOpenAI, **kw: Any) -> ProviderConfig:
    return fake_oracle("openai", MODEL, server.base_url, KEY_ENV, **kw)


def label_cfg(tmp_path: Path, out: str = "labels", **kw: Any) -> LabelConfig:
    base = {"max_words": 200, "max_attempts": 3, "concurrency": 4,
            "cache_path": str(tmp_path / "cache" / "llm.sqlite"), "output_dir": str(tmp_path / out)}
    return LabelConfig(**{**base, **kw})


def run_label(tmp_path: Path, server: FakeOpenAI, *, spec: FilterSpec = SPEC, out: str = "labels",
              label_kw: dict | None = None, **oracle_kw: Any) -> dict[str, Any]:
    return pipeline.label(label_cfg(tmp_path, out, **(label_kw or {})), oracle_cfg(server, **oracle_kw),
                          spec, tmp_path / "passed.jsonl", metrics_dir=tmp_path)


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def cached_answers(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "cache" / "llm.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


def by_title(server: FakeOpenAI) -> dict[str, list[dict[str, Any]]]:
    return requests_by_title(server, prompt_title)


def weighted(spec: FilterSpec, scores: dict[str, int]) -> float:
    return round(sum(d.weight * scores[d.name] for d in spec.dimensions), 3)


def copy_filter(tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name
    shutil.copytree(FILTER_DIR, dest)
    return dest


# ----------------------------------------------------------------------------- happy path and cache
def test_happy_path_labels_every_record(tmp_path, srv, records, api_key):
    metrics = run_label(tmp_path, srv)

    rows = read_rows(tmp_path / "labels" / "labels.jsonl")
    assert [r["id"] for r in rows] == [r["id"] for r in records]  # input order
    assert (tmp_path / "labels" / "invalid.jsonl").read_text() == ""
    bodies = {first_user_message(b): b for b in srv.requests}
    for row in rows:
        assert set(row["scores"]) == set(DIMS) and len(DIMS) == 8
        assert all(isinstance(v, int) and 0 <= v <= 10 for v in row["scores"].values())
        assert row["label"] == {**row["scores"], "reasoning": row["label"]["reasoning"]}
        assert row["label"]["reasoning"]
        # the project computes overall and tier from the filter, never the oracle
        assert row["overall"] == weighted(SPEC, row["scores"])
        assert row["tier"] == SPEC.tier_for(row["overall"])
        assert row["attempts"] == 1 and row["oracle"] == f"openai:{MODEL}"
        # the label is exactly what the server answered for this prompt
        assert row["label"] == default_label(bodies[row["messages"][1]["content"]])
        assert row["usage"]["input_tokens"] > 0 and row["usage"]["output_tokens"] > 0

    assert metrics == json.loads((tmp_path / "label.json").read_text())
    assert metrics["records"] == metrics["requests"] == metrics["valid"] == N
    assert metrics["cache_hits"] == 0 and metrics["invalid"] == 0 and metrics["provider_errors"] == 0
    assert metrics["input_tokens"] == sum(r["usage"]["input_tokens"] for r in rows)
    assert metrics["output_tokens"] == sum(r["usage"]["output_tokens"] for r in rows)
    assert cached_answers(tmp_path) == N

    # what the SDK sent: one request per record, with the filter's schema and our generation params
    assert srv.count == N
    by_prompt = {}
    for body in srv.requests:
        assert body["model"] == MODEL
        assert body["temperature"] == 0.0 and body["max_tokens"] == 300 and body["seed"] == 7
        assert body["response_format"] == {
            "type": "json_schema", "json_schema": {"name": "label", "schema": SPEC.json_schema, "strict": True},
        }
        by_prompt[body["messages"][1]["content"]] = body["messages"]
    for record in records:
        rendered = SPEC.render({**record, "text": compress(record["text"], 200)})
        assert by_prompt[rendered[1]["content"]] == rendered
    assert set(srv.authorizations) == {f"Bearer {api_key}"}


def test_rerun_with_same_cache_is_free_and_identical(tmp_path, srv, records, api_key):
    run_label(tmp_path, srv)
    first = (tmp_path / "labels" / "labels.jsonl").read_bytes()
    srv.reset()

    metrics = run_label(tmp_path, srv)

    assert srv.count == 0
    assert (tmp_path / "labels" / "labels.jsonl").read_bytes() == first
    assert metrics["cache_hits"] == N and metrics["requests"] == 0 and metrics["valid"] == N
    assert metrics["cached_input_tokens"] > 0 and metrics["input_tokens"] == 0


# ----------------------------------------------------------------------------- validation and re-asking
@pytest.mark.parametrize("how, expected", [
    ("out_of_range", "11 is greater than the maximum of 10"),
    ("missing_key", "is a required property"),
])
def test_retry_feeds_the_validation_error_back(tmp_path, srv, records, api_key, how, expected):
    srv.responder = lambda body: Reply.schema_violation(body, how) if turn(body) == 0 else default_label(body)

    metrics = run_label(tmp_path, srv)

    rows = read_rows(tmp_path / "labels" / "labels.jsonl")
    assert len(rows) == N and all(r["attempts"] == 2 for r in rows)
    assert metrics["requests"] == metrics["attempts"] == 2 * N and metrics["valid"] == N
    assert srv.count == 2 * N
    for title, (first, second) in by_title(srv).items():
        bad = Reply.schema_violation(first, how).content
        assert second["messages"][:2] == first["messages"]
        assert second["messages"][2] == {"role": "assistant", "content": bad}
        feedback = second["messages"][3]
        assert feedback["role"] == "user" and "(schema)" in feedback["content"]
        assert expected in feedback["content"] and DIMS[0] in feedback["content"]
        row = next(r for r in rows if r["title"] == title)
        assert row["label"] == default_label(second)
        assert row["overall"] == weighted(SPEC, row["scores"])


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_all_attempts_bad_ends_in_invalid(tmp_path, srv, records, api_key, max_attempts):
    target = records[5]["title"]

    def responder(body):
        if prompt_title(body) == target:
            return Reply.schema_violation(body, "missing_key")
        return default_label(body)

    srv.responder = responder
    metrics = run_label(tmp_path, srv, label_kw={"max_attempts": max_attempts})

    assert len(by_title(srv)[target]) == max_attempts
    assert srv.count == N - 1 + max_attempts
    rows = read_rows(tmp_path / "labels" / "labels.jsonl")
    assert len(rows) == N - 1 and target not in {r["title"] for r in rows}
    [invalid] = read_rows(tmp_path / "labels" / "invalid.jsonl")
    assert invalid["id"] == records[5]["id"] and invalid["reason"] == "schema"
    assert [a["attempt"] for a in invalid["attempts"]] == list(range(1, max_attempts + 1))
    for attempt, body in zip(invalid["attempts"], by_title(srv)[target]):
        assert attempt["reason"] == "schema" and "required property" in attempt["detail"]
        assert attempt["text"] == Reply.schema_violation(body, "missing_key").content
        assert attempt["cached"] is False
    assert metrics["invalid"] == 1 and metrics["invalid_reasons"] == {"schema": 1}
    assert metrics["valid"] == N - 1 and metrics["requests"] == N - 1 + max_attempts


def _fault(kind: str, body: dict) -> Reply:
    if kind == "truncated":
        return Reply.truncated(body)
    if kind == "empty":
        return Reply.empty("")
    if kind == "null":
        return Reply.empty(None)
    return Reply.malformed("Sure! Here is the rating: deployment_stage=7, scale=3")


@pytest.mark.parametrize("kind, reason", [
    ("truncated", "truncated"), ("empty", "empty"), ("null", "empty"), ("bad_json", "bad_json"),
])
def test_bad_answers_are_reasked_then_recover(tmp_path, srv, records, api_key, kind, reason):
    stuck = records[0]["title"]  # answers badly every time

    def responder(body):
        if turn(body) == 0 or prompt_title(body) == stuck:
            return _fault(kind, body)
        return default_label(body)

    srv.responder = responder
    metrics = run_label(tmp_path, srv, label_kw={"max_attempts": 2})

    rows = read_rows(tmp_path / "labels" / "labels.jsonl")
    assert len(rows) == N - 1 and all(r["attempts"] == 2 for r in rows)
    for bodies in by_title(srv).values():
        assert len(bodies) == 2
        assert f"not accepted ({reason})" in bodies[1]["messages"][-1]["content"]
        assert bodies[1]["messages"][-2] == {"role": "assistant", "content": _fault(kind, bodies[0]).content or ""}
    [invalid] = read_rows(tmp_path / "labels" / "invalid.jsonl")
    assert invalid["id"] == records[0]["id"]
    assert invalid["reason"] == reason and [a["reason"] for a in invalid["attempts"]] == [reason, reason]
    if kind == "truncated":
        assert all(a["finish_reason"] == "length" for a in invalid["attempts"])
    assert metrics["invalid_reasons"] == {reason: 1} and metrics["valid"] == N - 1


# ----------------------------------------------------------------------------- transport failures
@pytest.mark.parametrize("fault", [
    Reply.error(500, retry_after=0.01), Reply.rate_limited(retry_after=0.01),
], ids=["500", "429"])
def test_transient_http_errors_are_retried_by_the_sdk(tmp_path, srv, records, api_key, fault):
    seen: set[str] = set()

    def responder(body):
        prompt = first_user_message(body)
        if prompt not in seen:
            seen.add(prompt)
            return fault
        return default_label(body)

    srv.responder = responder
    metrics = run_label(tmp_path, srv, sdk_max_retries=2)

    assert srv.count == 2 * N
    assert Counter(r.headers.get("x-stainless-retry-count") for r in srv.received) == {"0": N, "1": N}
    assert metrics["requests"] == N and metrics["valid"] == N and metrics["provider_errors"] == 0
    assert len(read_rows(tmp_path / "labels" / "labels.jsonl")) == N


def test_permanent_http_error_fails_the_stage_and_rerun_retries_only_what_failed(
    tmp_path, srv, records, api_key
):
    broken = {records[i]["title"] for i in (2, 9, 17)}

    def responder(body):
        if prompt_title(body) in broken:
            return Reply.error(500, retry_after=0.01, message="upstream exploded")
        return default_label(body)

    srv.responder = responder
    with pytest.raises(DistillError) as err:  # one engine retry per request: two tries each
        run_label(tmp_path, srv, label_kw={"transport_retries": 1})

    message = str(err.value)
    assert "HTTP 500" in message and "upstream exploded" in message
    assert "3 record(s) got no answer" in message and "rerun" in message and "only what failed" in message
    assert {t: len(b) for t, b in by_title(srv).items() if t in broken} == dict.fromkeys(broken, 2)
    assert cached_answers(tmp_path) == N - 3  # what was answered is cached
    metrics = json.loads((tmp_path / "label.json").read_text())
    assert metrics["provider_errors"] == 3 and metrics["valid"] == N - 3
    invalid = read_rows(tmp_path / "labels" / "invalid.jsonl")
    assert sorted(r["reason"] for r in invalid) == ["provider_error"] * 3

    # the server recovers: a rerun asks only for the three that failed
    srv.reset()
    srv.responder = default_label
    metrics = run_label(tmp_path, srv, label_kw={"transport_retries": 1})

    assert srv.count == 3 and {prompt_title(b) for b in srv.requests} == broken
    assert metrics["requests"] == 3 and metrics["cache_hits"] == N - 3 and metrics["valid"] == N
    resumed = (tmp_path / "labels" / "labels.jsonl").read_bytes()
    # ... and ends exactly where an uninterrupted run into a fresh cache ends
    clean = tmp_path / "clean"
    clean.mkdir()
    shutil.copy(tmp_path / "passed.jsonl", clean / "passed.jsonl")
    run_label(clean, srv)
    assert (clean / "labels" / "labels.jsonl").read_bytes() == resumed


def test_server_down_stops_early_with_an_actionable_error(tmp_path, srv, api_key):
    write_articles(tmp_path / "passed.jsonl", 30)
    srv.responder = lambda body: Reply.error(503, retry_after=0.01, message="service unavailable")

    with pytest.raises(DistillError) as err:
        run_label(tmp_path, srv, sdk_max_retries=0)

    message = str(err.value)
    assert "HTTP 503" in message and "rerun" in message
    assert srv.count < 30  # it stopped instead of hammering a dead server with every record
    assert not (tmp_path / "labels" / "labels.jsonl").exists()


# ----------------------------------------------------------------------------- structured output modes
@pytest.mark.parametrize("mode", ["json_object", "none"])
def test_structured_output_modes_are_still_validated(tmp_path, srv, records, api_key, mode):
    violator, fenced = records[3]["title"], records[4]["title"]

    def responder(body):
        title = prompt_title(body)
        if title == violator and turn(body) == 0:
            return Reply.schema_violation(body, "out_of_range")
        if title == fenced:
            return "Here is my rating:\n```json\n" + json.dumps(default_label(body)) + "\n```"
        return default_label(body)

    srv.responder = responder
    metrics = run_label(tmp_path, srv, structured_output=mode)

    for body in srv.requests:
        if mode == "json_object":
            assert body["response_format"] == {"type": "json_object"}
        else:
            assert "response_format" not in body
    rows = {r["title"]: r for r in read_rows(tmp_path / "labels" / "labels.jsonl")}
    assert len(rows) == N and metrics["valid"] == N
    assert rows[violator]["attempts"] == 2 and rows[fenced]["attempts"] == 1
    assert set(rows[fenced]["scores"]) == set(DIMS)
    assert srv.count == N + 1


# ----------------------------------------------------------------------------- the cache key
def test_prompt_change_misses_scoring_change_hits(tmp_path, srv, records, api_key):
    run_label(tmp_path, srv)
    base = {r["id"]: r for r in read_rows(tmp_path / "labels" / "labels.jsonl")}
    assert srv.count == N

    # a different prompt template is a different question: every record is asked again
    edited = copy_filter(tmp_path, "edited_prompt")
    prompt = edited / "prompt.md"
    prompt.write_text(prompt.read_text().replace("Rate the article", "Carefully rate the article"))
    metrics = run_label(tmp_path, srv, spec=load_filter(edited), out="labels_prompt")
    assert srv.count == 2 * N and metrics["requests"] == N and metrics["cache_hits"] == 0

    # weights and tier thresholds are applied by the project afterwards: nothing is asked again
    rescored = copy_filter(tmp_path, "rescored")
    raw = yaml.safe_load((rescored / "filter.yaml").read_text())
    for dim in raw["dimensions"]:
        dim["weight"] = 0.65 if dim["name"] == "deployment_stage" else 0.05
    for tier, threshold in zip(raw["tiers"], [8.0, 6.0, 4.0, 0]):
        tier["min_score"] = threshold
    (rescored / "filter.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    spec2 = load_filter(rescored)
    assert spec2.json_schema == SPEC.json_schema

    metrics = run_label(tmp_path, srv, spec=spec2, out="labels_rescored")
    assert srv.count == 2 * N
    assert metrics["requests"] == 0 and metrics["cache_hits"] == N
    rows = read_rows(tmp_path / "labels_rescored" / "labels.jsonl")
    for row in rows:
        old = base[row["id"]]
        assert row["scores"] == old["scores"] and row["label"] == old["label"]
        assert row["overall"] == weighted(spec2, row["scores"])
        assert row["tier"] == spec2.tier_for(row["overall"])
    assert any(r["overall"] != base[r["id"]]["overall"] for r in rows)
    assert any(r["tier"] != base[r["id"]]["tier"] for r in rows)


# ----------------------------------------------------------------------------- keys and secrets
def test_missing_key_fails_before_any_request(tmp_path, srv, records, monkeypatch):
    monkeypatch.delenv("SOME_UNSET_VAR", raising=False)
    cfg = oracle_cfg(srv, api_key_env="SOME_UNSET_VAR")

    with pytest.raises(ConfigError, match="SOME_UNSET_VAR"):
        make_provider(cfg)
    with pytest.raises(ConfigError, match="SOME_UNSET_VAR"):
        pipeline.label(label_cfg(tmp_path), cfg, SPEC, tmp_path / "passed.jsonl", metrics_dir=tmp_path)

    assert srv.count == 0
    assert not (tmp_path / "cache").exists() and not (tmp_path / "labels").exists()


def test_the_key_is_used_but_never_written_or_logged(tmp_path, srv, records, api_key, caplog, capfd):
    caplog.set_level(logging.DEBUG)  # as chatty as it gets, the SDK's own debug logs included
    failing, invalid = records[1]["title"], records[2]["title"]

    def responder(body):
        if prompt_title(body) == failing:
            return Reply.error(500, retry_after=0.01)
        if prompt_title(body) == invalid:
            return Reply.malformed()
        return default_label(body)

    srv.responder = responder
    with pytest.raises(DistillError):
        run_label(tmp_path, srv, sdk_max_retries=1)
    srv.responder = default_label
    run_label(tmp_path, srv)  # the rerun after recovery

    assert set(srv.authorizations) == {f"Bearer {api_key}"}  # the key was really used
    needle = api_key.encode()
    scanned = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in scanned) and any(p.name == "label.json" for p in scanned)
    leaks = [str(p) for p in scanned if needle in p.read_bytes()]
    assert leaks == []
    out, err = capfd.readouterr()
    assert api_key not in out and api_key not in err
    assert caplog.records and api_key not in caplog.text
    assert all(api_key not in str(r.args) for r in caplog.records)


@pytest.mark.parametrize("raw", [
    b"<html>502 Bad Gateway</html>",
    b'{"error": {"message": "Provider returned error", "code": 502}}',  # OpenRouter does this
], ids=["not_json", "error_in_200_body"])
def test_a_200_that_is_not_an_answer_is_a_provider_error_never_cached(
    tmp_path, srv, records, api_key, raw
):
    broken = records[6]["title"]
    srv.responder = lambda body: Reply(raw_body=raw) if prompt_title(body) == broken else default_label(body)

    with pytest.raises(DistillError, match="1 record"):
        run_label(tmp_path, srv)

    [invalid] = read_rows(tmp_path / "labels" / "invalid.jsonl")
    assert invalid["reason"] == "provider_error" and invalid["id"] == records[6]["id"]
    assert cached_answers(tmp_path) == N - 1  # the non-answer was not cached as an answer
    srv.reset()
    srv.responder = default_label
    metrics = run_label(tmp_path, srv)
    assert srv.count == 1 and prompt_title(srv.requests[0]) == broken
    assert metrics["valid"] == N and metrics["requests"] == 1
