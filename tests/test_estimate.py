"""``distill estimate``: requests, tokens, dollars and minutes of the label stage before it runs.

Against the real filter, a small passed.jsonl in tmp_path, the embedded model's tokenizer and a real
labelling run through the fake OpenAI server (whose ``prompt_tokens`` is the number of words sent).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from distill import jsonl, pipeline
from distill.compress import compress
from distill.config import section
from distill.filterspec import load_filter
from distill.labeling.estimate import DEFAULT_CHARS_PER_TOKEN, estimate, format_estimate
from distill.params import compose
from tests.fakes.articles import synthetic_articles
from tests.fakes.openai_server import FakeOpenAI, default_label, prompt_title, turn

ROOT = Path(__file__).resolve().parents[1]
SPEC = load_filter(ROOT / "filters" / "sustainability_tech_deployment" / "v1")
KEY_ENV = "DISTILL_TEST_ESTIMATE_KEY"
PASSED = Path("data/prefiltered/passed.jsonl")


# ----------------------------------------------------------------------------- helpers
def project(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    overrides: list[str],
    oracle: dict[str, Any] | None = None,
    label: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A project directory (params.yaml composed from conf/, a copy of filters/) as the cwd."""
    wd = tmp_path / "project"
    wd.mkdir()
    shutil.copytree(ROOT / "filters", wd / "filters")
    params = compose(ROOT / "conf", overrides)
    params["oracle"].update(oracle or {})
    params["label"].update(
        {
            "cache_path": ".distill/cache/llm.sqlite",
            "output_dir": "data/labels",
            "progress": "off",
            **(label or {}),
        }
    )
    (wd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    monkeypatch.chdir(wd)
    return params


def articles(n: int, start: int = 0) -> list[dict[str, Any]]:
    """Synthetic articles of varied length (every third one three times longer)."""
    rows = synthetic_articles(start + n)[start:]
    for i, r in enumerate(rows):
        if (start + i) % 3 == 0:
            r["text"] = " ".join([r["text"]] * 3)
    return rows


def rendered(records: list[dict[str, Any]], max_words: int) -> list[list[dict[str, str]]]:
    """The messages the label stage sends (compressed text, rendered template)."""
    return [SPEC.render({**r, "text": compress(r["text"], max_words)}) for r in records]


def chars(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"]) for m in messages)


def fake_oracle(srv: FakeOpenAI, **kw: Any) -> dict[str, Any]:
    return {
        "base_url": srv.base_url,
        "api_key_env": KEY_ENV,
        "model": "fake-estimate",
        "sdk_max_retries": 0,
        "request_timeout_s": 30,
        **kw,
    }


def label(params: dict[str, Any], input_path: Path) -> dict[str, Any]:
    """A real label-stage run (fake server, real SDK, real cache); returns its metrics."""
    return pipeline.label(
        section(params, "label"),
        section(params, "oracle"),
        SPEC,
        input_path,
        metrics_dir=Path("metrics"),
    )


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = "sk-test-" + uuid.uuid4().hex
    monkeypatch.setenv(KEY_ENV, key)
    return key


@pytest.fixture
def srv():
    with FakeOpenAI() as server:
        yield server
    assert not server.responder_errors, server.responder_errors


# ----------------------------------------------------------------------------- the local tokenizer
def test_local_oracle_is_counted_with_its_own_tokenizer(tmp_path, monkeypatch):
    params = project(tmp_path, monkeypatch, [])  # the default oracle: the embedded model
    records = articles(5)
    jsonl.write_jsonl(PASSED, records)
    est = estimate(params)
    o = est["oracles"][0]
    assert o["oracle"] == "local:SmolLM2-135M-Instruct"
    assert o["input_token_method"].startswith(
        "tokenizer: llama.cpp vocabulary of SmolLM2-135M-Instruct"
    )
    assert o["chars_per_token"] is None
    # nothing cached and no label history: one request a record, no re-asks assumed
    assert o["new_requests"] == 5 and o["cached_requests"] == 0 and o["reasks"] == 0
    assert "no re-asks assumed" in o["invalid_rate_from"]
    from distill.providers.local import LlamaTokenCounter

    counter = LlamaTokenCounter(Path(_gguf()))
    counts = [counter.count(m) for m in rendered(records, params["label"]["max_words"])]
    counter.close()
    assert o["new_input_tokens"] == sum(counts)
    # the chat template adds its markers: more than the content alone, far fewer than characters
    total_chars = sum(chars(m) for m in rendered(records, params["label"]["max_words"]))
    assert total_chars / 6 < sum(counts) < total_chars / 2
    assert counts[0] > counts[1]  # the first article is three times longer
    # no pilot: max_tokens x the factor; the local model has no price and no batch API
    assert o["mean_output_tokens"] == params["oracle"]["max_tokens"] * 0.5
    assert o["cost_usd"] == {"online": 0.0, "batch": None}
    assert "one llama.cpp context" in o["binding_limit"]
    assert o["minutes"] == pytest.approx(5 * 2.0 / 60, abs=1e-3)


def _gguf() -> str:
    from distill.providers.local import resolve_gguf

    return str(resolve_gguf(None))


@pytest.mark.slow
def test_local_tokenizer_counts_what_llama_cpp_reports(tmp_path, monkeypatch):
    """The embedded model itself answers two records: its prompt_tokens are the estimate's count."""
    import asyncio

    from distill.providers import ChatRequest, make_provider

    params = project(tmp_path, monkeypatch, [], oracle={"max_tokens": 16})
    records = articles(2, start=1)  # two short ones: prompt processing on 2 cores takes a while
    jsonl.write_jsonl(PASSED, records)
    est = estimate(params)
    provider = make_provider(section(params, "oracle"))
    reported = []
    for messages in rendered(records, params["label"]["max_words"]):
        request = ChatRequest(
            messages=messages, schema=SPEC.json_schema, temperature=0.0, max_tokens=16, seed=0
        )
        reported.append(asyncio.run(provider.complete(request)).input_tokens)
    assert est["oracles"][0]["new_input_tokens"] == sum(reported)


# ------------------------------------------------------------------- calibration from a real run
def test_calibrated_estimate_is_close_to_what_the_run_reports(tmp_path, monkeypatch, srv, api_key):
    params = project(tmp_path, monkeypatch, ["oracle=openai_gpt4o_mini"], oracle=fake_oracle(srv))
    records = articles(40)
    jsonl.write_jsonl(PASSED, records)
    jsonl.write_jsonl("first_half.jsonl", records[:20])
    first = label(params, Path("first_half.jsonl"))
    assert first["requests"] == 20 and first["valid"] == 20

    est = estimate(params)
    o = est["oracles"][0]
    assert est["records"] == 40 and o["records"] == 40
    assert o["cached_requests"] == 20 and o["new_requests"] == 20 and o["requests"] == 40
    # calibrated on the 20 cached answers: their prompts' characters over the tokens they reported
    messages = rendered(records, params["label"]["max_words"])
    cpt = sum(chars(m) for m in messages[:20]) / first["input_tokens"]
    assert o["chars_per_token"] == pytest.approx(cpt, rel=1e-3)
    assert o["input_token_method"].startswith(
        f"calibrated: {cpt:.2f} chars/token measured on 20 cached answer(s)"
    )
    assert o["new_input_tokens"] == pytest.approx(
        sum(chars(m) for m in messages[20:]) / cpt, rel=1e-3
    )
    assert o["output_token_method"] == "pilot: mean of 20 cached answer(s) for these records"
    assert o["mean_output_tokens"] == pytest.approx(first["output_tokens"] / 20, rel=1e-3)

    # dollars are tokens times the configured prices (cached requests cost nothing)
    price = params["oracle"]["price"]
    online = (
        o["new_input_tokens"] * price["input_per_mtok"]
        + o["new_output_tokens"] * price["output_per_mtok"]
    ) / 1e6
    assert o["cost_usd"]["online"] == pytest.approx(online, rel=1e-4)
    assert o["cost_usd"]["batch"] == pytest.approx(online * price["batch_discount"], rel=1e-4)

    # the run that follows pays for what the estimate said, within 15%
    second = label(params, PASSED)
    assert second["requests"] == 20 and second["cache_hits"] == 20
    assert abs(o["new_input_tokens"] - second["input_tokens"]) / second["input_tokens"] < 0.15
    assert abs(o["new_output_tokens"] - second["output_tokens"]) / second["output_tokens"] < 0.15
    assert (
        abs(o["input_tokens"] - (first["input_tokens"] + second["input_tokens"]))
        < 0.15 * o["input_tokens"]
    )

    # now everything is cached: free, and the token totals are the reported ones exactly
    again = estimate(params)["oracles"][0]
    assert again["cached_requests"] == 40 and again["new_requests"] == 0
    assert again["cost_usd"]["online"] == 0 and again["minutes"] == 0
    assert again["input_tokens"] == first["input_tokens"] + second["input_tokens"]
    assert again["output_tokens"] == first["output_tokens"] + second["output_tokens"]
    assert again["cost_usd_without_cache"] > 0

    # the command, in a process of its own, without the API key: the same numbers
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    proc = subprocess.run(
        [sys.executable, "-m", "distill.cli", "estimate", "--json"],
        cwd=Path.cwd(),
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["oracles"][0] == again
    proc = subprocess.run(
        [sys.executable, "-m", "distill.cli", "estimate"],
        cwd=Path.cwd(),
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "already cached (free)" in proc.stdout and "binding limit:" in proc.stdout
    assert "calibrated:" in proc.stdout and "openai:fake-estimate" in proc.stdout


def test_reasks_are_expected_from_the_cached_invalid_rate(tmp_path, monkeypatch, srv, api_key):
    """Two of ten records get an invalid first answer: p = 2 invalid of 12 answers = 1/6."""

    def responder(body):
        number = int(prompt_title(body).rsplit(" ", 1)[-1])
        if number % 5 == 0 and turn(body) == 0:
            return "this is not JSON"
        return default_label(body)

    srv.responder = responder
    params = project(
        tmp_path,
        monkeypatch,
        ["oracle=openai_gpt4o_mini"],
        oracle=fake_oracle(srv),
        label={"max_attempts": 3},
    )
    records = articles(20)
    jsonl.write_jsonl(PASSED, records)
    jsonl.write_jsonl("first_half.jsonl", records[:10])
    first = label(params, Path("first_half.jsonl"))
    assert first["requests"] == 12 and first["valid"] == 10

    o = estimate(params)["oracles"][0]
    p = 2 / 12
    assert o["invalid_rate"] == round(p, 4)
    assert o["invalid_rate_from"] == "2 of 12 cached answer(s) for these records invalid"
    assert (
        o["cached_requests"] == 12
    )  # the re-asks are found in the cache by following the conversation
    assert o["new_requests"] == pytest.approx(10 * (1 + p + p * p), abs=0.01)
    assert o["reasks"] == pytest.approx(2 + 10 * (p + p * p), abs=0.01)
    assert o["requests"] == pytest.approx(12 + 10 * (1 + p + p * p), abs=0.01)


# ------------------------------------------------------------------- no data: assumptions, said
def test_without_a_cache_the_defaults_are_used_and_named(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # no key is needed for an estimate
    params = project(tmp_path, monkeypatch, ["oracle=openai_gpt4o_mini"])
    records = articles(6)
    jsonl.write_jsonl(PASSED, records)
    est = estimate(params, output_factor=0.25)
    o = est["oracles"][0]
    total_chars = sum(chars(m) for m in rendered(records, params["label"]["max_words"]))
    assert o["input_token_method"].startswith(f"assumed {DEFAULT_CHARS_PER_TOKEN:g} chars/token")
    assert o["new_input_tokens"] == pytest.approx(total_chars / 4, abs=0.01)
    assert o["output_token_method"].startswith("assumed: oracle.max_tokens 384 x 0.25")
    assert o["new_output_tokens"] == 6 * 384 * 0.25
    assert not est["cache"]["found"] and not Path(".distill").exists()  # an estimate writes nothing
    assert "no response cache" in format_estimate(est)


def test_the_binding_limit_is_named(tmp_path, monkeypatch):
    params = project(tmp_path, monkeypatch, ["oracle=openai_gpt4o_mini"], label={"concurrency": 4})
    jsonl.write_jsonl(PASSED, articles(20))
    limits = params["oracle"]["limits"]  # rpm 500, tpm 200000, max_concurrency 16 (Tier 1)

    # 20 requests at 2 s with 4 in flight: 10 s; at 500 rpm 2.4 s: concurrency binds
    o = estimate(params)["oracles"][0]
    assert o["binding_limit"] == "concurrency 4 at 2 s a request"
    assert o["minutes"] == pytest.approx(20 * 2 / 4 / 60, abs=1e-3)

    limits.update(rpm=10)  # 20 requests at 10 a minute: 2 minutes
    o = estimate(params)["oracles"][0]
    assert o["binding_limit"] == "rpm 10" and o["minutes"] == 2.0
    assert set(o["minutes_by_limit"]) == {
        "concurrency 4 at 2 s a request",
        "rpm 10",
        "tpm 200000",
    }

    # the combined tpm counts each request's input and its whole max_tokens (384 here)
    limits.update(rpm=None, tpm=1000)
    o = estimate(params, latency_s=0.5)["oracles"][0]
    assert o["binding_limit"] == "tpm 1000"
    assert o["minutes"] == pytest.approx((o["new_input_tokens"] + 20 * 384) / 1000, abs=1e-3)

    limits.update(tpm=None, input_tpm=1000)
    o = estimate(params, latency_s=0.5)["oracles"][0]
    assert o["binding_limit"] == "input_tpm 1000"
    assert o["minutes"] == pytest.approx(o["new_input_tokens"] / 1000, abs=1e-3)

    limits.update(input_tpm=None, output_tpm=None, max_concurrency=2)  # the provider's cap wins
    o = estimate(params, latency_s=3.0)["oracles"][0]
    assert o["binding_limit"] == "concurrency 2 at 3 s a request"
    assert o["minutes"] == pytest.approx(20 * 3 / 2 / 60, abs=1e-3)
    assert "binding limit: concurrency 2 at 3 s a request" in format_estimate(
        estimate(params, latency_s=3.0)
    )


def test_an_oracle_mix_is_estimated_per_provider(tmp_path, monkeypatch):
    gemini = yaml.safe_load((ROOT / "conf" / "oracle" / "gemini_flash.yaml").read_text())
    params = project(
        tmp_path,
        monkeypatch,
        ["oracle=openai_gpt4o_mini"],
        oracle={"weight": 3.0, "mix": [{**gemini, "weight": 1.0}]},
    )
    jsonl.write_jsonl(PASSED, articles(40))
    est = estimate(params)
    a, b = est["oracles"]
    assert (a["oracle"], b["oracle"]) == ("openai:gpt-4o-mini", "gemini:gemini-2.5-flash")
    assert (
        a["records"] + b["records"] == 40 and a["records"] > b["records"] > 0
    )  # routed 3:1 by record
    for o, cfg in ((a, params["oracle"]), (b, gemini)):
        p = cfg["price"]
        online = (
            o["new_input_tokens"] * p["input_per_mtok"]
            + o["new_output_tokens"] * p["output_per_mtok"]
        ) / 1e6
        assert o["cost_usd"]["online"] == pytest.approx(online, rel=1e-4)
    t = est["total"]
    assert t["records"] == 40 and t["new_requests"] == 40
    assert t["cost_usd"]["online"] == pytest.approx(
        a["cost_usd"]["online"] + b["cost_usd"]["online"], abs=1e-6
    )
    table = format_estimate(est)
    assert "total" in table and "oracle.limits apply to the mix" in table


def test_missing_input_is_a_clear_error(tmp_path, monkeypatch):
    project(tmp_path, monkeypatch, [])
    proc = subprocess.run(
        [sys.executable, "-m", "distill.cli", "estimate"],
        cwd=Path.cwd(),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "passed.jsonl not found" in proc.stderr and "Traceback" not in proc.stderr
