"""A student measured on real labels: BBC News sections read by the file oracle, through every stage script.

prefilter -> label (oracle=file, the corpus's `category` column) -> merge -> split -> oracle_check -> train
(sklearn) -> evaluate, each as DVC runs it (a subprocess reading params.yaml), on a slice of the public BBC
corpus in ../shared/data. The TF-IDF student must beat the majority predictor with a paired interval that
excludes zero.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill.filterspec import load_filter
from distill.params import compose

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["prefilter", "label", "merge", "split", "oracle_check", "train", "evaluate"]

pytestmark = pytest.mark.slow


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_sklearn_student_beats_the_majority_on_bbc_sections_labelled_from_the_file(tmp_path, shared_data):
    # every 5th article: 445 of 2,225, all five sections (the file is sorted by section)
    corpus = (shared_data / "corpora" / "bbc_news_2225.jsonl").read_text(encoding="utf-8").splitlines()[::5]
    (tmp_path / "bbc.jsonl").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    shutil.copytree(ROOT / "filters", tmp_path / "filters")
    params = compose(ROOT / "conf", ["filter=bbc_topic", "prefilter.input=bbc.jsonl", "prefilter.metadata=[category]",
                                     "oracle=file", "oracle.fields.label=category", "label.max_words=200",
                                     "label.max_attempts=1", "label.progress=off"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    for stage in STAGES:
        proc = subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=tmp_path,
                              env={**os.environ, "DISTILL_LOG_LEVEL": "WARNING"}, capture_output=True, text=True,
                              timeout=600, check=False)
        assert proc.returncode == 0, f"{stage}: {proc.stderr[-3000:]}"

    label = json.loads((tmp_path / "metrics/label.json").read_text())
    assert label["valid"] == len(corpus) and label["invalid"] == 0 and label["cost_usd"] == 0.0
    ev = json.loads((tmp_path / "metrics/eval.json").read_text())
    test = _lines(tmp_path / "data/split/test.jsonl")
    predictions = {p["id"]: p for p in _lines(tmp_path / "data/eval/predictions.jsonl")}
    source = {r["id"]: r["category"] for r in map(json.loads, corpus)}
    # the labels the student was judged against are the corpus's own sections
    assert all(r["labels"] == [source[r["id"]]] for r in test)
    hits = sum(predictions[r["id"]]["answer"]["label"] == source[r["id"]] for r in test)
    assert ev["student"] == "sklearn" and ev["n_test"] == len(test) >= 40
    assert ev["accuracy"] == round(hits / len(test), 4)
    assert ev["accuracy_ci"]["lo"] <= ev["accuracy"] <= ev["accuracy_ci"]["hi"]

    # the majority predictor is the most frequent training section, on every test item
    train = _lines(tmp_path / "data/split/train.jsonl")
    sections = load_filter(tmp_path / "filters/bbc_topic/v1").label_names
    counts = {s: sum(r["labels"] == [s] for r in train) for s in sections}
    majority = max(counts, key=counts.get)  # ties: the section listed first, as the predictor breaks them
    assert ev["baselines"]["majority"]["accuracy"] == round(sum(r["labels"] == [majority] for r in test) / len(test), 4)
    # the student beats it, with a paired 95% interval of the difference excluding zero
    diff = ev["student_minus_majority"]["accuracy"]
    assert diff["diff"] == pytest.approx(ev["accuracy"] - ev["baselines"]["majority"]["accuracy"], abs=1e-4)
    assert diff["ci"]["lo"] > 0
    assert ev["student_minus_majority"]["macro_f1"]["ci"]["lo"] > 0

    # asked twice, a file answers the same: no floor, and evaluate says why
    assert ev["oracle_floor_missing"].startswith("not measured: oracle.provider=file")
    # the labels cost nothing; the student's compute is priced per 1,000 items
    assert ev["cost"]["oracle"]["usd_per_1k_items"] == 0.0 and ev["cost"]["student"]["usd_per_1k_items"] > 0
    assert json.loads((tmp_path / "data/eval/scatter.json").read_text()) == []  # no scores in a classification
