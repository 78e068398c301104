"""A small project on disk for the review tests: params.yaml, the real filter, and the files the
pipeline would have written (labels with a re-asked and a `<script>` record, an invalid record, events
with retries and rate limits, a gold answer that disagrees, a second oracle, student predictions and
confusion, the oracle check), plus helpers to run ``distill review`` as a real server process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from distill.filterspec import FilterSpec, load_filter

ROOT = Path(__file__).resolve().parents[1]
FILTER = ROOT / "filters" / "sustainability_tech_deployment" / "v1"
SCRIPT_TITLE = "<script>alert('pwned')</script> Solar farm"


SCORES = [1, 9, 5, 3, 7, 2, 8, 6, 4, 10]  # every record's dimensions get one score: varied tiers


def _answer(spec: FilterSpec, score: int, reasoning: str) -> dict[str, Any]:
    return {**{d: score for d in spec.dimension_names}, "reasoning": reasoning}


def _row(spec: FilterSpec, rid: str, title: str, text: str, answer: dict[str, Any], oracle: str = "fake:oracle-1",
         attempts: int = 1) -> dict[str, Any]:
    record = {"id": rid, "title": title, "text": text, "metadata": {"source": "test", "published": "2026-01-01"}}
    return {**record, "messages": spec.render(record), **spec.labelled(answer), "oracle": oracle,
            "attempts": attempts, "usage": {"input_tokens": 100, "output_tokens": 20}}


def make_project(dst: Path, n: int = 8) -> dict[str, Any]:
    """Write the project under ``dst``; returns what the tests need (spec, rows by id)."""
    spec = load_filter(FILTER)
    shutil.copytree(FILTER, dst / "filters" / spec.name / spec.version)
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["label"]["cache_path"] = ".distill/cache/llm.sqlite"
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    rows = []
    for i in range(n):
        title = SCRIPT_TITLE if i == 2 else f"Heat pump plant {i}"
        text = (f"Article {i}. A utility commissioned {i + 1} MW of heat pumps serving {1000 * (i + 1)} homes. "
                "Operations started this year and the plant delivers heat every day.")
        if i == 2:
            text = "<script>alert('pwned')</script> " + text
        answer = _answer(spec, SCORES[i % len(SCORES)], f"reasoning for record {i}")
        rows.append(_row(spec, f"rec-{i}", title, text, answer, attempts=3 if i == 1 else 1))
    labels = dst / "data/labels"
    labels.mkdir(parents=True)
    _jsonl(labels / "labels.jsonl", rows)
    bad_record = {"id": "rec-bad", "title": "Unanswerable", "text": "Nothing to see.", "metadata": {}}
    _jsonl(labels / "invalid.jsonl", [{
        "id": "rec-bad", "reason": "schema", "oracle": "fake:oracle-1", "messages": spec.render(bad_record),
        "attempts": [{"attempt": k, "reason": "schema", "detail": "at scale: 11 is greater than the maximum of 10",
                      "finish_reason": "stop", "text": '{"scale": 11}', "cached": False} for k in (1, 2, 3)]}])
    t = 1_700_000_000.0
    events = [{"t": t, "event": "run_start", "total": n + 1}]
    for k, r in enumerate(rows):
        events.append({"t": t + k, "event": "request_done", "id": r["id"], "oracle": r["oracle"], "input_tokens": 100,
                       "output_tokens": 20, "cost_usd": 0.0001, "finish_reason": "stop"})
    events += [{"t": t + 2.5, "event": "retry", "id": "rec-3", "oracle": "fake:oracle-1", "status": 503, "attempt": 1,
                "delay_s": 0.5, "error": "server error"},
               {"t": t + 3.5, "event": "rate_limited", "id": "rec-4", "oracle": "fake:oracle-1", "status": 429,
                "retry_after": 2.0},
               {"t": t + 9, "event": "invalid", "id": "rec-bad", "reason": "schema", "oracle": "fake:oracle-1"}]
    _jsonl(labels / "events.jsonl", events)
    extra = dst / "data/labels_extra"
    extra.mkdir(parents=True)
    gold = _row(spec, "rec-3", rows[3]["title"], rows[3]["text"], _answer(spec, 10, "gold"),
                oracle="gold:annotator")
    other = _row(spec, "rec-4", rows[4]["title"], rows[4]["text"], _answer(spec, 0, "another oracle"),
                 oracle="fake:oracle-2")
    _jsonl(extra / "gold.jsonl", [gold])
    _jsonl(extra / "second_oracle.jsonl", [other])
    (dst / "data/reviews").mkdir(parents=True)
    (dst / "data/reviews/reviews.jsonl").write_text("", encoding="utf-8")
    ev = dst / "data/eval"
    ev.mkdir(parents=True)
    test_rows = rows[4:]
    predictions, confusion = [], []
    for k, r in enumerate(test_rows):
        wrong = k % 2 == 0
        scores = {d: (v + 6) % 11 if wrong else v for d, v in r["scores"].items()}
        overall, tier = spec.score(scores)
        predictions.append({"id": r["id"], "scores": scores, "raw": None, "invalid_reason": None})
        confusion.append({"id": r["id"], "actual": r["tier"], "predicted": tier, "actual_overall": r["overall"],
                          "predicted_overall": overall})
    _jsonl(ev / "predictions.jsonl", predictions)
    (ev / "confusion.json").write_text(json.dumps(confusion), encoding="utf-8")
    (dst / "metrics").mkdir()
    (dst / "metrics/oracle_agreement.json").write_text(json.dumps({
        "n": 4, "tier_agreement": 0.75, "cohen_kappa": 0.5, "overall_mae": 0.8, "mean_dimension_mae": 1.1, "mae": {},
        "oracles": {"first": {"oracle": "fake:oracle-1"}, "second": {"oracle": "fake:oracle-1"}}}), encoding="utf-8")
    return {"spec": spec, "rows": {r["id"]: r for r in rows}, "root": dst}


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


# ----------------------------------------------------------------------------- a real server process
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(project: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "DVC_NO_ANALYTICS": "1", **extra}
    env.pop("DISTILL_REVIEW_TOKEN", None)
    env.update(extra)
    return env


def start_server(project: Path, port: int, *args: str, env: dict[str, str] | None = None,
                 log: Path | None = None) -> subprocess.Popen:
    """``distill review`` in its own process (stdout and stderr to ``log``), once it answers HTTP."""
    log = log or project / "server.log"
    fh = open(log, "ab")  # noqa: SIM115 - the process owns it; closed when the test stops the server
    proc = subprocess.Popen([sys.executable, "-m", "distill.cli", "review", "--port", str(port), *args],
                            cwd=project, env=env or env_for(project), stdout=fh, stderr=subprocess.STDOUT)
    proc.log_path = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/static/review.css", timeout=2)
            return proc
        except urllib.error.HTTPError:
            return proc  # it answers (401 with a token): up
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"server did not come up:\n{log.read_text(errors='replace')}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
