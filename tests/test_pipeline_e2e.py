"""The whole graph through the real `dvc exp run`, in a temporary git copy of the project.

Runs on a slice of the demo corpus with the embedded oracle (llama.cpp) and both students. Slow: it
labels for real on the CPU. CI runs it (it is marked slow, not skipped).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SLICE = 24  # first rows of the demo corpus; about 15 pass the prefilter

pytestmark = pytest.mark.slow


def _sh(args: list[str], cwd: Path, env: dict, timeout: int = 900, stdout_only: bool = False) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{out[-4000:]}"
    return proc.stdout if stdout_only else out


def _stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w-]+)'", output)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A fresh git repo holding the project's files (as a clone would), with the corpus slice in conf/."""
    dst = tmp_path_factory.mktemp("e2e") / "project"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in files:
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("data/", "models/", "metrics/")) or rel.startswith("data/raw/"):
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
    out = _sh([str(BIN / "dvc"), "exp", "run"], dst, env)
    return out


def test_first_run_runs_every_stage_and_writes_every_declared_output(project, first_run):
    dst, _ = project
    assert _stages_run(first_run) == ["prefilter", "label", "merge", "split", "train", "evaluate"]
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


def test_metrics_hold_the_expected_keys_and_sane_values(project, first_run):
    dst, _ = project
    m = {name: json.loads((dst / "metrics" / f"{name}.json").read_text())
         for name in ("prefilter", "label", "merge", "split", "train", "eval")}
    assert m["prefilter"]["rows_read"] == SLICE
    assert m["prefilter"]["passed"] + m["prefilter"]["blocked"] + m["prefilter"]["quarantined"] == SLICE
    assert 0 < m["prefilter"]["passed"] < SLICE and m["prefilter"]["blocked_by_reason"]
    lab = m["label"]
    assert lab["records"] == m["prefilter"]["passed"]
    assert lab["valid"] + lab["invalid"] == lab["records"]
    assert lab["requests"] >= lab["records"] and lab["cache_hits"] == 0
    assert lab["input_tokens"] > 0 and lab["output_tokens"] > 0
    assert m["merge"]["kept"] + m["merge"]["exact_duplicates"] == lab["valid"]
    assert sum(m["split"]["sizes"].values()) == m["merge"]["kept"] and m["split"]["leaked_prompts"] == 0
    ev = m["eval"]
    assert ev["student"] == "sklearn" and ev["n_test"] == m["split"]["sizes"]["test"] > 0
    assert set(ev["mae"]) == {"deployment_stage", "scale", "evidence_quality", "economic_viability",
                              "technology_maturity", "geographic_reach", "timeline_concreteness",
                              "source_independence"}
    assert all(0 <= v <= 10 for v in ev["mae"].values())
    assert 0 <= ev["tier_accuracy"] <= 1 and 0 <= ev["macro_f1"] <= 1 and ev["valid_json_share"] == 1.0
    labels = [json.loads(x) for x in (dst / "data/labels/labels.jsonl").read_text().splitlines()]
    train = [json.loads(x) for x in (dst / "data/split/train.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in labels}
    for ex in train:  # the student reads exactly what the oracle read
        assert ex["messages"][:2] == by_id[ex["id"]]["messages"]
        assert json.loads(ex["messages"][2]["content"]) == by_id[ex["id"]]["label"]


def test_second_run_runs_nothing_and_asks_the_oracle_nothing(project, first_run):
    dst, env = project
    cache = dst / ".distill/cache/llm.sqlite"
    before = _cache_rows(cache)
    out = _sh([str(BIN / "dvc"), "exp", "run"], dst, env)
    assert _stages_run(out) == []
    assert _cache_rows(cache) == before


def test_changing_the_split_seed_reruns_exactly_split_train_evaluate(project, first_run):
    dst, env = project
    cache = dst / ".distill/cache/llm.sqlite"
    before = _cache_rows(cache)
    out = _sh([str(BIN / "dvc"), "exp", "run", "-S", "split.seed=7"], dst, env)
    assert _stages_run(out) == ["split", "train", "evaluate"]
    assert _cache_rows(cache) == before
    assert json.loads((dst / "metrics/split.json").read_text())["seed"] == 7


def test_lora_student_experiment_and_experiment_comparison(project, first_run):
    dst, env = project
    out = _sh([str(BIN / "dvc"), "exp", "run", "-S", "split.seed=7", "-S", "student=lora", "-S", "student.max_steps=1",
               "-S", "student.batch_size=1", "-S", "student.max_new_tokens=24"], dst, env)
    assert _stages_run(out) == ["train", "evaluate"]
    ev = json.loads((dst / "metrics/eval.json").read_text())
    assert ev["student"] == "lora" and 0 <= ev["valid_json_share"] <= 1
    assert (dst / "models/student/adapter/adapter_config.json").is_file()

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

    diff = _sh([str(BIN / "dvc"), "metrics", "diff", "--json"], dst, env, stdout_only=True)
    json.loads(diff)
    _sh([str(BIN / "dvc"), "plots", "show", "-o", str(dst / "plots_out")], dst, env)
    assert (dst / "plots_out/index.html").is_file()


def test_queued_sweep_runs(project, first_run):
    dst, env = project
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
