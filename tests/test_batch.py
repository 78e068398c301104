"""Batch mode (``label.mode=batch``) end to end over real HTTP, for OpenAI and Gemini.

The official SDKs talk to fake servers on 127.0.0.1 that add the batch APIs to the online fakes
(``tests/fakes/openai_batch_server.py``, ``tests/fakes/gemini_batch_server.py``). Batch mode fills
the response cache under the online engine's keys; the online pass of ``pipeline.label`` then
writes ``labels.jsonl`` from the cache without a request, byte for byte what an online run writes.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from distill import pipeline
from distill.config import LabelConfig
from distill.errors import ConfigError, DistillError
from distill.filterspec import load_filter
from distill.labeling.batch import run_batch
from distill.labeling.ledger import Ledger, ledger_path
from distill.providers import ProviderConfig, oracle_config
from distill.providers.gemini import GeminiProvider
from tests.fakes import gemini_server, openai_server
from tests.fakes.articles import write_articles
from tests.fakes.gemini_batch_server import FakeGeminiBatch
from tests.fakes.openai_batch_server import FakeOpenAIBatch

SPEC = load_filter("filters/sustainability_tech_deployment/v1")
N = 8
KEY_ENVS = {"openai": "DISTILL_TEST_OPENAI_KEY", "gemini": "DISTILL_TEST_GEMINI_KEY"}

pytestmark = pytest.mark.timeout(120)


class _LabelConfig(LabelConfig):
    """LabelConfig plus the batch settings, until LabelConfig declares them itself."""

    batch_chunk_size: int = 5000
    batch_poll_s: float = 30.0
    batch_timeout_s: float | None = None
    batch_max_resubmits: int = 3


def label_cfg(tmp_path: Path, name: str = "batch", **kw: Any) -> LabelConfig:
    base = {
        "mode": "batch",
        "max_words": 200,
        "max_attempts": 3,
        "concurrency": 4,
        "progress": "off",
        "cache_path": str(tmp_path / name / "cache" / "llm.sqlite"),
        "output_dir": str(tmp_path / name / "labels"),
        "batch_poll_s": 0.02,
    }
    fields = {**base, **kw}
    batch_fields = {k for k in fields if k.startswith("batch_")}
    cls = LabelConfig if batch_fields <= set(LabelConfig.model_fields) else _LabelConfig
    return cls(**fields)


# ------------------------------------------------------------ one harness per provider
@dataclass
class Harness:
    """What differs between the two providers' fakes."""

    provider: str
    srv: Any
    fakes: Any  # the online fake's module: Reply, default_label, turn, prompt_title, user_messages

    def oracle(self, **kw: Any) -> ProviderConfig:
        base = {
            "provider": self.provider,
            "model": f"fake-{self.provider}",
            "base_url": self.srv.base_url,
            "api_key_env": KEY_ENVS[self.provider],
            "max_tokens": 300,
            "seed": 7,
            "request_timeout_s": 30,
            "price": {"input_per_mtok": 2.0, "output_per_mtok": 8.0, "batch_discount": 0.5},
        }
        return oracle_config(**{**base, **kw})

    def key_of(self, item: dict[str, Any]) -> str:
        return item["custom_id"] if self.provider == "openai" else item["metadata"]["key"]

    def body_of(self, item: dict[str, Any]) -> dict[str, Any]:
        return item["body"] if self.provider == "openai" else item["request"]

    def fail_items(self, predicate: Callable[[str], bool]) -> None:
        """Items whose key matches come back as errors (no answer)."""
        if self.provider == "openai":
            self.srv.fail_item = lambda key, body: "server_error" if predicate(key) else None
        else:
            self.srv.fail_item = lambda meta, body: (
                "fake internal error" if predicate(meta["key"]) else None
            )

    def submitted_keys(self) -> list[list[str]]:
        """The request keys of each batch, in submission order."""
        return self.srv.submitted


@pytest.fixture(autouse=True)
def fast_gemini_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GeminiProvider, "retry_initial_delay_s", 0.01)
    monkeypatch.setattr(GeminiProvider, "retry_max_delay_s", 0.05)
    monkeypatch.setattr(GeminiProvider, "retry_jitter_s", 0.0)


@pytest.fixture(params=["openai", "gemini"])
def h(request, monkeypatch: pytest.MonkeyPatch):
    provider = request.param
    monkeypatch.setenv(KEY_ENVS[provider], f"key-{uuid.uuid4().hex}")
    cls, fakes = (
        (FakeOpenAIBatch, openai_server)
        if provider == "openai"
        else (FakeGeminiBatch, gemini_server)
    )
    with cls() as srv:
        yield Harness(provider, srv, fakes)
    assert not srv.responder_errors, srv.responder_errors
    assert not srv.other_requests, [(r.method, r.path) for r in srv.other_requests]


@pytest.fixture
def records(tmp_path: Path) -> list[dict[str, Any]]:
    return write_articles(tmp_path / "passed.jsonl", N)


def run(
    tmp_path: Path, h: Harness, name: str = "batch", oracle_kw: dict | None = None, **kw: Any
) -> dict:
    return pipeline.label(
        label_cfg(tmp_path, name, **kw),
        h.oracle(**(oracle_kw or {})),
        SPEC,
        tmp_path / "passed.jsonl",
        metrics_dir=tmp_path / name,
    )


def labels(tmp_path: Path, name: str = "batch") -> bytes:
    return (tmp_path / name / "labels" / "labels.jsonl").read_bytes()


def rows(tmp_path: Path, name: str = "batch") -> list[dict[str, Any]]:
    return [json.loads(line) for line in labels(tmp_path, name).decode().splitlines()]


def ledger_rows(tmp_path: Path, name: str = "batch") -> list[dict[str, Any]]:
    ledger = Ledger(ledger_path(tmp_path / name / "cache" / "llm.sqlite"))
    try:
        return ledger.jobs()
    finally:
        ledger.close()


# ------------------------------------------------------------ the happy path
def test_batch_fills_the_cache_and_the_online_pass_is_free_and_identical(tmp_path, h, records):
    run(tmp_path, h, "online", mode="online")
    online_bodies = sorted(json.dumps(b, sort_keys=True) for b in h.srv.requests)
    h.srv.reset()

    metrics = run(tmp_path, h)

    assert h.srv.count == 0  # the online pass asked nothing: every answer came from the batch
    assert labels(tmp_path) == labels(tmp_path, "online")
    assert metrics["cache_hits"] == N and metrics["requests"] == 0 and metrics["valid"] == N
    assert h.srv.submissions == 1 and h.srv.items == N
    # each batch request is the very body the online provider sends
    batch_bodies = sorted(json.dumps(h.body_of(i), sort_keys=True) for i in h.srv.batch_requests)
    assert batch_bodies == online_bodies
    assert len(set(map(h.key_of, h.srv.batch_requests))) == N
    jobs = ledger_rows(tmp_path)
    assert [(j["state"], j["collected"], j["items"], j["answered"], j["round"]) for j in jobs] == [
        ("completed", 1, N, N, 1)
    ]
    if h.provider == "openai":
        calls = [(c.method, c.path.split("/")[2]) for c in h.srv.api_calls]
        assert calls[:2] == [("POST", "files"), ("POST", "batches")]
        assert len(h.srv.uploads) == 1 and h.srv.uploads[0].count(b"\n") == N
    # a second batch run has nothing left to submit
    run(tmp_path, h)
    assert h.srv.submissions == 1 and h.srv.count == 0


def test_run_batch_reports_counts_and_the_discounted_cost(tmp_path, h, records):
    cfg = label_cfg(tmp_path)
    result = run_batch(cfg, h.oracle(), SPEC, tmp_path / "passed.jsonl")

    assert result["jobs_submitted"] == 1 and result["requests_submitted"] == result["answers"] == N
    assert result["records"] == result["records_valid"] == N and result["pending_jobs"] == 0
    assert result["rounds"] == 1 and result["jobs_completed"] == 1 and result["items_failed"] == 0
    metrics = pipeline.label(cfg, h.oracle(), SPEC, tmp_path / "passed.jsonl", metrics_dir=tmp_path)
    # the tokens the online pass read back from the cache are the ones the batch was billed for
    assert result["input_tokens"] == metrics["cached_input_tokens"] > 0
    assert result["output_tokens"] == metrics["cached_output_tokens"] > 0
    full = (2.0 * result["input_tokens"] + 8.0 * result["output_tokens"]) / 1e6
    assert result["full_price_usd"] == pytest.approx(full, rel=1e-5)
    assert result["cost_usd"] == pytest.approx(0.5 * full, rel=1e-5)
    assert result["saved_usd"] == pytest.approx(0.5 * full, rel=1e-5)
    assert result["by_provider"][f"{h.provider}:fake-{h.provider}"]["requests"] == N


def test_requests_are_chunked(tmp_path, h, records):
    run(tmp_path, h, batch_chunk_size=3)

    assert [len(keys) for keys in h.submitted_keys()] == [3, 3, 2]
    assert h.srv.count == 0 and len(rows(tmp_path)) == N
    assert sorted(j["items"] for j in ledger_rows(tmp_path)) == [2, 3, 3]


# ------------------------------------------------------------ rounds and resubmission
def test_content_failures_go_into_a_follow_up_batch_with_the_validation_error(tmp_path, h, records):
    fakes = h.fakes
    bad = {r["title"] for r in records[:3]}

    def responder(body):
        if fakes.prompt_title(body) in bad and fakes.turn(body) == 0:
            return fakes.Reply.schema_violation(body)
        return fakes.default_label(body)

    h.srv.responder = responder
    run(tmp_path, h, "online", mode="online")
    h.srv.reset()

    run(tmp_path, h)

    assert h.srv.count == 0
    assert labels(tmp_path) == labels(tmp_path, "online")
    assert [len(keys) for keys in h.submitted_keys()] == [N, 3]
    follow_ups = [h.body_of(i) for i in h.srv.batch_requests[N:]]
    assert {fakes.prompt_title(b) for b in follow_ups} == bad
    for body in follow_ups:
        assert fakes.turn(body) == 1
        feedback = fakes.user_messages(body)[-1]
        assert (
            "not accepted (schema)" in feedback
            and "11 is greater than the maximum of 10" in feedback
        )
    assert {r["title"]: r["attempts"] for r in rows(tmp_path)} == {
        r["title"]: 2 if r["title"] in bad else 1 for r in records
    }
    assert [j["round"] for j in ledger_rows(tmp_path)] == [1, 2]


def test_a_record_that_never_validates_ends_invalid_after_max_attempts(tmp_path, h, records):
    target = records[2]["title"]
    fakes = h.fakes
    h.srv.responder = lambda b: (
        fakes.Reply.malformed() if fakes.prompt_title(b) == target else fakes.default_label(b)
    )

    run(tmp_path, h, max_attempts=2)

    assert [len(keys) for keys in h.submitted_keys()] == [N, 1]
    assert h.srv.count == 0 and len(rows(tmp_path)) == N - 1
    invalid = [
        json.loads(x)
        for x in (tmp_path / "batch" / "labels" / "invalid.jsonl").read_text().splitlines()
    ]
    assert [(r["reason"], len(r["attempts"])) for r in invalid] == [("bad_json", 2)]


def test_failed_items_are_resubmitted_and_only_those(tmp_path, h, records):
    failing: set[str] = set()

    def predicate(key: str) -> bool:  # the 2nd and 5th request fail once
        if len(failing) < 2 and h.srv.items in (2, 5):
            failing.add(key)
            return True
        return False

    h.fail_items(predicate)
    if h.provider == "openai":  # and one answer comes back as an HTTP error in the error file
        h.srv.item_faults[7] = openai_server.Reply.error(500)

    result = run_batch(label_cfg(tmp_path), h.oracle(), SPEC, tmp_path / "passed.jsonl")

    first, second = h.submitted_keys()
    expected = failing | ({first[6]} if h.provider == "openai" else set())
    assert len(first) == N and set(second) == expected and len(second) == len(expected)
    assert result["items_failed"] == len(expected) and result["answers"] == N
    pipeline.label(
        label_cfg(tmp_path), h.oracle(), SPEC, tmp_path / "passed.jsonl", metrics_dir=tmp_path
    )
    assert h.srv.count == 0 and len(rows(tmp_path)) == N


@pytest.mark.parametrize("outcome", ["expired", "failed"])
def test_items_of_a_failed_or_expired_job_are_resubmitted_and_only_those(
    tmp_path, h, records, outcome
):
    h.srv.job_outcomes[1] = outcome
    h.srv.partial_items = 1  # an expired job still answered its first request

    result = run_batch(
        label_cfg(tmp_path, batch_chunk_size=4), h.oracle(), SPEC, tmp_path / "passed.jsonl"
    )

    job1, job2, retry = h.submitted_keys()
    answered = job1[:1] if outcome == "expired" else []
    assert len(job1) == len(job2) == 4 and retry == [k for k in job1 if k not in answered]
    assert result[f"jobs_{outcome}"] == 1 and result["items_failed"] == 4 - len(answered)
    assert sorted(j["state"] for j in ledger_rows(tmp_path)) == sorted(
        [outcome, "completed", "completed"]
    )
    pipeline.label(
        label_cfg(tmp_path), h.oracle(), SPEC, tmp_path / "passed.jsonl", metrics_dir=tmp_path
    )
    assert h.srv.count == 0 and len(rows(tmp_path)) == N


def test_requests_failing_in_every_batch_stop_the_run_with_the_error(tmp_path, h, records):
    target: list[str] = []

    def predicate(key: str) -> bool:
        if not target:
            target.append(key)
        return key == target[0]

    h.fail_items(predicate)

    with pytest.raises(
        DistillError, match=r"1 record\(s\) still have no answer after 2 batch submissions"
    ):
        run(tmp_path, h, batch_max_resubmits=1)

    assert [len(keys) for keys in h.submitted_keys()] == [N, 1]
    assert h.srv.count == 0 and not (tmp_path / "batch" / "labels" / "labels.jsonl").exists()
    h.srv.fail_item = None  # the provider recovers: a rerun submits only that request
    run(tmp_path, h, batch_max_resubmits=1)
    assert [len(keys) for keys in h.submitted_keys()] == [N, 1, 1]
    assert h.srv.count == 0 and len(rows(tmp_path)) == N


# ------------------------------------------------------------ pending jobs and restarts
def test_a_timeout_leaves_jobs_pending_and_a_rerun_polls_them(tmp_path, h, records):
    h.srv.polls_to_complete = 10**6  # never finishes while the first run waits

    with pytest.raises(
        DistillError, match=r"1 batch job\(s\) still pending .* rerun the stage to poll them"
    ):
        run(tmp_path, h, batch_timeout_s=0.2)

    assert h.srv.submissions == 1 and h.srv.polls >= 2
    assert not (tmp_path / "batch" / "labels" / "labels.jsonl").exists()
    [job] = ledger_rows(tmp_path)  # the ledger is on disk: a new process finds the job there
    assert job["state"] == "pending" and job["collected"] == 0 and job["items"] == N
    assert job["detail"] == ("in_progress" if h.provider == "openai" else "JOB_STATE_RUNNING")

    # a rerun that times out again still submits nothing
    with pytest.raises(DistillError, match="still pending"):
        run(tmp_path, h, batch_timeout_s=0.1)
    assert h.srv.submissions == 1

    h.srv.polls_to_complete = 0  # the provider finishes the job
    result = run_batch(label_cfg(tmp_path), h.oracle(), SPEC, tmp_path / "passed.jsonl")

    assert h.srv.submissions == 1 and h.srv.items == N
    assert result["jobs_resumed"] == 1 and result["jobs_submitted"] == 0 and result["answers"] == N
    [job] = ledger_rows(tmp_path)
    assert job["state"] == "completed" and job["collected"] == 1 and job["answered"] == N
    run(tmp_path, h)
    assert h.srv.count == 0 and len(rows(tmp_path)) == N and h.srv.submissions == 1


def test_a_rerun_submits_what_is_not_in_a_pending_job(tmp_path, h, records):
    h.srv.polls_to_complete = 10**6
    with pytest.raises(DistillError, match="still pending"):
        run(tmp_path, h, batch_timeout_s=0.1)
    (tmp_path / "passed.jsonl").write_text(  # two more records arrive before the rerun
        (tmp_path / "passed.jsonl").read_text()
        + "".join(
            json.dumps(r) + "\n" for r in write_articles(tmp_path / "more.jsonl", N + 2, "new")[N:]
        )
    )
    h.srv.polls_to_complete = 0

    run(tmp_path, h)

    assert [len(keys) for keys in h.submitted_keys()] == [N, 2]
    assert h.srv.count == 0 and len(rows(tmp_path)) == N + 2


# ------------------------------------------------------------ configuration and money
def test_a_missing_key_fails_before_any_upload(tmp_path, h, records, monkeypatch):
    monkeypatch.delenv(KEY_ENVS[h.provider])

    with pytest.raises(ConfigError, match=KEY_ENVS[h.provider]):
        run(tmp_path, h)

    assert h.srv.api_calls == [] and h.srv.submissions == 0 and h.srv.count == 0
    assert not ledger_path(tmp_path / "batch" / "cache" / "llm.sqlite").exists()


def test_a_provider_without_a_batch_api_is_refused_before_any_work(tmp_path, records, monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_ANTHROPIC_KEY", "sk-ant-test")
    oracle = oracle_config(
        provider="anthropic", model="claude-fake", api_key_env="DISTILL_TEST_ANTHROPIC_KEY"
    )

    with pytest.raises(
        ConfigError, match=r"label\.mode=batch is not available for oracle\.provider=anthropic"
    ):
        pipeline.label(
            label_cfg(tmp_path), oracle, SPEC, tmp_path / "passed.jsonl", metrics_dir=tmp_path
        )

    assert not (tmp_path / "batch" / "cache").exists()


def test_the_budget_caps_what_is_submitted(tmp_path, h, records):
    # worst case per request: ~600 input tokens at $2/M plus 300 output at $8/M, halved: ~$0.0018
    with pytest.raises(DistillError, match="budget reached"):
        run(tmp_path, h, budget_usd=0.005)

    [keys] = h.submitted_keys()
    assert 0 < len(keys) < N
    assert h.srv.count == 0 and not (tmp_path / "batch" / "labels" / "labels.jsonl").exists()


def test_gemini_results_without_metadata_map_back_by_position(tmp_path, records, monkeypatch):
    monkeypatch.setenv(KEY_ENVS["gemini"], "AIza-test")
    with FakeGeminiBatch(echo_metadata=False) as srv:
        h = Harness("gemini", srv, gemini_server)
        run(tmp_path, h, "online", mode="online")
        srv.reset()
        run(tmp_path, h)
        assert srv.count == 0 and srv.submissions == 1
    assert labels(tmp_path) == labels(tmp_path, "online")


def test_the_ledger_is_a_plain_sqlite_file_next_to_the_cache(tmp_path, h, records):
    run(tmp_path, h, batch_chunk_size=5)

    path = tmp_path / "batch" / "cache" / "llm.sqlite.batches.sqlite"
    with sqlite3.connect(path) as db:
        jobs = db.execute(
            "SELECT job_id, backend, oracle, state FROM jobs ORDER BY created_at"
        ).fetchall()
        items = db.execute(
            "SELECT job_id, custom_id FROM job_items ORDER BY job_id, seq"
        ).fetchall()
    assert [(b, o, s) for _, b, o, s in jobs] == [
        (h.provider, f"{h.provider}:fake-{h.provider}", "completed")
    ] * 2
    submitted = h.submitted_keys()
    assert sorted(k for _, k in items) == sorted(k for keys in submitted for k in keys)


def test_a_mix_of_oracles_is_batched_per_oracle_as_the_online_pass_routes_it(
    tmp_path, records, monkeypatch
):
    for env in KEY_ENVS.values():
        monkeypatch.setenv(env, "test-key")
    with FakeOpenAIBatch() as osrv, FakeGeminiBatch() as gsrv:
        openai_h, gemini_h = (
            Harness("openai", osrv, openai_server),
            Harness("gemini", gsrv, gemini_server),
        )
        mix = {"mix": [gemini_h.oracle().model_dump()]}
        run(tmp_path, openai_h, "online", oracle_kw=mix, mode="online")
        online = (osrv.count, gsrv.count)
        osrv.reset()
        gsrv.reset()

        run(tmp_path, openai_h, oracle_kw=mix)

        assert osrv.count == gsrv.count == 0
        assert (osrv.items, gsrv.items) == online and osrv.items > 0 and gsrv.items > 0
        assert osrv.submissions == gsrv.submissions == 1
    assert labels(tmp_path) == labels(tmp_path, "online")
