"""Acceptance: no API key anywhere but in the request that needs it.

One full run of ``stages/label.py`` per provider, as a subprocess (no DVC) in a temporary project:
``filters/`` copied, ``params.yaml`` composed from ``conf/`` with ``distill.params.compose`` for the
provider's oracle config, pointed at a fake server on 127.0.0.1, with a distinctive key in the
environment. The server throttles one request and answers one badly, so retries, rate-limit events,
re-asks and progress lines are all written, and the log is at DEBUG (the most a user can ask it
for). Then every byte of every file under the project (outputs, metrics, events, params, the SQLite
cache with its -wal / -shm files) and of the captured stdout and stderr is searched for the key: it
is not there. The server saw it, where the SDK puts it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from distill.params import compose
from tests.fakes import anthropic_server, gemini_server, openai_server
from tests.fakes.articles import write_articles

REPO = Path(__file__).resolve().parents[1]
STAGE = REPO / "stages" / "label.py"
N = 8

# every run is bounded: a regression that waits out a long Retry-After fails, not hangs
pytestmark = pytest.mark.timeout(180)

#: provider -> (conf/oracle group, fake module, server class, how the server saw the key)
CASES: dict[str, tuple[str, ModuleType, type, Any]] = {
    "openai": ("openai", openai_server, openai_server.FakeOpenAI,
               lambda r: (r.authorization or "").removeprefix("Bearer ")),
    "gemini": ("gemini_flash", gemini_server, gemini_server.FakeGemini, lambda r: r.api_key),
    "anthropic": ("anthropic_haiku", anthropic_server, anthropic_server.FakeAnthropic,
                  lambda r: r.api_key),
}


def make_project(root: Path, group: str, base_url: str) -> tuple[Path, str]:
    """A project directory as the stage sees it; returns it and the env var the key goes in."""
    wd = root / "project"
    shutil.copytree(REPO / "filters", wd / "filters")
    params = compose(REPO / "conf", [f"oracle={group}", "label.progress=log",
                                     "label.progress_interval_s=0.2", "label.concurrency=4",
                                     "label.transport_retries=2", "label.backoff_initial_s=0.01",
                                     "label.backoff_max_s=1", "label.max_words=200"])
    params["oracle"]["base_url"] = base_url
    params["oracle"]["request_timeout_s"] = 30
    # the published account limits of the real APIs would make this run take minutes
    params["oracle"]["limits"] = {"rpm": None, "rps": None, "input_tpm": None, "output_tpm": None,
                                  "max_concurrency": None}
    params["prefilter"]["output_dir"] = "data/prefiltered"
    (wd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    write_articles(wd / "data" / "prefiltered" / "passed.jsonl", N, prefix=f"secret-{group}")
    return wd, params["oracle"]["api_key_env"]


@pytest.mark.parametrize("provider", list(CASES))
def test_the_key_is_nowhere_but_in_the_requests(provider, tmp_path):
    group, mod, server_cls, seen_key = CASES[provider]
    secret = uuid.uuid4().hex + uuid.uuid4().hex[:8]  # 40 hex digits no text here contains
    key = f"sk-{provider}-{secret}"
    served: Counter[str] = Counter()

    def responder(body: dict[str, Any]) -> Any:
        title = mod.prompt_title(body)
        served[title] += 1
        if served[title] == 1 and title.endswith(" number 0"):  # throttled once
            return mod.Reply.rate_limited(0.05)
        if served[title] == 1 and title.endswith(" number 1"):  # re-asked once
            return mod.Reply.malformed()
        return mod.default_label(body)

    with server_cls(responder) as srv:
        wd, key_env = make_project(tmp_path, group, srv.base_url)
        env = {k: v for k, v in os.environ.items()
               if not k.endswith("_API_KEY") and k != "DISTILL_PARAMS"}
        env.update({key_env: key, "DISTILL_LOG_LEVEL": "DEBUG"})
        proc = subprocess.run([sys.executable, str(STAGE)], cwd=wd, env=env, capture_output=True,
                              check=False,
                              timeout=120)
        received = srv.received
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out.decode(errors="replace")

    # --- the run did what it should, with retries, re-asks and progress on the way
    metrics = json.loads((wd / "metrics" / "label.json").read_text(encoding="utf-8"))
    assert metrics["valid"] == N and metrics["transport_retries"] >= 1 and metrics["attempts"] > N
    events = [json.loads(line) for line in (wd / "data" / "labels" / "events.jsonl").open()]
    assert {"run_start", "request_done", "retry", "rate_limited", "run_end"} <= \
        {e["event"] for e in events}
    assert b"label: " in proc.stderr and b"limits: " in proc.stderr

    # --- the server saw the key on every request
    assert received and all(seen_key(r) == key for r in received)

    # --- and nothing else has it: not the outputs, the cache (with its WAL), params, or the log
    files = [p for p in wd.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"labels.jsonl", "invalid.jsonl", "events.jsonl", "label.json", "params.yaml",
            "llm.sqlite"} <= names, names
    for path in files:
        data = path.read_bytes()
        assert secret.encode() not in data, f"the key is in {path.relative_to(wd)}"
    assert secret.encode() not in out, "the key is in the stage's output"
