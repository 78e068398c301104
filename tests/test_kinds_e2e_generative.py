"""The translate and generate kinds through the real `dvc exp run`, in a temporary git copy of the
project, with the oracle pointed at the fake OpenAI server answering from a script
(tests/scripted_oracles.py), so every metric has a value known in advance.

Both stop at the oracle_check stage (`dvc exp run oracle_check` runs it and what it depends on): the
LoRA student these kinds need is tested on tiny models in tests/test_kinds_students_generative.py.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fakes.openai_server import FakeOpenAI
from tests.scripted_oracles import LEAVES, Translator, generate_responder, german, new_item

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEY_ENV = "DISTILL_TEST_KINDS_E2E_KEY"

pytestmark = pytest.mark.slow


def _sh(args: list[str], cwd: Path, env: dict, timeout: int = 600) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}"
    return proc.stdout + proc.stderr


def _stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w-]+)'", output)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _metrics(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A git repo holding the project's files, as a clone would (no data outputs, metrics or lock)."""
    monkeypatch.setenv(KEY_ENV, "sk-test-kinds-e2e")
    repo = tmp_path / "project"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in files:
        keep = rel.startswith(("data/raw/", "data/labels_extra/", "data/reviews/")) or not rel.startswith(
            ("data/", "models/", "metrics/", "tests/", "benchmarks/", ".github/"))
        if (ROOT / rel).is_file() and keep:
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    (repo / "dvc.lock").unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "PYTHONPATH": str(ROOT / "src"), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    env.pop("DISTILL_PARAMS", None)
    return repo, env


def _commit(repo: Path, env: dict) -> None:
    _sh(["git", "init", "-q", "-b", "main"], repo, env)
    _sh(["git", "add", "-A"], repo, env)
    _sh(["git", "commit", "-qm", "init"], repo, env)


def _oracle(srv: FakeOpenAI) -> list[str]:
    return ["-S", "oracle=openai", "-S", f"oracle.base_url={srv.base_url}", "-S", f"oracle.api_key_env={KEY_ENV}",
            "-S", "oracle.model=fake-oracle", "-S", "oracle.max_tokens=300", "-S", "student=lora",
            "-S", "label.progress=log"]


# ----------------------------------------------------------------------------- translate
def _clean(text: str) -> str:
    """A one-line field as the prefilter makes it: entities unescaped, no-break spaces and runs of
    spaces made one space, stripped."""
    return re.sub(r"[ \t\r\f\v]{2,}|[\t\r\f\v]", " ", html.unescape(text).replace("\xa0", " ")).strip()


def test_translate_energy_headlines_through_dvc(project, shared_data):
    repo, env = project
    rows = [json.loads(x) for x in (shared_data / "corpora" / "energy_news_headlines_8973.jsonl")
            .read_text(encoding="utf-8").splitlines()]
    by_id = {r["id"]: r for r in rows}
    passing = rows[:10]  # all with a lead of 10 words or more
    no_lead = by_id["osuked-333e5060e6e0"]  # "Q&amp;A: ...", lead null: quarantined, missing_text
    short = by_id["osuked-27c34df88d2c"]  # "GWEC bolsters team" as its lead: 3 words, too_short
    src = {r["id"]: (_clean(r["title"]), _clean(r["lead"])) for r in passing}
    ids = [r["id"] for r in passing]
    same_first, blank = src[ids[1]][0], src[ids[8]][0]
    references = {ids[0]: german(*src[ids[0]]), ids[2]: german(*src[ids[2]]), ids[4]: "Etwas ganz anderes",
                  ids[8]: "Eine Referenz"}
    sample = [{**r, "reference": references.get(r["id"])} for r in [*passing, no_lead, short]]
    (repo / "data/raw/energy_sample.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sample))
    _commit(repo, env)

    translator = Translator(same_first={same_first}, blank={blank}, shorter_second={t for t, _ in src.values()})
    with FakeOpenAI(responder=translator) as srv:
        out = _sh([sys.executable, "-m", "dvc", "exp", "run", "oracle_check", "-S", "filter=translate_energy_news",
                   *_oracle(srv), "-S", "prefilter.input=data/raw/energy_sample.jsonl",
                   "-S", "prefilter.field_map.text=lead", "-S", "+prefilter.field_map.gold=reference",
                   "-S", "prefilter.unescape_html=true", "-S", "prefilter.metadata=[source]",
                   "-S", "split.train=0.6", "-S", "split.val=0.1", "-S", "split.test=0.3"], repo, env)
        assert _stages_run(out) == ["prefilter", "label", "merge", "split", "oracle_check"]
        paid = srv.count

    pre = _metrics(repo, "prefilter")
    assert (pre["rows_read"], pre["quarantined"], pre["passed"]) == (12, 1, 10)
    assert pre["quarantine_reasons"] == {"missing_text": 1} and pre["blocked_by_reason"] == {"too_short": 1}
    passed = _lines(repo / "data/prefiltered/passed.jsonl")
    assert [(r["title"], r["text"]) for r in passed] == [src[i] for i in ids]  # HTML entities unescaped

    # 8 answered at once, one re-asked after answering the source unchanged, one blank three times
    label = _metrics(repo, "label")
    assert (label["valid"], label["invalid"], label["invalid_reasons"]) == (9, 1, {"task": 1})
    assert label["requests"] == 8 + 2 + 3 and label["attempts"] == 13
    assert (label["gold_checked"], label["gold_agreed"]) == (3, 2)  # the blank one's reference: no answer
    labels = {r["id"]: r for r in _lines(repo / "data/labels/labels.jsonl")}
    assert {i: r["translation"] for i, r in labels.items()} == {i: german(*src[i]) for i in ids if i != ids[8]}
    assert labels[ids[1]]["attempts"] == 2 and labels[ids[0]]["gold_agrees"] is True
    assert labels[ids[4]]["gold_agrees"] is False and "gold" not in labels[ids[3]]
    invalid = _lines(repo / "data/labels/invalid.jsonl")
    assert [(r["id"], r["reason"], len(r["attempts"])) for r in invalid] == [(ids[8], "task", 3)]

    assert _metrics(repo, "merge")["kept"] == 9
    split = _metrics(repo, "split")
    assert split["sizes"] == {"train": 5, "val": 1, "test": 3} and split["leaked_prompts"] == 0
    test = _lines(repo / "data/split/test.jsonl")
    assert all(ex["translation"] == german(*src[ex["id"]]) for ex in test)

    # the floor: the second pass (temperature 0.7) drops each translation's last word
    from sacrebleu.metrics import BLEU, CHRF

    first = [german(*src[ex["id"]]) for ex in test]
    second = [t.rsplit(" ", 1)[0] for t in first]
    floor = _metrics(repo, "oracle_agreement")
    assert floor["n"] == floor["sampled"] == 3
    assert floor["chrf"] == round(CHRF().corpus_score(second, [first]).score, 4) < 100
    assert floor["bleu"] == round(BLEU().corpus_score(second, [first]).score, 4)
    reasked = 1 if ids[1] in {ex["id"] for ex in test} else 0
    assert floor["passes"]["second"]["requests"] == 3 + reasked == paid - 13
    assert floor["passes"]["first"]["requests"] == 0  # the label stage's answers, from the cache


# ----------------------------------------------------------------------------- generate
def _shrink(repo: Path, **changes) -> None:
    path = repo / "filters/home_energy_qa/v1/filter.yaml"
    raw = yaml.safe_load(path.read_text())
    raw.update({"topics": {"depth": 2, "breadth": 2}, "dedup": {"shingle_size": 3, "jaccard": 0.6}, "batch": 3,
                **changes})
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def test_generate_a_qa_set_through_dvc_and_grow_it_from_the_cache(project):
    repo, env = project
    _shrink(repo, target=6)
    _commit(repo, env)
    with FakeOpenAI(responder=generate_responder) as srv:
        run = [sys.executable, "-m", "dvc", "exp", "run", "oracle_check", "-S", "filter=home_energy_qa", *_oracle(srv)]
        out = _sh(run, repo, env)
        assert _stages_run(out) == ["prefilter", "label", "merge", "split", "oracle_check"]
        assert srv.count == 10  # 3 topic expansions, 6 requests for items, 1 re-ask

        assert "reads no corpus" in _metrics(repo, "prefilter")["skipped"]
        assert (repo / "data/prefiltered/passed.jsonl").read_text() == ""
        label = _metrics(repo, "label")
        assert {k: label[k] for k in ("kept", "target_reached", "items_asked", "items_valid", "items_invalid",
                                      "exact_duplicates", "near_duplicates", "steps", "rounds", "topics",
                                      "requests", "cache_hits")} == {
            "kept": 6, "target_reached": True, "items_asked": 18, "items_valid": 15, "items_invalid": 3,
            "exact_duplicates": 6, "near_duplicates": 3, "steps": 6, "rounds": 2, "topics": 4, "requests": 10,
            "cache_hits": 0}
        expected = [new_item(LEAVES[s % 4], s // 4) for s in range(6)]
        assert [r["label"] for r in _lines(repo / "data/labels/labels.jsonl")] == expected
        assert _metrics(repo, "merge")["kept"] == 6

        split = _metrics(repo, "split")  # 4 topics: one to test, one to val, two to train, whole
        parts = {s: _lines(repo / f"data/split/{s}.jsonl") for s in ("train", "val", "test")}
        topics = {s: {r["topic"] for r in rows} for s, rows in parts.items()}
        assert [len(topics[s]) for s in ("train", "val", "test")] == [2, 1, 1] and split["leaked_prompts"] == 0
        assert sum(split["sizes"].values()) == 6 and set().union(*topics.values()) == set(LEAVES)
        assert _metrics(repo, "oracle_agreement")["measured"] is False

        tree = _sh([str(BIN / "distill"), "templates", "tree"], repo, env)
        assert tree.splitlines()[2:] == ["(domain)", "  solar", "    panels", "    inverters", "  storage",
                                         "    batteries", "    tanks", "4 leaf topic(s)"]
        assert srv.count == 10

        # two more items: the label stage reruns, replays the first run's 10 requests from the cache and
        # pays for 2 (batteries and tanks, second round)
        _shrink(repo, target=8)
        out = _sh(run, repo, env)
        assert _stages_run(out)[:4] == ["prefilter", "label", "merge", "split"]
        label = _metrics(repo, "label")
        assert (label["kept"], label["requests"], label["cache_hits"], srv.count) == (8, 2, 10, 12)
        rows = _lines(repo / "data/labels/labels.jsonl")
        assert [r["label"] for r in rows] == [*expected, new_item(LEAVES[2], 1), new_item(LEAVES[3], 1)]
