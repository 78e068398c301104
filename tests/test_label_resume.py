"""Kill the label stage half way with SIGKILL, rerun it, and get exactly what an uninterrupted run gets.

The stage runs as a real process (``python stages/label.py`` in a working directory holding a
``params.yaml``), asking the fake OpenAI server on 127.0.0.1 through the official SDK. Answers are
committed to the SQLite response cache one by one, so the rerun pays only for what was not cached:
the requests in flight at the kill are the only ones asked twice.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from distill.filterspec import load_filter
from distill.labeling.cache import request_key
from distill.providers import ChatRequest, make_provider, oracle_config
from tests.fakes.articles import write_articles
from tests.fakes.openai_server import FakeOpenAI

REPO = Path(__file__).resolve().parents[1]
STAGE = REPO / "stages" / "label.py"
SPEC = load_filter(REPO / "filters" / "sustainability_tech_deployment" / "v1")
KEY_ENV = "DISTILL_TEST_OPENAI_KEY"
MODEL = "fake-oracle-resume"
N = 40
CACHE = Path(".distill/cache/llm.sqlite")
LABELS = Path("data/labels/labels.jsonl")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def oracle_section(srv: FakeOpenAI) -> dict[str, Any]:
    return {
        "provider": "openai", "model": MODEL, "base_url": srv.base_url, "api_key_env": KEY_ENV,
        "structured_output": "json_schema", "temperature": 0.0, "max_tokens": 256, "seed": 0,
        "request_timeout_s": 120, "sdk_max_retries": 2,
    }


def make_workdir(root: Path, name: str, srv: FakeOpenAI, prefiltered: Path) -> Path:
    """A project directory as the stage sees it: params.yaml, filters/, nothing else."""
    wd = root / name
    wd.mkdir()
    shutil.copytree(REPO / "filters", wd / "filters")
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["oracle"] = oracle_section(srv)
    params["prefilter"]["output_dir"] = str(prefiltered)
    params["label"].update(cache_path=str(CACHE), output_dir=str(LABELS.parent), concurrency=4,
                           max_attempts=3)
    (wd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return wd


def stage_env(key: str) -> dict[str, str]:
    env = {**os.environ, KEY_ENV: key, "DISTILL_LOG_LEVEL": "INFO"}
    env.pop("DISTILL_PARAMS", None)  # the stage reads ./params.yaml
    return env


def start_stage(wd: Path, key: str, log_name: str) -> tuple[subprocess.Popen, Path]:
    log = wd / log_name
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, str(STAGE)], cwd=wd, env=stage_env(key),
                                stdout=fh, stderr=subprocess.STDOUT)
    return proc, log


def run_stage(wd: Path, key: str, log_name: str) -> str:
    proc, log = start_stage(wd, key, log_name)
    try:
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text(encoding="utf-8", errors="replace")
    assert rc == 0, text
    return text


def cache_keys(wd: Path) -> set[str]:
    db = sqlite3.connect(wd / CACHE)
    try:
        return {row[0] for row in db.execute("SELECT key FROM responses")}
    finally:
        db.close()


def test_killed_label_stage_resumes_without_paying_twice(tmp_path, monkeypatch):
    key = "sk-test-" + uuid.uuid4().hex
    monkeypatch.setenv(KEY_ENV, key)
    prefiltered = tmp_path / "prefiltered"
    write_articles(prefiltered / "passed.jsonl", N, prefix="resume")

    with FakeOpenAI(latency_s=0.1) as srv:
        identity = make_provider(oracle_config(**oracle_section(srv))).cache_identity()

        def key_of(body: dict[str, Any]) -> str:
            request = ChatRequest(messages=body["messages"], schema=SPEC.json_schema,
                                  temperature=body["temperature"], max_tokens=body["max_tokens"],
                                  seed=body["seed"])
            return request_key(identity, request)

        # --- the reference: one uninterrupted run into a fresh cache and output dir
        clean = make_workdir(tmp_path, "clean", srv, prefiltered)
        run_stage(clean, key, "stage.log")
        assert srv.count == N
        reference = (clean / LABELS).read_bytes()
        assert len(reference.splitlines()) == N
        srv.reset()

        # --- a run killed half way; its output dir holds a previous complete (smaller) run
        wd = make_workdir(tmp_path, "resumed", srv, prefiltered)
        previous = b"".join(reference.splitlines(keepends=True)[:10])
        (wd / LABELS).parent.mkdir(parents=True)
        (wd / LABELS).write_bytes(previous)
        proc, log = start_stage(wd, key, "killed.log")
        try:
            reached = srv.wait_for(lambda s: s.answered >= N // 2 or proc.poll() is not None,
                                   timeout_s=300)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        assert reached, log.read_text()
        assert proc.returncode == -signal.SIGKILL, "the stage finished before it could be killed"
        before_kill = srv.requests
        srv.reset()

        # the killed run left the previous complete output alone, not a partial one
        assert (wd / LABELS).read_bytes() == previous
        cached = cache_keys(wd)
        asked = {key_of(b) for b in before_kill}
        assert 0 < len(cached) < N, len(cached)
        assert cached <= asked
        in_flight = asked - cached  # asked, maybe answered, but never committed to the cache

        # --- the rerun: pays only for what was not cached
        text = run_stage(wd, key, "rerun.log")
        print(f"killed after {len(before_kill)} requests: {len(cached)} cached, {len(in_flight)} in flight")
        rerun_keys = [key_of(b) for b in srv.requests]
        assert srv.count == N - len(cached)
        assert not set(rerun_keys) & cached  # nothing already answered was asked again
        assert len(set(rerun_keys)) == len(rerun_keys)
        assert set(rerun_keys) | cached == cache_keys(wd) and len(cache_keys(wd)) == N
        assert in_flight <= set(rerun_keys)  # the only prompts asked twice were in flight at the kill
        assert (wd / LABELS).read_bytes() == reference
        assert f"({len(cached)} answers)" in text
        metrics = json.loads((wd / "metrics" / "label.json").read_text(encoding="utf-8"))
        assert metrics["cache_hits"] == len(cached) and metrics["requests"] == N - len(cached)
        assert metrics["valid"] == N and metrics["invalid"] == 0

    assert set(srv.authorizations) == {f"Bearer {key}"}
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


def test_killed_at_several_points_pays_each_answer_once(tmp_path, monkeypatch):
    """Kill -9 four times at different points, then finish: every answer that reached the cache was
    paid exactly once; only prompts in flight at a kill were ever asked again."""
    key = "sk-test-" + uuid.uuid4().hex
    monkeypatch.setenv(KEY_ENV, key)
    prefiltered = tmp_path / "prefiltered"
    write_articles(prefiltered / "passed.jsonl", N, prefix="multi")

    with FakeOpenAI(latency_s=0.1) as srv:
        identity = make_provider(oracle_config(**oracle_section(srv))).cache_identity()

        def key_of(body: dict[str, Any]) -> str:
            request = ChatRequest(messages=body["messages"], schema=SPEC.json_schema,
                                  temperature=body["temperature"], max_tokens=body["max_tokens"],
                                  seed=body["seed"])
            return request_key(identity, request)

        clean = make_workdir(tmp_path, "clean", srv, prefiltered)
        run_stage(clean, key, "stage.log")
        reference = (clean / LABELS).read_bytes()
        srv.reset()

        wd = make_workdir(tmp_path, "resumed", srv, prefiltered)
        in_flight_at_kills: set[str] = set()
        for i, point in enumerate((6, 14, 22, 30)):
            cached_before = cache_keys(wd) if (wd / CACHE).exists() else set()
            seen = srv.count
            proc, log = start_stage(wd, key, f"killed{i}.log")
            try:
                reached = srv.wait_for(lambda s, p=point, child=proc: len(cache_keys_safe(wd)) >= p
                                       or child.poll() is not None, timeout_s=300)
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
            assert reached and proc.returncode == -signal.SIGKILL, log.read_text()
            asked_now = {key_of(b) for b in srv.requests[seen:]}
            assert not asked_now & cached_before  # a resumed run never re-asks a cached answer
            in_flight_at_kills |= asked_now - cache_keys(wd)
        run_stage(wd, key, "final.log")

        counts: dict[str, int] = {}
        for body in srv.requests:
            k = key_of(body)
            counts[k] = counts.get(k, 0) + 1
        repeated = {k for k, c in counts.items() if c > 1}
        assert repeated <= in_flight_at_kills
        assert all(c <= 1 + 4 for c in counts.values())
        assert sum(counts.values()) == N + sum(counts[k] - 1 for k in repeated)
        assert (wd / LABELS).read_bytes() == reference


def cache_keys_safe(wd: Path) -> set[str]:
    """Cache keys, or nothing while the database does not exist yet (the stage is starting)."""
    try:
        return cache_keys(wd) if (wd / CACHE).exists() else set()
    except sqlite3.OperationalError:
        return set()
