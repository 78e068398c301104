"""Stage entry points as DVC runs them: subprocesses reading params.yaml, clean errors, exit codes."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from distill.params import compose

ROOT = Path(__file__).resolve().parents[1]


def _workdir(tmp_path: Path, overrides: list[str]) -> Path:
    """A working directory with params.yaml composed from conf/ and a copy of filters/."""
    shutil.copytree(ROOT / "filters", tmp_path / "filters")
    params = compose(ROOT / "conf", overrides)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


def _run(stage: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=cwd,
        env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300, check=False,
    )


def test_malformed_corpus_is_quarantined_with_line_and_reason(tmp_path):
    good = {"id": "a1", "title": "Solar", "text": "The solar farm " + "works well and makes power. " * 20}
    lines = [
        json.dumps(good).encode(),
        b'{"id": "a2", "title": "broken", "text": "no closing brace"',
        json.dumps({"id": "a3", "title": "no text here"}).encode(),
        '{"id": "a4", "title": "Caf\u00e9", "text": "Latin-1 bytes"}'.encode("latin-1"),
        json.dumps({**good, "id": "a5"}).encode(),
    ]
    (tmp_path / "corpus.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    # a1 and a5 share their text on purpose (this is about quarantine): dedup off (tests/test_dedup.py)
    cwd = _workdir(tmp_path, ["prefilter.input=corpus.jsonl", "dedup.exact=false", "dedup.minhash.enabled=false"])
    proc = _run("prefilter", cwd)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((cwd / "metrics/prefilter.json").read_text())
    assert metrics["rows_read"] == 5 and metrics["records"] == 2 and metrics["quarantined"] == 3
    assert metrics["quarantine_reasons"] == {"bad_json": 1, "missing_text": 1, "undecodable_bytes": 1}
    quarantine = [json.loads(x) for x in (cwd / "data/prefiltered/quarantine.jsonl").read_text().splitlines()]
    assert [(q["line"], q["reason"]) for q in quarantine] == [
        (2, "bad_json"), (3, "missing_text"), (4, "undecodable_bytes")]
    assert all(q["file"] == "corpus.jsonl" for q in quarantine)
    passed = [json.loads(x)["id"] for x in (cwd / "data/prefiltered/passed.jsonl").read_text().splitlines()]
    assert passed == ["a1", "a5"]
    assert "quarantined" in proc.stderr  # the user is told, not only the metrics
    # conf's default metadata [source, published] is not in this file: said once, and counted
    assert metrics["missing_columns"] == {"metadata": ["source", "published"]}
    assert metrics["synthesised_ids"] == 0
    assert proc.stderr.count("prefilter.metadata lists 'source', 'published'") == 1


LONG = "The solar farm near the town works well and it makes power for the grid. " * 10


def _metrics(cwd: Path) -> dict:
    return json.loads((cwd / "metrics/prefilter.json").read_text())


def test_a_text_column_typo_fails_the_stage_naming_the_columns(tmp_path):
    (tmp_path / "corpus.csv").write_text(f"id,title,text\n1,Solar,{LONG}\n", encoding="utf-8")
    cwd = _workdir(tmp_path, ["prefilter.input=corpus.csv", "prefilter.field_map.text=txt"])
    proc = _run("prefilter", cwd)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "prefilter.field_map.text is 'txt'" in proc.stderr
    assert "Columns in the CSV header: 'id', 'title', 'text'" in proc.stderr


def test_made_up_ids_are_counted_in_the_metrics(tmp_path):
    (tmp_path / "corpus.csv").write_text(f"title,text\nSolar,{LONG}\nWind,{LONG.replace('solar', 'wind')}\n",
                                         encoding="utf-8")
    cwd = _workdir(tmp_path, ["prefilter.input=corpus.csv"])
    proc = _run("prefilter", cwd)
    assert proc.returncode == 0, proc.stderr
    metrics = _metrics(cwd)
    assert metrics["synthesised_ids"] == 2 and metrics["passed"] == 2
    assert metrics["missing_columns"] == {"id": ["id"], "metadata": ["source", "published"]}
    assert proc.stderr.count("ids were made up as '<file stem>:<line>' (e.g. 'corpus:2')") == 1


def test_a_stage_that_reads_no_record_fails_after_writing_its_metrics(tmp_path):
    rows = [{"id": f"a{i}", "title": "t", "text": "", "lead": None} for i in range(3)] + ["not json"]
    (tmp_path / "corpus.jsonl").write_text("".join((json.dumps(r) if isinstance(r, dict) else r) + "\n"
                                                   for r in rows), encoding="utf-8")
    cwd = _workdir(tmp_path, ["prefilter.input=corpus.jsonl"])
    proc = _run("prefilter", cwd)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no record could be read: all 4 row(s) were quarantined" in proc.stderr
    assert "missing_text x3 (e.g. no non-empty value in 'text'); bad_json x1" in proc.stderr
    assert "Columns found: 'id', 'title', 'text', 'lead'" in proc.stderr
    metrics = _metrics(cwd)  # written before failing, for the user to look at
    assert metrics["rows_read"] == 4 and metrics["records"] == 0 and metrics["quarantined"] == 4
    assert (cwd / "data/prefiltered/quarantine.jsonl").read_text().count("\n") == 4


def test_a_stage_where_no_record_passes_fails_with_counts_per_reason(tmp_path):
    rows = [{"id": "s1", "title": "t", "text": "Too short."}, {"id": "s2", "title": "t", "text": "Also short."},
            {"id": "k1", "title": "Cats", "text": LONG.replace("solar", "cat").replace("power", "fur")}]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cwd = _workdir(tmp_path, ["prefilter.input=corpus.jsonl"])
    proc = _run("prefilter", cwd)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert ("no record passed the prefilter: the prefilter rules in filters/sustainability_tech_deployment/v1/"
            "filter.yaml blocked all 3 record(s) (too_short=2, no_topic_keyword=1)") in proc.stderr
    metrics = _metrics(cwd)
    assert metrics["passed"] == 0 and metrics["blocked_by_reason"] == {"no_topic_keyword": 1, "too_short": 2}


def test_a_glob_of_compressed_files_runs_in_small_batches_with_the_same_outputs(tmp_path):
    good = [{"id": f"g{i}", "title": "Solar", "text": LONG + f" Item {i}."} for i in range(7)]
    short = [{"id": f"s{i}", "title": "t", "text": "Too short."} for i in range(5)]
    rows = [r for pair in zip(good, short) for r in pair] + good[5:]
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows[:6])
                                                                .encode()))
    (tmp_path / "raw" / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[6:]) + "{bad\n")
    outputs = {}
    for batch_rows in (2, 50000):
        shutil.rmtree(tmp_path / "filters", ignore_errors=True)
        # the good rows differ by one word (near duplicates): dedup off, this is about batches
        cwd = _workdir(tmp_path, ["prefilter.input=raw/*.jsonl*", "prefilter.track=raw",
                                  f"prefilter.batch_rows={batch_rows}", "prefilter.blocked_sample_size=3",
                                  "dedup.exact=false", "dedup.minhash.enabled=false"])
        proc = _run("prefilter", cwd)
        assert proc.returncode == 0, proc.stderr
        outputs[batch_rows] = {name: (cwd / "data/prefiltered" / name).read_text()
                               for name in ("passed.jsonl", "blocked_sample.jsonl", "quarantine.jsonl")}
        metrics = _metrics(cwd)
        assert metrics["rows_read"] == 13 and metrics["passed"] == 7 and metrics["blocked"] == 5
        quarantine = [json.loads(x) for x in outputs[batch_rows]["quarantine.jsonl"].splitlines()]
        assert [(q["file"], q["line"], q["reason"]) for q in quarantine] == [("raw/b.jsonl", 7, "bad_json")]
    assert outputs[2] == outputs[50000]
    assert [json.loads(x)["id"] for x in outputs[2]["passed.jsonl"].splitlines()] == [r["id"] for r in good]


def test_a_failure_half_way_leaves_no_output_looking_complete(tmp_path):
    rows = "".join(json.dumps({"id": f"r{i}", "title": "Solar", "text": LONG}) + "\n" for i in range(50))
    data = gzip.compress(rows.encode() * 20)
    (tmp_path / "corpus.jsonl.gz").write_bytes(data[: len(data) - 40])  # cut short: fails at the end
    cwd = _workdir(tmp_path, ["prefilter.input=corpus.jsonl.gz", "prefilter.batch_rows=10"])
    out = cwd / "data/prefiltered"
    out.mkdir(parents=True)
    for name in ("passed.jsonl", "quarantine.jsonl", "blocked_sample.jsonl"):
        (out / name).write_text('{"id": "from an earlier run"}\n')
    proc = _run("prefilter", cwd)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "corpus.jsonl.gz: cannot decompress" in proc.stderr
    assert list(out.iterdir()) == []  # neither this run's partial files nor the earlier run's


def test_the_blocked_sample_is_the_same_as_picking_from_every_blocked_row():
    import random

    from distill.pipeline import _BlockedSampler

    def reference(blocked, size):  # the pre-streaming implementation, over the whole list
        if not blocked or size <= 0:
            return []
        per = max(1, size // len({b["reason"] for b in blocked}))
        taken, sample = {}, []
        for b in blocked:
            if taken.get(b["reason"], 0) < per and len(sample) < size:
                taken[b["reason"]] = taken.get(b["reason"], 0) + 1
                sample.append(b)
        return sample

    rng = random.Random(0)
    for trial in range(200):
        reasons = [f"r{i}" for i in range(rng.randint(1, 6))]
        blocked = [{"id": str(i), "reason": rng.choice(reasons)} for i in range(rng.randint(0, 80))]
        size = rng.randint(0, 12)
        sampler = _BlockedSampler(size)
        for b in blocked:
            sampler.offer({"id": b["id"]}, b["reason"])
        assert sampler.sample() == reference(blocked, size), trial


def test_missing_and_empty_inputs_fail_with_a_clear_message(tmp_path):
    cwd = _workdir(tmp_path, ["prefilter.input=nope.jsonl"])
    proc = _run("prefilter", cwd)
    assert proc.returncode == 2
    assert "nope.jsonl" in proc.stderr and "not found" in proc.stderr and "Traceback" not in proc.stderr

    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "params.yaml").write_text(
        (tmp_path / "params.yaml").read_text().replace("nope.jsonl", "empty.jsonl"))
    proc = _run("prefilter", cwd)
    assert proc.returncode == 2
    assert "empty.jsonl" in proc.stderr and "empty" in proc.stderr and "Traceback" not in proc.stderr


def test_broken_filter_fails_before_any_work(tmp_path):
    cwd = _workdir(tmp_path, [])
    fpath = cwd / "filters/sustainability_tech_deployment/v1/filter.yaml"
    fpath.write_text(fpath.read_text().replace("weight: 0.25", "weight: 0.15", 1))
    for stage in ("prefilter", "label"):
        proc = _run(stage, cwd)
        assert proc.returncode == 2, stage
        assert "sum to 0.9" in proc.stderr and "Traceback" not in proc.stderr
    assert not (cwd / "data").exists() and not (cwd / ".distill").exists()


def test_unordered_tiers_fail_before_any_work(tmp_path):
    cwd = _workdir(tmp_path, [])
    fpath = cwd / "filters/sustainability_tech_deployment/v1/filter.yaml"
    fpath.write_text(fpath.read_text().replace("min_score: 4.5", "min_score: 7.5"))
    proc = _run("label", cwd)
    assert proc.returncode == 2
    assert "strictly decreasing min_score" in proc.stderr and "Traceback" not in proc.stderr


def test_openai_oracle_without_key_fails_before_any_request(tmp_path):
    cwd = _workdir(tmp_path, ["oracle=openai", "oracle.api_key_env=DISTILL_TEST_MISSING_KEY",
                              "oracle.base_url=http://127.0.0.1:9/v1"])
    (cwd / "data/prefiltered").mkdir(parents=True)
    (cwd / "data/prefiltered/passed.jsonl").write_text(
        json.dumps({"id": "x", "title": "t", "text": "solar " * 80, "metadata": {}}) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "DISTILL_TEST_MISSING_KEY"}
    proc = subprocess.run([sys.executable, str(ROOT / "stages/label.py")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "DISTILL_TEST_MISSING_KEY" in proc.stderr and "Traceback" not in proc.stderr
    assert not (cwd / ".distill").exists()  # not even the cache was opened


def test_a_filter_without_its_readme_fails_before_any_work(tmp_path):
    cwd = _workdir(tmp_path, [])
    (cwd / "filters/sustainability_tech_deployment/v1/README.md").unlink()
    proc = _run("prefilter", cwd)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "README.md is missing" in proc.stderr
    assert not (cwd / "data").exists()


def test_a_filter_missing_from_a_queued_experiment_says_to_commit_it(tmp_path):
    """`dvc exp run --queue` runs in .dvc/tmp/exps/<tmp>/, a copy of the committed files only."""
    exp = tmp_path / ".dvc" / "tmp" / "exps" / "tmpq1w2e3"
    exp.mkdir(parents=True)
    params = compose(ROOT / "conf", ["filter.name=my_filter"])
    (exp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = _run("prefilter", exp)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "Errno" not in proc.stderr
    assert "filter definition not found: filters/my_filter/v1/filter.yaml" in proc.stderr
    assert "queued experiment" in proc.stderr and "commit the filter" in proc.stderr
    assert "without --queue" in proc.stderr


def _report(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill.cli", "report", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)


def _dimension_rows(table: str) -> list[str]:
    lines = table.splitlines()
    start = lines.index("per-dimension MAE:") + 1
    return [ln.split()[0] for ln in lines[start:] if ln.startswith("  ")]


def test_report_lists_dimensions_in_the_filters_order_as_evaluate_does(tmp_path):
    from distill.evaluate import format_table
    from distill.filterspec import load_filter
    from distill.jsonl import write_json

    cwd = _workdir(tmp_path, [])
    spec = load_filter(cwd / "filters/sustainability_tech_deployment/v1")
    assert spec.dimension_names != sorted(spec.dimension_names)  # else this test proves nothing
    metrics = {"student": "sklearn", "n_test": 8, "mae": {d: 1.0 + i / 10 for i, d in enumerate(spec.dimension_names)},
               "tier_accuracy": 0.5}
    write_json(cwd / "metrics/eval.json", metrics)  # as evaluate writes it: keys sorted
    assert list(json.loads((cwd / "metrics/eval.json").read_text())["mae"]) == sorted(spec.dimension_names)
    proc = _report(cwd)
    assert proc.returncode == 0, proc.stderr
    assert _dimension_rows(proc.stdout) == spec.dimension_names
    # the table evaluate printed at the end of its run, row for row
    printed = format_table(metrics, title="student=sklearn vs oracle on 8 test items", dimensions=spec.dimension_names)
    assert proc.stdout.strip() == printed.strip()


def test_report_falls_back_to_the_order_of_the_per_dimension_plot_data(tmp_path):
    from distill.jsonl import write_json

    cwd = _workdir(tmp_path, ["filter.name=gone"])  # the filter that run used is no longer here
    order = ["zeta", "alpha", "mid"]
    write_json(cwd / "metrics/eval.json", {"n_test": 3, "mae": dict.fromkeys(order, 0.5)})
    write_json(cwd / "data/eval/per_dimension.json", [{"name": d, "value": 0.5, "metric": "mae"} for d in order])
    proc = _report(cwd)
    assert proc.returncode == 0, proc.stderr
    assert _dimension_rows(proc.stdout) == order
