"""The generate job against the fake OpenAI server: the topic tree, items spread over its leaves, every
drop recorded, metrics by hand, a rerun with a larger target paying only for the new items, the
budget, a stall, and the topic tree read back from the cache by `distill templates tree`.

The scripted oracle (:func:`tests.scripted_oracles.generate_responder`) splits the domain into solar
and storage, each into two leaves, and answers every request for leaf L with k items so far with
three items: the k-th new question, the same shouted (an exact duplicate), and a near duplicate (on
panels and batteries) or an item without its answer (on inverters and tanks).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill.config import LabelConfig
from distill.errors import DistillError
from distill.filterspec import load_filter_at
from distill.labeling.generate import generate
from distill.merge import answer_hash
from tests.fakes.openai_server import FakeOpenAI, first_user_message
from tests.oracle_harness import checked, fake_oracle, set_key
from tests.scripted_oracles import LEAVES, generate_responder, near, new_item, shouted, so_far

ROOT = Path(__file__).resolve().parents[1]
KEY_ENV = "DISTILL_TEST_GENERATE_KEY"
SMALL = {"target": 6, "topics": {"depth": 2, "breadth": 2}, "dedup": {"shingle_size": 3, "jaccard": 0.6},
         "batch": 3, "stall_rounds": 3}


@pytest.fixture
def srv(monkeypatch):
    set_key(monkeypatch, KEY_ENV, "sk-test-")
    yield from checked(FakeOpenAI(responder=generate_responder))


def _filter(tmp_path: Path, **changes):
    """The shipped home_energy_qa filter, made small (SMALL, then ``changes``)."""
    dest = tmp_path / "filters" / "home_energy_qa" / "v1"
    if not dest.exists():
        shutil.copytree(ROOT / "filters" / "home_energy_qa" / "v1", dest)
    raw = yaml.safe_load((dest / "filter.yaml").read_text())
    raw.update({**SMALL, **changes})
    (dest / "filter.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_filter_at(tmp_path / "filters", "home_energy_qa", "v1")


def _run(tmp_path: Path, srv: FakeOpenAI, spec, **label: object) -> dict:
    cfg = fake_oracle("openai", "fake-generator", srv.base_url, KEY_ENV, **label.pop("oracle", {}))
    lc = LabelConfig(cache_path=str(tmp_path / "cache.sqlite"), output_dir=str(tmp_path / "labels"),
                     progress="off", **label)
    return generate(lc, cfg, spec, tmp_path)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _id(item: dict) -> str:
    return f"gen-{answer_hash(item)[:16]}"


def test_the_job_spreads_items_over_the_leaves_and_records_every_drop(tmp_path, srv):
    spec = _filter(tmp_path)
    metrics = _run(tmp_path, srv, spec)
    # waves of min(4 leaves, ceil(remaining / 3)) steps: 2, 2, 1, 1; each step keeps its new question
    # steps: panels, inverters, batteries, tanks, panels (k=1, broken JSON first: one re-ask), inverters (k=1)
    kept_items = [new_item(LEAVES[s % 4], s // 4) for s in range(6)]
    rows = _lines(tmp_path / "labels" / "labels.jsonl")
    assert [r["label"] for r in rows] == kept_items
    assert [r["id"] for r in rows] == [_id(i) for i in kept_items]
    assert [r["topic"] for r in rows] == [LEAVES[s % 4] for s in range(6)]
    for r in rows:  # what the student is asked: one item of the topic, nothing listed
        assert r["messages"] == spec.student_messages(r["topic"]) and r["text"] == r["label"]["question"]
    assert metrics == {**metrics, "kept": 6, "target_reached": True, "stopped": None, "steps": 6, "rounds": 2,
                       "topics": 4, "items_asked": 18, "items_received": 18, "items_valid": 15, "items_invalid": 3,
                       "invalid_by_reason": {"schema": 3}, "exact_duplicates": 6, "near_duplicates": 3,
                       "beyond_target": 0, "requests_invalid": 0, "provider_errors": 0,
                       "requests": 3 + 7, "cache_hits": 0, "attempts": 10}
    assert metrics["topic_tree"] == {"depth": 2, "breadth": 2, "seeds": 0, "expansions": 3, "expansions_failed": 0}
    assert srv.count == 10 and json.loads((tmp_path / "label.json").read_text()) == metrics

    dropped = _lines(tmp_path / "labels" / "invalid.jsonl")
    by_step = {}
    for d in dropped:
        by_step.setdefault(d["step"], []).append(d)
    first = kept_items[0]  # panels, k=0: 12 words, 10 three-word shingles, the last one changed: 9 / 11
    assert [(d["reason"], d["duplicate_of"], d["similarity"], d["item"]) for d in by_step[0]] == [
        ("exact_duplicate", _id(first), 1.0, shouted(first)),
        ("near_duplicate", _id(first), round(9 / 11, 4), near(first))]
    fifth = kept_items[4]  # panels, k=1: 11 words, 9 shingles: 8 / 10
    assert by_step[4][1]["similarity"] == 0.8 and by_step[4][1]["duplicate_of"] == _id(fifth)
    assert [d["reason"] for d in by_step[1]] == ["exact_duplicate", "invalid_item"]
    assert "'answer' is a required property" in by_step[1][1]["detail"]
    # the prompt of step 4 listed panels' first question; the student's never lists any
    asked = [b for b in srv.requests if "Topic: solar > panels" in first_user_message(b)
             and "items" in json.dumps(b.get("response_format"))]
    assert [so_far(first_user_message(b)) for b in asked] == [0, 1, 1]  # step 0, step 4 and its re-ask
    assert f"- {first['question']}" in first_user_message(asked[1])
    assert asked[1]["response_format"]["json_schema"]["schema"] == spec.batch_schema(3)


def test_a_rerun_is_free_and_a_larger_target_pays_only_for_the_new_items(tmp_path, srv):
    first = _run(tmp_path, srv, _filter(tmp_path))
    rows = _lines(tmp_path / "labels" / "labels.jsonl")
    again = _run(tmp_path, srv, _filter(tmp_path))
    assert srv.count == first["requests"] == 10 and again["requests"] == 0 and again["cache_hits"] == 10
    assert _lines(tmp_path / "labels" / "labels.jsonl") == rows

    more = _run(tmp_path, srv, _filter(tmp_path, target=8))
    # every request of the first run is a cache hit; steps 6 (batteries, k=1) and 7 (tanks, k=1) are new
    assert more["cache_hits"] == 10 and more["requests"] == 2 and srv.count == 12
    bigger = _lines(tmp_path / "labels" / "labels.jsonl")
    assert bigger[:6] == rows and [r["label"] for r in bigger[6:]] == [new_item(LEAVES[2], 1), new_item(LEAVES[3], 1)]


def test_the_budget_stops_the_job_and_a_rerun_resumes_from_the_cache(tmp_path, srv):
    spec = _filter(tmp_path)
    price = {"price": {"input_per_mtok": 10.0, "output_per_mtok": 10.0}}  # a request reserves about $0.005
    with pytest.raises(DistillError, match="budget reached") as e:
        _run(tmp_path, srv, spec, budget_usd=0.012, oracle=price)
    assert "Raise label.budget_usd" in str(e.value)
    stopped = json.loads((tmp_path / "label.json").read_text())
    assert stopped["stopped"].startswith("budget reached") and not stopped["target_reached"]
    assert 0 < stopped["requests"] < 10 and stopped["kept"] < 6
    paid = srv.count
    resumed = _run(tmp_path, srv, spec, oracle=price)
    assert resumed["kept"] == 6 and resumed["cache_hits"] == paid and srv.count == 10


def test_a_job_that_finds_nothing_new_stops_and_says_why(tmp_path, srv):
    def repeats(body):  # the same first question every time; tanks always answers broken JSON
        prompt = first_user_message(body)
        if "subtopics" in json.dumps(body.get("response_format")):
            return generate_responder(body)
        if "Topic: storage > tanks" in prompt:
            return "no JSON here"
        topic = prompt.split("Topic: ", 1)[1].splitlines()[0]
        return {"items": [new_item(topic, 0)]}

    srv.responder = repeats
    metrics = _run(tmp_path, srv, _filter(tmp_path, target=10, stall_rounds=1), max_attempts=2)
    # wave 1: min(4, ceil(10 / 3)) = 4 steps, three leaves keep one item each, tanks fails (1 idle);
    # wave 2: ceil(7 / 3) = 3 steps, all duplicates: 4 idle in a row = 1 round over the 4 topics
    assert metrics["kept"] == 3 and metrics["steps"] == 7 and not metrics["target_reached"]
    assert metrics["stopped"].startswith("stalled: 1 rounds over the 4 topics (4 requests in a row)")
    assert metrics["exact_duplicates"] == 3 and metrics["requests_invalid_by_reason"] == {"bad_json": 1}
    failed = [d for d in _lines(tmp_path / "labels" / "invalid.jsonl") if d["reason"] == "bad_json"]
    assert [d["id"] for d in failed] == ["step-3"] and len(failed[0]["attempts"]) == 2


def test_templates_tree_reads_the_topic_tree_from_the_cache(tmp_path, srv, monkeypatch):
    from click.testing import CliRunner

    from distill.cli import main

    spec = _filter(tmp_path)
    monkeypatch.chdir(tmp_path)
    params = {"filter": {"name": "home_energy_qa", "version": "v1", "root": "filters"},
              "oracle": {"provider": "openai", "model": "fake-generator", "base_url": srv.base_url,
                         "api_key_env": KEY_ENV, "temperature": 0.0, "max_tokens": 300, "seed": 7},
              "label": {"cache_path": "cache.sqlite"}}
    Path("params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(main, ["templates", "tree"])
    assert result.exit_code == 2 and "cache.sqlite not found: run the label stage first" in result.output

    _run(tmp_path, srv, spec)
    count = srv.count
    result = CliRunner().invoke(main, ["templates", "tree"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[2:] == ["(domain)", "  solar", "    panels", "    inverters", "  storage",
                                              "    batteries", "    tanks", "4 leaf topic(s)"]
    assert srv.count == count  # nothing was sent

    params["oracle"]["temperature"] = 0.5  # other cache keys: nothing of this tree is cached
    Path("params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(main, ["templates", "tree"])
    assert "(domain)  [not expanded: no answer (not in the cache)]" in result.output
    assert "1 leaf topic(s); 1 not expanded" in result.output and srv.count == count


def test_templates_tree_of_a_filter_of_another_kind_says_so(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from distill.cli import main

    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["templates", "tree"])  # the project's params: the rubric filter
    assert result.exit_code == 2 and "is a score task; the topic tree is a generate filter's" in result.output


def test_the_label_stage_refuses_the_sklearn_student_before_any_request(tmp_path, monkeypatch):
    from distill.params import compose

    shutil.copytree(ROOT / "filters", tmp_path / "filters")
    params = compose(ROOT / "conf", ["filter=home_energy_qa", "oracle=openai", f"oracle.api_key_env={KEY_ENV}",
                                     "oracle.base_url=http://127.0.0.1:9/v1"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "label.py")], cwd=tmp_path,
                          env={**__import__("os").environ, KEY_ENV: "sk-x"}, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "student=sklearn learns score and classify tasks" in proc.stderr and "use student=lora" in proc.stderr
    assert not (tmp_path / ".distill").exists()
