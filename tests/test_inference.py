"""Using a trained student: `distill infer` (batch, any input the prefilter reads) and `distill chat` (stdin)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill.config import LabelConfig, SklearnStudent
from distill.filterspec import load_filter
from distill.inference import chat_records, example, infer
from distill.labeling.cache import ResponseCache
from distill.labeling.engine import Labeler
from distill.params import compose
from distill.providers import make_provider, oracle_config
from distill.students import train_student

ROOT = Path(__file__).resolve().parents[1]
BBC = load_filter(ROOT / "filters" / "bbc_topic" / "v1")
WORDS = {
    "sport": "the striker scored a goal and the team won the match in the league final",
    "business": "the company reported quarterly profit as shares rose and the market cheered the bank",
    "politics": "the minister told parliament the government would hold an election on the tax policy",
    "tech": "the new phone software lets users browse the internet and play games on a faster chip",
    "entertainment": "the film star won an award at the festival and the album topped the music chart",
}


def article(i: int, section: str) -> dict:
    return {"id": f"a{i}", "title": f"{section} story {i}", "text": f"{WORDS[section]}. Story number {i}. " * 3}


def chat_row(record: dict, section: str) -> dict:
    messages = BBC.render(record)
    return {"id": record["id"], "labels": [section],
            "messages": [*messages, {"role": "assistant", "content": json.dumps({"label": section})}]}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A sklearn student trained on rendered BBC-style prompts, and params.yaml naming the bbc_topic filter."""
    root = tmp_path_factory.mktemp("infer")
    sections = list(WORDS)
    train = [chat_row(article(i, sections[i % 5]), sections[i % 5]) for i in range(40)]
    train_student(SklearnStudent(kind="sklearn"), train, [], BBC, root / "models/student")
    (root / "filters").symlink_to(ROOT / "filters")
    params = compose(ROOT / "conf", ["filter=bbc_topic", "label.max_words=40", "prefilter.metadata=[]"])
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return root


def _distill(args: list[str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=cwd, input=stdin, capture_output=True,
                          text=True, timeout=300, check=False, env={**os.environ, "DISTILL_LOG_LEVEL": "WARNING"})


def test_the_student_reads_exactly_the_prompt_the_oracle_was_sent(tmp_path):
    record = {**article(1, "sport"), "text": "A long story. " * 400}
    max_words = LabelConfig().max_words
    oracle = make_provider(oracle_config(provider="file", fields={"label": "category"}))
    labeler = Labeler(BBC, oracle, ResponseCache(tmp_path / "cache.sqlite"), max_words=max_words, max_attempts=1)
    prepared = labeler.prepare(record)  # what the label stage sends (compressed, rendered)
    assert example(record, BBC, max_words) == {"id": "a1", "messages": prepared["messages"]}
    assert len(prepared["text"].split()) <= max_words < len(record["text"].split())


def test_infer_answers_a_csv_in_order_counting_malformed_rows(project):
    sections = ["sport", "tech", "politics"]
    lines = ["id,title,text", *(f"n{i},{s} news,{WORDS[s]}" for i, s in enumerate(sections)), "n9,only two"]
    (project / "new.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = _distill(["infer", "--input", "new.csv", "--output", "out/pred.jsonl", "--batch-size", "2"], project)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in (project / "out/pred.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["n0", "n1", "n2"]
    assert [r["labels"] for r in rows] == [[s] for s in sections]
    totals = json.loads(proc.stdout)
    assert (totals["items"], totals["invalid"], totals["quarantined"]) == (3, 0, 1)
    assert "infer: 3 items in" in proc.stderr and "items/s" in proc.stderr
    assert "1 malformed row(s) skipped (wrong_field_count=1)" in proc.stderr


def test_chat_answers_each_piped_line(project):
    proc = _distill(["chat"], project, stdin=f"{WORDS['business']}\n\n" + json.dumps(
        {"title": "Cup final", "text": WORDS["sport"]}) + "\n")
    assert proc.returncode == 0, proc.stderr
    answers = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [(a["id"], a["labels"]) for a in answers] == [("chat-1", ["business"]), ("chat-2", ["sport"])]


def test_a_student_of_another_task_is_refused_naming_both(project):
    (project / "other.yaml").write_text(yaml.safe_dump(compose(ROOT / "conf", [])), encoding="utf-8")
    proc = _distill(["infer", "--input", "x.csv", "--output", "o.jsonl", "--params", "other.yaml"], project)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "learned a classify task (labels business" in proc.stderr
    assert "asks for a score task (dimensions deployment_stage" in proc.stderr


def test_invalid_answers_are_written_as_null_and_counted():
    class Generative:
        def __call__(self, examples):
            return [{"id": e["id"], "answer": None, "raw": "```json {\"label\": \"sprot\"} ```",
                     "invalid_reason": "schema"} if e["id"] == "a1" else
                    {"id": e["id"], "answer": {"label": "tech"}, "raw": "{\"label\": \"tech\"}",
                     "invalid_reason": None} for e in examples]

    written, lines = [], []
    totals = infer(Generative(), [[article(0, "tech"), article(1, "sport")]], BBC, 100, written.append, lines.append)
    assert totals["items"] == 2 and totals["invalid"] == 1 and totals["invalid_reasons"] == {"schema": 1}
    assert written[1] == {"id": "a1", "answer": None, "invalid_reason": "schema",
                          "raw": "```json {\"label\": \"sprot\"} ```"}  # kept as generated, not repaired
    assert written[0]["labels"] == ["tech"] and "1 invalid answers (schema=1)" in lines[-1]


def test_chat_lines_become_records():
    records = list(chat_records(["plain text here\n", "  \n", '{"title": "T", "text": "json text"}\n', "{broken\n"]))
    assert [(r["id"], r["title"], r["text"]) for r in records] == [
        ("chat-1", "", "plain text here"), ("chat-2", "T", "json text"), ("chat-3", "", "{broken")]
