"""``distill pr-report`` and the pull-request workflow around it.

The slow test makes a temporary git copy of the project whose oracle is the fake OpenAI server, runs
the real pipeline (`dvc exp run`) on two commits with different params, checks the report's rows and
signs against the metric files, then saves a review and checks that only merge and what follows rerun.
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

from distill.prreport import MARKER, change, direction, metric_rows
from tests.fakes.openai_server import FakeOpenAI
from tests.review_project import ROOT

BIN = Path(sys.executable).parent
WORKFLOW = ROOT / ".github" / "workflows" / "pr-metrics.yml"


# ----------------------------------------------------------------------------- the table's cells
def test_change_has_a_sign_an_arrow_and_says_better_or_worse_when_the_name_tells():
    assert change(0.5, 0.625, "tier_accuracy") == "+0.125 ▲ better"
    assert change(0.5, 0.25, "macro_f1") == "-0.25 ▼ worse"
    assert change(1.2, 0.9, "mae.scale") == "-0.3 ▼ better"
    assert change(1.0, 1.5, "overall_mae") == "+0.5 ▲ worse"
    assert change(10, 12, "kept") == "+2 ▲"  # no direction known
    assert change(None, 3, "n_test") == "new" and change(3, None, "n_test") == "removed"
    assert change("sklearn", "lora", "student") == "changed" and change(2, 2, "x") == "0"
    assert direction("oracle_floor.tier_agreement") == 1 and direction("reviews.stale") == -1
    # the evaluation's newer figures: a larger kappa or correlation is better, a larger error or cost worse, and
    # a student-minus-baseline difference reads like its figure
    assert direction("tier_qwk") == 1 and direction("spearman.scale") == 1 and direction("rmse.scale") == -1
    assert direction("student_minus_mean.overall_mae.diff") == -1
    assert direction("student_minus_majority.accuracy.diff") == 1
    assert direction("cost.oracle.usd_per_1k_items") == -1


def test_metric_rows_keep_only_what_changed():
    diff = {"metrics/eval.json": {"tier_accuracy": {"old": 0.5, "new": 0.6, "diff": 0.1},
                                  "n_test": {"old": 4, "new": 4, "diff": 0}},
            "metrics/merge.json": {"reviews.corrected": {"old": None, "new": 1}}}
    assert metric_rows(diff) == [("metrics/eval.json", "tier_accuracy", 0.5, 0.6, "+0.1 ▲ better"),
                                 ("metrics/merge.json", "reviews.corrected", None, 1, "new")]


# ----------------------------------------------------------------------------- the workflow file
def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def test_the_workflow_validates_against_the_github_workflow_schema():
    tool = BIN / "check-jsonschema"
    if not tool.is_file():
        pytest.skip("check-jsonschema is not installed (make install puts it in the dev extra)")
    out = subprocess.run([str(tool), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_workflow_is_a_thin_wrapper_that_updates_one_comment():
    wf = _workflow()
    assert list(wf[True]) == ["pull_request"]  # YAML reads the key `on` as True
    assert wf["permissions"] == {"contents": "read", "pull-requests": "write"}
    steps = wf["jobs"]["metrics"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    uses = [s.get("uses", "") for s in steps]
    assert "make install" in runs and "dvc exp run" in runs
    assert re.search(r"distill pr-report --base \"\$BASE\"", runs)
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache@"))
    assert ".distill" in cache["with"]["path"].split()
    assert any(u.startswith("actions/upload-artifact@") for u in uses)
    comment = steps[-1]
    assert "head -n 1 pr-report/report.md" in comment["run"] and "-X PATCH" in comment["run"]
    assert comment["if"] == "github.event.pull_request.head.repo.full_name == github.repository"
    assert "${{ secrets." not in WORKFLOW.read_text()  # forks lose nothing: no secret is used


def test_the_workflows_shell_scripts_parse():
    for step in _workflow()["jobs"]["metrics"]["steps"]:
        if "run" in step:
            script = re.sub(r"\$\{\{[^}]*\}\}", "x", step["run"])
            out = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, check=False)
            assert out.returncode == 0, (step.get("name"), out.stderr)


# ----------------------------------------------------------------------------- two commits, the real pipeline
KEY_ENV = "PR_REPORT_TEST_KEY"


def _sh(args: list[str], cwd: Path, env: dict, timeout: int = 900) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}"
    return proc.stdout + proc.stderr


def _copy_project(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in files:
        src = ROOT / rel
        keep = rel.startswith(("data/raw/", "data/labels_extra/", "data/reviews/")) or not rel.startswith(
            ("data/", "models/", "metrics/", "tests/", "benchmarks/", ".github/"))
        if src.is_file() and keep:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    (dst / "dvc.lock").unlink(missing_ok=True)


def _project_yaml(base_url: str, alpha: float) -> str:
    return yaml.safe_dump({
        "defaults": [{"override /oracle": "openai"}],
        "oracle": {"base_url": base_url, "model": "fake-oracle", "api_key_env": KEY_ENV, "max_tokens": 300,
                   "request_timeout_s": 30},
        "prefilter": {"limit": 48},
        "label": {"progress": "log"},
        "student": {"alpha": alpha},
    }, sort_keys=False).replace("defaults:", "# @package _global_\ndefaults:", 1)


def _metrics_at(repo: Path, ref: str | None, name: str) -> dict:
    if ref is None:
        return json.loads((repo / "metrics" / name).read_text())
    return json.loads(subprocess.run(["git", "show", f"{ref}:metrics/{name}"], cwd=repo, capture_output=True,
                                     text=True, check=True).stdout)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif not isinstance(v, list):
            out[f"{prefix}{k}"] = v
    return out


def _table(report: str, header: str, key_cells: int = 1) -> dict:
    """The rows of every Markdown table of the report under ``header`` (the metrics, and the timings
    folded away), by their first cell (backticks removed), or a tuple of the first ``key_cells`` cells."""
    lines = report.splitlines()
    rows = {}
    for start in (i for i, line in enumerate(lines) if line.startswith(header)):
        for line in lines[start + 2:]:
            if not line.startswith("|"):
                break
            cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
            rows[cells[0] if key_cells == 1 else tuple(cells[:key_cells])] = cells[key_cells:]
    return rows


@pytest.mark.slow
def test_pr_report_on_two_commits_and_a_review_rerunning_merge_onwards(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-pr-report")
    repo = tmp_path / "project"
    _copy_project(repo)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "PYTHONPATH": str(ROOT / "src"), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    env.pop("DISTILL_PARAMS", None)
    dvc = [sys.executable, "-m", "dvc"]
    with FakeOpenAI() as srv:
        project_yaml = repo / "conf" / "project.yaml"
        project_yaml.write_text(_project_yaml(srv.base_url, 1.0))
        _sh(["git", "init", "-q", "-b", "main"], repo, env)
        _sh(["git", "add", "-A"], repo, env)
        _sh(["git", "commit", "-qm", "init"], repo, env)
        first = _sh([*dvc, "exp", "run"], repo, env)
        assert "Running stage 'evaluate'" in first and srv.count > 0
        _sh(["git", "add", "-A"], repo, env)
        _sh(["git", "commit", "-qm", "base: alpha 1"], repo, env)
        base = _sh(["git", "rev-parse", "HEAD"], repo, env).strip()

        project_yaml.write_text(_project_yaml(srv.base_url, 50.0))  # a much stronger ridge penalty
        second = _sh([*dvc, "exp", "run"], repo, env)
        assert re.findall(r"Running stage '(\w+)'", second) == ["train", "evaluate"]
        _sh(["git", "add", "-A"], repo, env)
        _sh(["git", "commit", "-qm", "change: alpha 50"], repo, env)

        report = _sh([sys.executable, "-m", "distill.cli", "pr-report", "--base", base], repo, env)
        assert report.splitlines()[0] == MARKER
        params = _table(report, "| param |")
        assert params == {"student.alpha": ["1", "50"]}
        rows = _table(report, "| metric |", key_cells=2)
        assert {file for _, file in rows} <= {"metrics/eval.json", "metrics/train.json"}
        old, new = (_flatten(_metrics_at(repo, ref, "eval.json")) for ref in (base, None))
        changed = {k for k in new if old.get(k) != new[k]}
        # every changed number of eval.json, and nothing else of it
        assert changed and {name for name, file in rows if file == "metrics/eval.json"} == changed
        for key in changed:
            base_cell, new_cell, change_cell = rows[(key, "metrics/eval.json")]
            assert float(base_cell) == pytest.approx(old[key], rel=1e-3) and float(new_cell) == pytest.approx(
                new[key], rel=1e-3)
            sign = "+" if new[key] > old[key] else "-"
            assert change_cell.startswith(sign) and ("▲" if sign == "+" else "▼") in change_cell
            if "mae" in key:  # lower is better
                assert change_cell.endswith("better" if sign == "-" else "worse")
        plots_dir = tmp_path / "plots"
        _sh([sys.executable, "-m", "distill.cli", "pr-report", "--base", base, "--output", "r.md",
             "--plots-dir", str(plots_dir)], repo, env)
        assert (plots_dir / "per_dimension.svg").read_text().startswith("<svg")
        assert "**MAE per dimension**" in (repo / "r.md").read_text()

        # a reviewer corrects one answer: merge and what follows rerun, nothing before it
        monkeypatch.chdir(repo)
        from distill.review.dataset import Dataset
        from distill.review.export import export
        from distill.review.store import Review, ReviewStore

        ds = Dataset("params.yaml")
        item = next(i for i in ds.ordered() if i.row is not None)
        corrected = {**item.label, "reasoning": "corrected by a reviewer"}
        store = ReviewStore(repo / ".distill/reviews.sqlite")
        store.save(Review(item.id, item.key, is_correct=False, corrected=corrected))
        export(ds, store)
        store.close()
        third = _sh([*dvc, "exp", "run"], repo, env)
        ran = re.findall(r"Running stage '(\w+)'", third)
        assert ran[0] == "merge" and "prefilter" not in ran and "label" not in ran
        merge = json.loads((repo / "metrics/merge.json").read_text())
        assert merge["reviews"]["corrected"] == 1 and merge["reviews"]["applied"] == 1
        merged = [json.loads(x) for x in (repo / "data/merged/labels.jsonl").read_text().splitlines()]
        assert next(r for r in merged if r["id"] == item.id)["label"] == corrected
        report = _sh([sys.executable, "-m", "distill.cli", "pr-report", "--base", "HEAD"], repo, env)
        rows = _table(report, "| metric |", key_cells=2)
        assert rows[("reviews.corrected", "metrics/merge.json")] == ["0", "1", "+1 ▲"]
