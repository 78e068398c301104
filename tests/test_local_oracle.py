"""The embedded oracle (llama.cpp in a worker process): crash isolation, errors that are not
retried, schema-constrained answers, and the label stage's exit status when the runtime dies.

These load the real packaged model (SmolLM2-135M, 93 MB) in a worker process, never in the test
process: a native crash fails one test with a readable message instead of ending the run."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.config import LabelConfig
from distill.filterspec import load_filter
from distill.isolation import RuntimeCrash
from distill.labeling.build import build_labeler
from distill.labeling.cache import ResponseCache
from distill.labeling.events import Events
from distill.params import compose
from distill.providers import ChatRequest, ProviderError, make_provider, oracle_config
from distill.validate import Invalid, check
from tests.fakes.articles import synthetic_articles

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SPEC = load_filter(ROOT / "filters" / "sustainability_tech_deployment" / "v1")


def local(**kw):
    return oracle_config(provider="local", model="SmolLM2-135M-Instruct", **{"max_tokens": 256, **kw})


def label_cfg(tmp_path: Path, **kw) -> LabelConfig:
    return LabelConfig(**{"max_words": 200, "max_attempts": 2, "concurrency": 1, "transport_retries": 6,
                          "backoff_initial_s": 0.01, "cache_path": str(tmp_path / "cache.sqlite"),
                          "output_dir": str(tmp_path / "labels"), "progress": "off", **kw})


def cache_rows(path: Path) -> int:
    if not path.is_file():
        return 0
    with sqlite3.connect(path) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        except sqlite3.OperationalError:  # created, table not there yet
            return 0


async def _label(lab, records):
    try:
        return [o async for o in lab.run(records, 1)]
    finally:
        for p, _ in lab.providers:
            await p.aclose()


# ----------------------------------------------------------------------------- answers
def test_answers_follow_the_schema_including_integer_bounds(tmp_path):
    """llama-cpp-python's own grammar ignores minimum/maximum; the worker's decoder enforces them:
    every answer validates, with each score inside 0..scale_max, on the first attempt."""
    records = synthetic_articles(4)
    lab = build_labeler(SPEC, local(), label_cfg(tmp_path), ResponseCache(tmp_path / "cache.sqlite"))
    outcomes = asyncio.run(_label(lab, records))
    assert [kind for kind, _ in outcomes] == ["valid"] * 4
    assert all(row["attempts"] == 1 for _, row in outcomes)
    assert all(0 <= v <= SPEC.scale_max for _, row in outcomes for v in row["scores"].values())


def test_the_same_request_gives_the_same_answer_and_a_seed_decides_a_sampled_one(tmp_path):
    provider = make_provider(local())
    messages = SPEC.render(synthetic_articles(1)[0])

    async def ask(**gen):
        return await provider.complete(ChatRequest(messages=messages, schema=SPEC.json_schema, max_tokens=200, **gen))

    async def go():
        try:
            greedy = [await ask(temperature=0.0, seed=0) for _ in range(2)]
            sampled = [await ask(temperature=0.9, seed=s) for s in (1, 1, 2)]
        finally:
            await provider.aclose()
        return greedy, sampled

    greedy, sampled = asyncio.run(go())
    assert greedy[0].text == greedy[1].text
    assert sampled[0].text == sampled[1].text  # same seed, same draw
    for r in greedy + sampled:
        assert not isinstance(check(r.text, SPEC.json_schema, r.finish_reason), Invalid), r.text


# ----------------------------------------------------------------------------- errors that are final
def test_a_prompt_longer_than_the_context_fails_at_once_without_retries(tmp_path):
    long = synthetic_articles(1)[0] | {"text": "The wind farm is running at full capacity. " * 120}
    lab = build_labeler(SPEC, local(n_ctx=256), label_cfg(tmp_path, max_words=2000),
                        ResponseCache(tmp_path / "cache.sqlite"))
    [(kind, row)] = asyncio.run(_label(lab, [long]))
    assert kind == "invalid" and row["reason"] == "provider_error"
    assert "oracle.n_ctx" in row["attempts"][-1]["detail"]
    assert lab.stats.transport_retries == 0  # final: no backoff, no retry


def test_a_missing_runtime_fails_at_once_naming_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    provider = make_provider(local())
    with pytest.raises(ProviderError, match="llama-cpp-python") as raised:
        asyncio.run(provider.complete(ChatRequest(messages=[{"role": "user", "content": "x"}], schema={})))
    assert raised.value.transient is False and "make install" in str(raised.value)


# ----------------------------------------------------------------------------- a crash
def test_a_worker_killed_by_sigsegv_becomes_a_clear_error_and_keeps_the_answers(tmp_path):
    records = synthetic_articles(6)
    provider = make_provider(local())
    events = Events(None)
    done: list[str] = []

    def kill_after_two(event: dict) -> None:
        if event["event"] == "request_done":
            done.append(event["id"])
            if len(done) == 2:
                os.kill(provider.worker.pid, signal.SIGSEGV)

    events.listeners.append(kill_after_two)
    lab = build_labeler(SPEC, local(), label_cfg(tmp_path), ResponseCache(tmp_path / "cache.sqlite"),
                        providers=[(provider, 1.0)], events=events)
    with pytest.raises(RuntimeCrash) as crashed:
        asyncio.run(_label(lab, records))
    message = str(crashed.value)
    assert crashed.value.signal_name == "SIGSEGV" and crashed.value.exit_status == 3
    assert "llama-cpp-python 0.3.36" in message and "was killed by SIGSEGV while answering a request" in message
    assert "CPU: " in message and "flags: " in message and "GGML_NATIVE=OFF" in message
    assert cache_rows(tmp_path / "cache.sqlite") == 2

    # a rerun pays only for what was not answered
    again = build_labeler(SPEC, local(), label_cfg(tmp_path), ResponseCache(tmp_path / "cache.sqlite"))
    outcomes = asyncio.run(_label(again, records))
    assert [kind for kind, _ in outcomes] == ["valid"] * 6
    assert again.stats.cache_hits == 2 and again.stats.requests == 4


def _children(pid: int) -> list[tuple[int, str]]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append((int(stat.parent.name), (stat.parent / "cmdline").read_bytes().decode(errors="replace")))
        except (OSError, IndexError, ValueError):
            continue
    return found


def test_the_label_stage_exits_3_with_the_message_when_its_worker_dies(tmp_path):
    """The stage process itself survives the crash: exit status 3 (not -11), the message on stderr,
    the answers before the crash in the cache; the rerun finishes and pays only for the rest."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "filters", project / "filters")
    shutil.copytree(ROOT / "stages", project / "stages")
    params = compose(ROOT / "conf", ["label.max_words=200", "label.progress=log"])
    (project / "params.yaml").write_text(json.dumps(params))  # JSON is YAML
    passed = project / params["prefilter"]["output_dir"] / "passed.jsonl"
    passed.parent.mkdir(parents=True)
    records = synthetic_articles(8)
    passed.write_text("".join(json.dumps(r) + "\n" for r in records))
    cache = project / params["label"]["cache_path"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}

    stage = subprocess.Popen([sys.executable, "stages/label.py"], cwd=project, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while cache_rows(cache) < 2 and time.monotonic() < deadline and stage.poll() is None:
        time.sleep(0.05)
    workers = [pid for pid, cmd in _children(stage.pid) if "_llama_worker" in cmd]
    assert len(workers) == 1, _children(stage.pid)
    os.kill(workers[0], signal.SIGSEGV)
    _, stderr = stage.communicate(timeout=120)
    assert stage.returncode == 3, stderr
    assert "was killed by SIGSEGV" in stderr and "llama-cpp-python" in stderr and "Traceback" not in stderr
    kept = cache_rows(cache)
    assert 2 <= kept < 8

    rerun = subprocess.run([sys.executable, "stages/label.py"], cwd=project, env=env, text=True,
                           capture_output=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr
    metrics = json.loads((project / "metrics" / "label.json").read_text())
    assert metrics["cache_hits"] == kept and metrics["requests"] == 8 - kept and metrics["valid"] == 8
