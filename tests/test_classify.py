"""The classify kind: its schema and labels, gold, hand-computed metrics, and the pipeline on BBC News
(the BBC's own sections as gold) with a fake oracle that is right about some articles and wrong about
others."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distill import jsonl, pipeline
from distill.config import LabelConfig, MergeConfig, SklearnStudent, SplitConfig, TrainConfig
from distill.filterspec import load_filter
from distill.merge import text_hash
from distill.providers import oracle_config
from distill.tasks import ClassifyTask
from distill.validate import Invalid, check
from tests.fakes.openai_server import FakeOpenAI, prompt_title

ROOT = Path(__file__).resolve().parents[1]
TASK = load_filter(ROOT / "filters" / "news_topic" / "v1")
KEY_ENV = "DISTILL_TEST_CLASSIFY_KEY"


def multi_task() -> ClassifyTask:
    raw = TASK.model_dump(exclude={"root", "template_text"}) | {"multi_label": True, "rationale": False}
    return ClassifyTask.model_validate(raw)


# ----------------------------------------------------------------------------- the kind itself
def test_the_schema_accepts_one_known_label_and_refuses_the_rest():
    assert isinstance(TASK, ClassifyTask) and TASK.label_names == ["business", "entertainment", "politics",
                                                                    "sport", "tech"]
    ok = check('{"label": "sport", "rationale": "A match report."}', TASK.json_schema)
    assert ok == {"label": "sport", "rationale": "A match report."}
    assert isinstance(check('{"label": "weather", "rationale": "x"}', TASK.json_schema), Invalid)
    assert isinstance(check('{"label": "sport"}', TASK.json_schema), Invalid)  # the rationale is required
    multi = multi_task()
    assert check('{"labels": ["tech", "business"]}', multi.json_schema) == {"labels": ["tech", "business"]}
    assert isinstance(check('{"labels": []}', multi.json_schema), Invalid)
    assert isinstance(check('{"labels": ["tech", "tech"]}', multi.json_schema), Invalid)
    assert multi.labelled({"labels": ["tech", "business"]})["labels"] == ["business", "tech"]  # the task's order


def test_the_prompt_lists_the_labels_with_their_descriptions():
    user = TASK.render({"id": "a", "title": "Cup final", "text": "The match ended 2-1."})[1]["content"]
    assert "- sport: competitions, athletes, teams, results and transfers" in user
    assert "one of business, entertainment, politics, sport, tech" in user and "The match ended 2-1." in user


def test_gold_is_matched_case_insensitively_and_can_replace_the_answer():
    row = TASK.labelled({"label": "politics", "rationale": "x"})
    assert TASK.gold_agrees(row, "Politics") is True and TASK.gold_agrees(row, "sport") is False
    assert TASK.gold_agrees(row, "weather") is None  # not a label of the task: not a comparison
    fixed = TASK.with_gold(row, "sport")
    assert fixed["labels"] == ["sport"] and fixed["label"] == {"label": "sport", "rationale": "x"}
    multi = multi_task()
    assert multi.gold_agrees(multi.labelled({"labels": ["tech", "business"]}), "business, tech") is True


def test_metrics_equal_the_hand_computed_values():
    truth = [{"id": str(i), "labels": [label]} for i, label in enumerate(["sport", "sport", "tech", "politics"])]
    predictions = [
        {"id": "0", "answer": {"label": "sport"}},
        {"id": "1", "answer": None},  # invalid: a miss for sport
        {"id": "2", "answer": {"label": "business"}},
        {"id": "3", "answer": {"label": "politics"}},
    ]
    metrics, rows, per_label = TASK.evaluate(truth, predictions)
    assert metrics["valid_json_share"] == 0.75 and metrics["accuracy"] == 0.5
    # sport P=1 R=1/2 F1=2/3; tech R=0 F1=0; politics 1; business P=0 (one false positive) F1=0;
    # entertainment: no items, no predictions -> 1
    assert metrics["per_label"]["sport"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}
    assert metrics["per_label"]["business"]["f1"] == 0.0 and metrics["per_label"]["entertainment"]["f1"] == 1.0
    assert metrics["macro_f1"] == round((0.6667 + 0 + 1 + 0 + 1) / 5, 4)
    # micro: TP 2 (sport, politics), FP 1 (business), FN 2 (sport, tech) -> P 2/3, R 1/2
    assert metrics["micro_f1"] == round(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5), 4)
    assert [r["predicted"] for r in rows] == ["sport", "invalid", "business", "politics"]
    assert [(p["name"], p["value"]) for p in per_label][:2] == [("business", 0.0), ("entertainment", 1.0)]


def test_oracle_agreement_and_kappa_by_hand():
    first = {str(i): {"labels": [x]} for i, x in enumerate(["sport", "sport", "tech", "tech"])}
    second = {str(i): {"labels": [x]} for i, x in enumerate(["sport", "tech", "tech", "tech"])}
    result = TASK.agreement(first, second, ["0", "1", "2", "3"])
    # observed agreement 3/4; chance: sport 2/4 x 1/4 + tech 2/4 x 3/4 = 1/2; kappa (0.75 - 0.5) / 0.5
    assert result["n"] == 4 and result["label_agreement"] == 0.75 and result["cohen_kappa"] == 0.5


# ----------------------------------------------------------------------------- the pipeline on BBC
def _bbc_slice(shared_data: Path, per_category: int) -> list[dict[str, Any]]:
    by_cat: dict[str, list[dict[str, Any]]] = {}
    for row in jsonl.read_jsonl(shared_data / "corpora" / "bbc_news_2225.jsonl"):
        bucket = by_cat.setdefault(row["category"], [])
        if len(bucket) < per_category:
            bucket.append(row)
    return [r for rows in by_cat.values() for r in rows]


def test_the_pipeline_labels_bbc_checks_gold_and_trains_a_classifier(tmp_path, shared_data, monkeypatch):
    """A fake oracle answers the BBC section for every article except those whose id ends in 7 (it
    answers the next section in the list there): the label stage's gold agreement, the split's strata
    and the sklearn student's evaluation follow from that."""
    rows = _bbc_slice(shared_data, per_category=20)
    (tmp_path / "bbc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    wrong = {r["id"] for r in rows if r["id"].endswith("7")}
    by_title = {r["title"]: r for r in rows}
    names = TASK.label_names

    def answer(row: dict) -> str:
        return names[(names.index(row["category"]) + 1) % len(names)] if row["id"] in wrong else row["category"]

    def responder(body: dict) -> dict:
        label = answer(by_title[prompt_title(body)])
        return {"label": label, "rationale": f"about {label}"}

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(KEY_ENV, "sk-test")
    from distill.config import PrefilterConfig

    prefilter_cfg = PrefilterConfig(input="bbc.jsonl", field_map={"id": "id", "title": "title", "text": "text",
                                                                  "gold": "category"}, metadata=["source"])
    # the BBC corpus repeats some articles word for word: the prefilter keeps the first of each
    seen: set[str] = set()
    kept = []
    for r in rows:
        if (h := text_hash(r["text"])) not in seen:
            seen.add(h)
            kept.append(r)
    pm = pipeline.prefilter(prefilter_cfg, TASK, metrics_dir=Path("metrics"))
    assert pm["passed"] == len(kept) and len(kept) < len(rows)
    wrong_kept = {r["id"] for r in kept} & wrong
    with FakeOpenAI(responder) as srv:
        oracle = oracle_config(provider="openai", model="fake-classifier", base_url=srv.base_url, api_key_env=KEY_ENV)
        lm = pipeline.label(LabelConfig(max_words=300, progress="off", cache_path="cache.sqlite",
                                        output_dir="labels"), oracle, TASK, "data/prefiltered/passed.jsonl",
                            metrics_dir=Path("metrics"))
    assert lm["valid"] == len(kept) and lm["gold_checked"] == len(kept)
    assert lm["gold_agreed"] == len(kept) - len(wrong_kept)
    labelled = list(jsonl.read_jsonl("labels/labels.jsonl"))
    assert sum(not r["gold_agrees"] for r in labelled) == len(wrong_kept)

    mm = pipeline.merge(MergeConfig(extra_dir="none", output_dir="merged", reviews="none.jsonl"), TASK,
                        "labels/labels.jsonl", metrics_dir=Path("metrics"))
    assert mm["exact_duplicates"] == 0  # already gone before the oracle was paid for them
    counts = {c: sum(1 for r in kept if answer(r) == c) for c in TASK.label_names}
    assert mm["labels"] == counts

    sm = pipeline.split(SplitConfig(seed=1, output_dir="split"), TASK, "merged/labels.jsonl",
                        metrics_dir=Path("metrics"))
    assert sm["label_counts"]["test"] == {c: round(n * 0.1) or 1 for c, n in counts.items()}
    test_rows = list(jsonl.read_jsonl("split/test.jsonl"))
    assert all(r["labels"] == [json.loads(r["messages"][-1]["content"])["label"]] for r in test_rows)
    assert all("gold" in r for r in test_rows)

    pipeline.train(TrainConfig(output_dir="model"), SklearnStudent(kind="sklearn"), TASK, "split",
                   metrics_dir=Path("metrics"))
    em = pipeline.evaluate(__import__("distill.config", fromlist=["EvaluateConfig"]).EvaluateConfig(
        output_dir="eval"), TASK, "split", "model", metrics_dir=Path("metrics"))
    predictions = list(jsonl.read_jsonl("eval/predictions.jsonl"))
    right = sum(p["answer"]["label"] == t["labels"][0] for p, t in zip(predictions, test_rows))
    assert em["accuracy"] == round(right / len(test_rows), 4) and em["valid_json_share"] == 1.0
    # it learned the sections: better than always answering the oracle's most frequent label
    train_labels = [r["labels"][0] for r in jsonl.read_jsonl("split/train.jsonl")]
    majority = max(set(train_labels), key=train_labels.count)
    assert right > sum(t["labels"][0] == majority for t in test_rows) + 2


@pytest.mark.parametrize("bad", [{"labels": ["sport"]}, {"labels": [{"name": "a"}, {"name": "a"}]}])
def test_a_filter_with_too_few_or_duplicate_labels_is_refused(bad):
    from pydantic import ValidationError

    raw = TASK.model_dump(exclude={"root", "template_text"}) | bad
    with pytest.raises(ValidationError):
        ClassifyTask.model_validate(raw)
