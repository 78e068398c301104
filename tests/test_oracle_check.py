"""``distill oracle-check``: two oracles (or one asked twice) on one sample; the floor they set.

Both oracles are real providers over real HTTP (the official SDKs against the fake OpenAI and
Anthropic servers on 127.0.0.1) with scripted answers, so every expected number is worked out by
hand.
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
from distill.config import EvaluateConfig, SklearnStudent
from distill.errors import ConfigError
from distill.evaluate import format_table
from distill.filterspec import load_filter
from distill.labeling.oracle_check import (
    OracleCheckConfig,
    oracle_check,
    second_oracle,
    seeded_sample,
)
from distill.params import compose
from distill.providers import ProviderConfig, RateLimits, oracle_config
from distill.split import to_chat
from distill.students import train_student
from tests.fakes import anthropic_server, openai_server
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.articles import synthetic_articles
from tests.fakes.openai_server import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
SPEC = load_filter(ROOT / "filters" / "sustainability_tech_deployment" / "v1")
DIMS = SPEC.dimension_names  # deployment_stage (weight 0.25) first; the weights sum to 1
OPENAI_KEY = "DISTILL_TEST_CHECK_OPENAI_KEY"
ANTHROPIC_KEY = "DISTILL_TEST_CHECK_ANTHROPIC_KEY"
PASSED = Path("data/prefiltered/passed.jsonl")
AGREEMENT = Path("metrics/oracle_agreement.json")


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    keys = {
        OPENAI_KEY: "sk-test-" + uuid.uuid4().hex,
        ANTHROPIC_KEY: "sk-ant-test-" + uuid.uuid4().hex,
    }
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    return keys


def project(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    oracle: dict[str, Any],
    check: dict[str, Any] | None = None,
    label: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A project directory (params.yaml composed from conf/, a copy of filters/) as the cwd."""
    wd = tmp_path / "project"
    wd.mkdir()
    shutil.copytree(ROOT / "filters", wd / "filters")
    params = compose(ROOT / "conf", ["oracle=openai"])
    params["oracle"].update(oracle)
    params["label"].update(
        {
            "cache_path": ".distill/cache/llm.sqlite",
            "max_attempts": 2,
            "progress": "off",
            **(label or {}),
        }
    )
    if check is not None:
        params["oracle_check"] = check
    (wd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    monkeypatch.chdir(wd)
    return params


def openai_oracle(srv: FakeOpenAI, **kw: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "model": "fake-first",
        "base_url": srv.base_url,
        "api_key_env": OPENAI_KEY,
        "temperature": 0.0,
        "seed": 0,
        "max_tokens": 256,
        "request_timeout_s": 30,
        "sdk_max_retries": 0,
        **kw,
    }


def uniform(value: int, **other: int) -> dict[str, Any]:
    return {**{d: other.get(d, value) for d in DIMS}, "reasoning": "scripted"}


def number(title: str) -> int:
    return int(title.rsplit(" ", 1)[-1])


# ----------------------------------------------------------------------------- two oracles
def test_two_oracles_agreement_worked_out_by_hand(tmp_path, monkeypatch, keys):
    """Five records. First oracle (OpenAI): every dimension 8, 5, 3, 1, 7. Second (Anthropic):
    record 0 all 8 but deployment_stage 6 (overall 7.5), record 1 all 3, record 2 all 3, record 3
    all 2, record 4 an invalid answer every time (so n = 4).

    deployment_stage |diff| 2, 2, 0, 1 -> MAE 1.25; every other dimension 0, 2, 0, 1 -> 0.75;
    mean over the eight dimensions (1.25 + 7 * 0.75) / 8 = 0.8125. Overall 8 vs 7.5, 5 vs 3, 3 vs 3,
    1 vs 2 -> MAE 3.5 / 4 = 0.875. Tiers (deployed >= 6.5, piloting >= 4.5, announced >= 2.5):
    deployed/deployed, piloting/announced, announced/announced, vaporware/vaporware -> 3 of 4 agree.
    Kappa: p_o = 0.75; marginals 1/4 each vs (1/4, 0, 1/2, 1/4) -> p_e = 0.25;
    kappa = (0.75 - 0.25) / 0.75.
    """
    first_scores = {0: 8, 1: 5, 2: 3, 3: 1, 4: 7}

    def first(body):
        return uniform(first_scores[number(openai_server.prompt_title(body))])

    def second(body):
        n = number(anthropic_server.prompt_title(body))
        return {
            0: uniform(8, deployment_stage=6),
            1: uniform(3),
            2: uniform(3),
            3: uniform(2),
            4: uniform(11),
        }[n]

    with FakeOpenAI(first) as a, FakeAnthropic(second) as b:
        claude = {
            "provider": "anthropic",
            "model": "claude-fake",
            "base_url": b.base_url,
            "api_key_env": ANTHROPIC_KEY,
            "temperature": 0.0,
            "max_tokens": 256,
            "request_timeout_s": 30,
        }
        params = project(
            tmp_path,
            monkeypatch,
            openai_oracle(a),
            check={"sample_size": 5, "seed": 3, "second": claude},
        )
        jsonl.write_jsonl(PASSED, synthetic_articles(5))
        result = oracle_check(params)
        assert a.count == 5 and b.count == 5 + 1  # record 4 is re-asked once (max_attempts 2)

        assert result["n"] == 4 and result["sampled"] == 5
        assert result["mae"] == {d: (1.25 if d == "deployment_stage" else 0.75) for d in DIMS}
        assert result["mean_dimension_mae"] == 0.8125
        assert result["overall_mae"] == 0.875
        assert result["tier_agreement"] == 0.75
        assert result["cohen_kappa"] == round(0.5 / 0.75, 4)
        assert result["oracles"]["first"]["oracle"] == "openai:fake-first"
        assert result["oracles"]["second"]["oracle"] == "anthropic:claude-fake"
        assert result["passes"]["first"]["valid"] == 5 and result["passes"]["second"]["valid"] == 4
        assert result["passes"]["second"]["invalid_reasons"] == {"schema": 1}
        assert json.loads(AGREEMENT.read_text()) == result

        # a rerun is free: every answer comes from the response cache
        again = oracle_check(params)
        assert a.count == 5 and b.count == 6
        assert (
            again["passes"]["first"]["requests"] == 0
            and again["passes"]["first"]["cache_hits"] == 5
        )
        assert {k: again[k] for k in ("mae", "overall_mae", "tier_agreement", "cohen_kappa")} == {
            k: result[k] for k in ("mae", "overall_mae", "tier_agreement", "cohen_kappa")
        }


# ----------------------------------------------------------------------------- one oracle twice
def temperature_dependent(body: dict[str, Any]) -> dict[str, Any]:
    """At temperature 0 every record scores 6 (piloting); otherwise odd records (by title number)
    score 6 + the request's seed (7 with seed 1: deployed), even ones still 6."""
    if body.get("temperature", 0) == 0:
        return uniform(6)
    n = number(openai_server.prompt_title(body))
    return uniform(6 + int(body.get("seed") or 0) if n % 2 else 6)


def test_one_oracle_twice_differs_in_temperature_and_seed(tmp_path, monkeypatch, keys):
    with FakeOpenAI(temperature_dependent) as srv:
        params = project(
            tmp_path, monkeypatch, openai_oracle(srv)
        )  # no oracle_check section: defaults
        jsonl.write_jsonl(PASSED, synthetic_articles(6))
        result = oracle_check(params)
        sent = [(body["temperature"], body["seed"]) for body in srv.requests]
        assert (
            sorted(sent) == [(0.0, 0)] * 6 + [(0.7, 1)] * 6
        )  # the second pass differs: new cache keys
    # three of six records differ by 1 on every dimension; all six piloting vs three deployed
    assert result["n"] == 6 and result["same_oracle"] is True
    assert result["mae"] == dict.fromkeys(DIMS, 0.5)
    assert result["mean_dimension_mae"] == 0.5 and result["overall_mae"] == 0.5
    assert result["tier_agreement"] == 0.5
    assert result["cohen_kappa"] == 0.0  # p_o = 0.5 = p_e: no better than chance
    assert (
        result["oracles"]["second"]["temperature"] == 0.7
        and result["oracles"]["second"]["seed"] == 1
    )
    assert result["tiers"]["second"] == {
        "deployed": 3,
        "piloting": 3,
        "announced": 0,
        "vaporware": 0,
    }


def test_the_command_writes_the_agreement_and_evaluate_shows_the_floor(tmp_path, monkeypatch, keys):
    with FakeOpenAI(temperature_dependent) as srv:
        project(
            tmp_path,
            monkeypatch,
            openai_oracle(srv),
            check={"sample_size": 4, "seed": 1, "second": None},
        )
        jsonl.write_jsonl(PASSED, synthetic_articles(10))
        cmd = [sys.executable, "-m", "distill.cli", "oracle-check"]
        env = {**os.environ, "DISTILL_LOG_LEVEL": "WARNING"}
        proc = subprocess.run(
            cmd, cwd=Path.cwd(), env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert proc.returncode == 0, proc.stderr
        assert srv.count == 8  # 4 sampled records, twice
        assert "oracle vs oracle on" in proc.stdout and f"wrote {AGREEMENT}" in proc.stdout
        proc = subprocess.run(
            cmd, cwd=Path.cwd(), env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert proc.returncode == 0, proc.stderr
        assert srv.count == 8  # the rerun is answered by the cache
    written = json.loads(AGREEMENT.read_text())
    sampled = [r["id"] for r in seeded_sample(synthetic_articles(10), 4, 1)]
    odd = sum(1 for i in sampled if int(i.rsplit("-", 1)[-1]) % 2)
    assert written["n"] == 4 and written["tier_agreement"] == round((4 - odd) / 4, 4)
    assert written["overall_mae"] == round(odd / 4, 4)

    # evaluate puts the floor next to the student's numbers
    dims_rows = []
    for i, r in enumerate(synthetic_articles(12, prefix="ev")):
        scores = {d: (i * 3 + j) % 11 for j, d in enumerate(DIMS)}
        overall, tier = SPEC.score(scores)
        dims_rows.append(
            to_chat(
                {
                    "id": r["id"],
                    "messages": SPEC.render(r),
                    "label": {**scores, "reasoning": "x"},
                    "scores": scores,
                    "overall": overall,
                    "tier": tier,
                }
            )
        )
    # the floor counts only for the items it was measured on: the test split holds the sampled ids
    jsonl.write_jsonl("split/test.jsonl", [{**row, "id": i} for row, i in zip(dims_rows[8:], sampled)])
    train_student(SklearnStudent(kind="sklearn"), dims_rows[:8], [], DIMS, "model")
    metrics = pipeline.evaluate(
        EvaluateConfig(output_dir="eval"), SPEC, "split", "model", metrics_dir=Path("metrics")
    )
    floor = {k: written[k] for k in ("mean_dimension_mae", "overall_mae", "tier_agreement")}
    assert metrics["oracle_floor"] == floor
    assert json.loads(Path("metrics/eval.json").read_text())["oracle_floor"] == floor
    table = format_table(metrics)
    assert "oracle vs oracle (floor):" in table
    assert f"  {'overall_mae':<26}{floor['overall_mae']:>10}" in table.splitlines()

    # a floor measured on other items (a stale file, or a sample of passed.jsonl) is never shown
    jsonl.write_jsonl("split/test.jsonl", dims_rows[8:])
    metrics = pipeline.evaluate(
        EvaluateConfig(output_dir="eval"), SPEC, "split", "model", metrics_dir=Path("metrics")
    )
    assert "oracle_floor" not in metrics
    assert "measured on 4 item(s) that are not these 4 test items" in metrics["oracle_floor_missing"]
    assert "rerun the oracle_check stage" in format_table(metrics)

    AGREEMENT.unlink()  # no check run: no floor
    metrics = pipeline.evaluate(
        EvaluateConfig(output_dir="eval"), SPEC, "split", "model", metrics_dir=Path("metrics")
    )
    assert "oracle_floor" not in metrics and "floor" not in format_table(metrics)


# ----------------------------------------------------------------------------- config and sampling
def test_second_oracle_choices(tmp_path):
    first = oracle_config(provider="local", model="SmolLM2-135M-Instruct", temperature=0.0, seed=4)
    cfg, how = second_oracle(first, None)
    assert (cfg.temperature, cfg.seed, cfg.model) == (
        0.7,
        5,
        first.model,
    ) and "temperature 0.7" in how
    cfg, how = second_oracle(first, "gemini_flash", ROOT / "conf")
    assert (cfg.provider, cfg.model) == ("gemini", "gemini-2.5-flash") and how.endswith(
        "gemini_flash.yaml"
    )
    with pytest.raises(ConfigError, match="nope.yaml not found.*gemini_flash"):
        second_oracle(first, "nope", ROOT / "conf")
    second_oracle(first, "local", ROOT / "conf")  # conf/oracle/local.yaml has seed 0: it differs
    same = oracle_config(**yaml.safe_load((ROOT / "conf" / "oracle" / "local.yaml").read_text()))
    with pytest.raises(ConfigError, match="measure nothing"):
        second_oracle(same, "local", ROOT / "conf")
    with pytest.raises(ConfigError, match="measure nothing"):
        second_oracle(same, same.model_copy(update={"limits": RateLimits(rpm=5), "n_threads": 1}))
    assert OracleCheckConfig.model_validate({}).model_dump() == {
        "enabled": True,
        "sample_size": 50,
        "seed": 0,
        "second": None,
    }
    assert isinstance(
        OracleCheckConfig.model_validate({"second": first.model_dump()}).second, ProviderConfig
    )
    with pytest.raises(ValueError):
        OracleCheckConfig.model_validate({"sample_size": 0})
    with pytest.raises(ValueError):
        OracleCheckConfig.model_validate({"sampel_size": 5})


def test_seeded_sample_is_uniform_stable_and_in_input_order():
    rows = [{"id": i} for i in range(100)]
    a = seeded_sample(iter(rows), 10, 0)
    assert a == seeded_sample(iter(rows), 10, 0) and len(a) == 10
    assert [r["id"] for r in a] == sorted(r["id"] for r in a)
    assert a != seeded_sample(iter(rows), 10, 1)
    assert seeded_sample(iter(rows[:5]), 10, 0) == rows[:5]
    hits = [0] * 100
    for seed in range(400):
        for r in seeded_sample(iter(rows), 10, seed):
            hits[r["id"]] += 1
    assert min(hits) > 15 and max(hits) < 70  # about 40 each: every position is as likely
