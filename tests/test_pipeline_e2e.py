"""The whole graph through the real `dvc exp run`, in a temporary git copy of the project.

Runs on a slice of the demo corpus with the embedded oracle (llama.cpp) and both students. Slow: it
labels for real on the CPU. CI runs it (it is marked slow, not skipped). Every test first brings the
workspace back to the baseline experiment (`dvc exp run` with no override: DVC's run cache restores
it without rerunning anything), so each one passes alone and in any order, and what it asserts about
which stages rerun is about its own command only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from distill.evaluate import evaluate
from distill.filterspec import load_filter

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SLICE = 24  # first rows of the demo corpus; about 15 pass the prefilter
SPEC = load_filter(ROOT / "filters" / "sustainability_tech_deployment" / "v1")
STAGES = ["prefilter", "label", "merge", "split", "oracle_check", "train", "evaluate"]

pytestmark = pytest.mark.slow


def _sh(args: list[str], cwd: Path, env: dict, timeout: int = 900, stdout_only: bool = False) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{out[-4000:]}"
    return proc.stdout if stdout_only else out


def _stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w-]+)'", output)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A fresh git repo holding the project's files (as a clone would), with the corpus slice in conf/."""
    dst = tmp_path_factory.mktemp("e2e") / "project"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in files:
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("data/", "models/", "metrics/")) or rel.startswith(
                ("data/raw/", "data/labels_extra/", "data/reviews/")):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    (dst / "dvc.lock").unlink(missing_ok=True)
    conf = dst / "conf/config.yaml"
    conf.write_text(conf.read_text().replace("  limit: null", f"  limit: {SLICE}"))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    env.pop("DISTILL_PARAMS", None)
    _sh([str(BIN / "distill"), "config", "compose"], dst, env)
    _sh(["git", "init", "-q", "-b", "main"], dst, env)
    _sh(["git", "add", "-A"], dst, env)
    _sh(["git", "commit", "-qm", "init"], dst, env)
    return dst, env


@pytest.fixture(scope="module")
def first_run(project):
    dst, env = project
    return _sh([str(BIN / "dvc"), "exp", "run"], dst, env)


@pytest.fixture
def baseline(project, first_run):
    """The workspace as the baseline experiment left it (restored from DVC's run cache)."""
    dst, env = project
    out = _sh([str(BIN / "dvc"), "exp", "run"], dst, env)
    assert "label" not in _stages_run(out)  # the oracle is never asked again to restore it
    return dst, env


def test_first_run_runs_every_stage_and_writes_every_declared_output(project, first_run):
    dst, _ = project
    assert _stages_run(first_run) == STAGES
    dvc = yaml.safe_load((dst / "dvc.yaml").read_text())
    params = yaml.safe_load((dst / "params.yaml").read_text())
    declared = []
    for stage in dvc["stages"].values():
        for out in stage["outs"]:
            path = next(iter(out)) if isinstance(out, dict) else out
            declared.append(_interpolate(path, params))
    assert declared and all((dst / p).exists() for p in declared), [p for p in declared if not (dst / p).exists()]


def _interpolate(path: str, params: dict) -> str:
    def value(m):
        node = params
        for key in m.group(1).split("."):
            node = node[key]
        return str(node)

    return re.sub(r"\$\{([\w.]+)\}", value, path)


def test_metrics_are_what_the_outputs_say(baseline):
    """Each stage's metrics recomputed from the files it wrote and read, independently of its code."""
    dst, _ = baseline
    m = {name: json.loads((dst / "metrics" / f"{name}.json").read_text())
         for name in ("prefilter", "label", "merge", "split", "oracle_agreement", "train", "eval")}
    passed = _lines(dst / "data/prefiltered/passed.jsonl")
    quarantined = _lines(dst / "data/prefiltered/quarantine.jsonl")
    assert m["prefilter"]["rows_read"] == SLICE
    assert m["prefilter"]["passed"] == len(passed) and m["prefilter"]["quarantined"] == len(quarantined)
    assert m["prefilter"]["blocked"] == SLICE - len(passed) - len(quarantined)
    assert sum(m["prefilter"]["blocked_by_reason"].values()) == m["prefilter"]["blocked"]

    labels, invalid = _lines(dst / "data/labels/labels.jsonl"), _lines(dst / "data/labels/invalid.jsonl")
    lab = m["label"]
    assert [r["id"] for r in labels] + [r["id"] for r in invalid] != [] and lab["records"] == len(passed)
    assert lab["valid"] == len(labels) and lab["invalid"] == len(invalid)
    assert sorted(r["id"] for r in labels + invalid) == sorted(r["id"] for r in passed)
    assert lab["attempts"] == sum(r["attempts"] for r in labels) + sum(len(r["attempts"]) for r in invalid)
    events = _lines(dst / "data/labels/events.jsonl")
    paid = [e for e in events if e["event"] == "request_done"]
    assert len(paid) == lab["requests"] and sum(e["input_tokens"] for e in paid) == lab["input_tokens"]

    merged = _lines(dst / "data/merged/labels.jsonl")
    assert m["merge"]["kept"] == len(merged) and m["merge"]["kept"] + m["merge"]["exact_duplicates"] == len(labels)
    splits = {s: _lines(dst / f"data/split/{s}.jsonl") for s in ("train", "val", "test")}
    assert m["split"]["sizes"] == {s: len(rows) for s, rows in splits.items()}
    assert sorted(r["id"] for rows in splits.values() for r in rows) == sorted(r["id"] for r in merged)

    by_id = {r["id"]: r for r in labels}
    for ex in splits["train"]:  # the student reads exactly what the oracle read, and answers what it answered
        assert ex["messages"][:2] == by_id[ex["id"]]["messages"]
        assert json.loads(ex["messages"][2]["content"]) == by_id[ex["id"]]["label"]

    # the floor was measured on the test items themselves
    agreement = m["oracle_agreement"]
    assert agreement["sampled"] == len(splits["test"])

    predictions = _lines(dst / "data/eval/predictions.jsonl")
    assert [p["id"] for p in predictions] == [r["id"] for r in splits["test"]]
    expected, _, _ = evaluate(splits["test"], predictions, SPEC)
    ev = m["eval"]
    assert ev["student"] == "sklearn" and ev["n_test"] == len(splits["test"]) > 0
    for key in ("valid_json_share", "mae", "mean_dimension_mae", "overall_mae", "tier_accuracy", "macro_f1"):
        assert ev[key] == expected[key], key
    by_test = {r["id"]: r for r in splits["test"]}
    hand_mae = {d: round(sum(abs(p["scores"][d] - by_test[p["id"]]["scores"][d]) for p in predictions)
                         / len(predictions), 4) for d in SPEC.dimension_names}
    assert ev["mae"] == hand_mae
    assert ev["oracle_floor"]["tier_agreement"] == agreement["tier_agreement"]


def test_second_run_runs_nothing_and_asks_the_oracle_nothing(baseline):
    dst, env = baseline
    cache = dst / ".distill/cache/llm.sqlite"
    before = _cache_rows(cache)
    out = _sh([str(BIN / "dvc"), "exp", "run"], dst, env)
    assert _stages_run(out) == []
    assert _cache_rows(cache) == before


def test_changing_the_split_seed_reruns_exactly_what_reads_the_split(baseline):
    dst, env = baseline
    cache = dst / ".distill/cache/llm.sqlite"
    before = _cache_rows(cache)
    out = _sh([str(BIN / "dvc"), "exp", "run", "-S", "split.seed=7"], dst, env)
    assert _stages_run(out) == ["split", "oracle_check", "train", "evaluate"]
    test_ids = {r["id"] for r in _lines(dst / "data/split/test.jsonl")}
    # the floor asks the oracle about the new test items only (the first pass is the label stage's)
    assert _cache_rows(cache) - before <= len(test_ids)
    assert json.loads((dst / "metrics/split.json").read_text())["seed"] == 7


def test_lora_student_experiment_and_experiment_comparison(baseline):
    dst, env = baseline
    out = _sh([str(BIN / "dvc"), "exp", "run", "-S", "student=lora", "-S", "student.max_steps=2"], dst, env)
    assert _stages_run(out) == ["train", "evaluate"]
    ev = json.loads((dst / "metrics/eval.json").read_text())
    test = _lines(dst / "data/split/test.jsonl")
    predictions = _lines(dst / "data/eval/predictions.jsonl")
    assert ev["student"] == "lora" and (dst / "models/student/adapter/adapter_config.json").is_file()
    # whatever two CPU steps produce, evaluate reports exactly what the answers were
    valid = [p for p in predictions if p["scores"] is not None]
    assert ev["valid_json_share"] == round(len(valid) / len(test), 4)
    # decoded under the answer's schema (student.constrained): even after two steps the answers validate
    assert ev["valid_json_share"] >= 0.95, predictions
    assert all(p["invalid_reason"] and p["raw"] is not None for p in predictions if p["scores"] is None)
    expected, _, _ = evaluate(test, predictions, SPEC)
    assert {k: ev[k] for k in expected} == expected

    # the demo student as a GGUF for llama.cpp / Ollama: it reads every test conversation as the student's
    # token ids (its pre-tokenizer is SmolLM2's, digits one a piece) and answers the test items as the
    # student does, both decoding under the answer's schema
    _sh([str(BIN / "distill"), "export", "--format", "gguf", "--output", "exports/gguf"], dst, env)
    parity = json.loads((dst / "exports/gguf/export.json").read_text())["parity"]
    assert parity["passed"] and parity["n"] == len(test)
    assert parity["token_mismatches"] == 0 and parity["template_mismatches"] == 0
    assert parity["answer_changes"] == 0 and parity["export"]["valid_json_share"] == ev["valid_json_share"]

    shown = json.loads(_sh([str(BIN / "dvc"), "exp", "show", "--json"], dst, env, stdout_only=True))
    exps = [e for row in shown for e in (row.get("experiments") or [])]
    students = set()
    for exp in exps:
        for run in exp.get("revs", []):
            data = (run.get("data") or {})
            params = data.get("params", {}).get("params.yaml", {}).get("data", {})
            metrics = data.get("metrics", {}).get("metrics/eval.json", {}).get("data", {})
            if params and metrics:
                students.add(params["student"]["kind"])
    assert {"sklearn", "lora"} <= students

    diff = json.loads(_sh([str(BIN / "dvc"), "metrics", "diff", "--json"], dst, env, stdout_only=True))
    assert "metrics/eval.json" in diff
    _sh([str(BIN / "dvc"), "plots", "show", "-o", str(dst / "plots_out")], dst, env)
    assert (dst / "plots_out/index.html").is_file()


def test_queued_sweep_runs(baseline):
    dst, env = baseline
    # queued runs copy tracked files only: -C brings the ignored oracle cache, so nothing is paid twice
    _sh([str(BIN / "dvc"), "exp", "run", "--queue", "-C", ".distill", "-S", "student.alpha=0.5,2.0"], dst, env)
    queued = _sh([str(BIN / "dvc"), "queue", "status"], dst, env)
    assert queued.count("Queued") == 2
    _sh([str(BIN / "dvc"), "exp", "run", "--run-all", "-j", "1"], dst, env, timeout=1200)
    status = _sh([str(BIN / "dvc"), "queue", "status"], dst, env)
    assert status.count("Success") == 2, status


def _cache_rows(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


def test_a_sweep_over_the_three_students_is_one_queued_command(baseline):
    """The README's sweep: `dvc exp run --queue -S 'student=sklearn,head,lora'`, then `dvc queue start`.
    Queued experiments run from the committed tree, so the tiny settings that keep this test short (two
    steps for the torch students) are committed to this copy's conf/student/ first, and taken back after;
    `-S` cannot carry them, as the sklearn student rejects keys it does not have."""
    dst, env = baseline
    tiny = {"head.yaml": {"max_steps": 2, "save_steps": 0}, "lora.yaml": {"max_steps": 2, "save_steps": 0}}
    for name, keys in tiny.items():
        path = dst / "conf/student" / name
        conf = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump({**conf, **keys}, sort_keys=False))
    _sh(["git", "commit", "-qam", "tiny students for the sweep test"], dst, env)
    try:
        done_before = _sh([str(BIN / "dvc"), "queue", "status"], dst, env).count("Success")
        _sh([str(BIN / "dvc"), "exp", "run", "--queue", "-C", ".distill", "-S", "student=sklearn,head,lora"], dst, env)
        assert _sh([str(BIN / "dvc"), "queue", "status"], dst, env).count("Queued") == 3
        _sh([str(BIN / "dvc"), "queue", "start", "-j", "1"], dst, env)
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            status = _sh([str(BIN / "dvc"), "queue", "status"], dst, env)
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(5)
        assert status.count("Success") - done_before == 3, status
        shown = json.loads(_sh([str(BIN / "dvc"), "exp", "show", "--json"], dst, env, stdout_only=True))
        evaluated = {}
        for row in shown:
            for exp in row.get("experiments") or []:
                for run in exp.get("revs", []):
                    data = run.get("data") or {}
                    params = data.get("params", {}).get("params.yaml", {}).get("data", {})
                    metrics = data.get("metrics", {}).get("metrics/eval.json", {}).get("data", {})
                    train = data.get("metrics", {}).get("metrics/train.json", {}).get("data", {})
                    if params and metrics and train:
                        evaluated[params["student"]["kind"]] = (metrics, train)
        assert {"sklearn", "head", "lora"} <= set(evaluated), evaluated.keys()
        assert evaluated["head"][1]["steps"] == 2 and evaluated["lora"][1]["steps"] == 2
        for kind, (metrics, _) in evaluated.items():
            assert metrics["student"] == kind and metrics["n_test"] > 0
        assert evaluated["head"][0]["valid_json_share"] == 1.0  # a head has no format to get wrong
    finally:
        _sh(["git", "reset", "-q", "--hard", "HEAD~1"], dst, env)
