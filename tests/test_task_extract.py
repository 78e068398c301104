"""The extract kind: schema, the in-text check and its re-ask, entity metrics on hand-computed fixtures,
gold (hand-written for 8 BBC articles), oracle agreement, and what a student is told."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.errors import FilterSpecError
from distill.filterspec import load_filter, load_filter_at
from distill.tasks.extract import MISSED, SPURIOUS, ExtractTask, partial_match
from tests.conftest import ROOT
from tests.fakes.openai_server import FakeOpenAI, prompt_title, turn
from tests.oracle_harness import checked, fake_oracle, label_records, set_key

SPEC = load_filter_at(ROOT / "filters", "news_entities", "v1")
GOLD_FILE = Path(__file__).parent / "fixtures" / "bbc_entities_gold.json"
KEY_ENV = "EXTRACT_TEST_KEY"


def _ents(**by_type: list[str]) -> list[dict[str, str]]:
    return [{"type": t, "text": x} for t, texts in by_type.items() for x in texts]


def _row(rid: str, **by_type: list[str]) -> dict:
    """A test row as the split writes it: the task's label fields."""
    return {"id": rid, **{k: v for k, v in SPEC.labelled({"entities": _ents(**by_type)}).items() if k != "label"}}


def _pred(rid: str, **by_type: list[str]) -> dict:
    return {"id": rid, "answer": {"entities": _ents(**by_type)}, "raw": "", "invalid_reason": None}


# ----------------------------------------------------------------------------- the package and its schema
def test_the_example_filter_loads_as_an_extract_task_with_its_types_in_the_prompt():
    assert isinstance(SPEC, ExtractTask) and SPEC.type_names == ["person", "organisation", "place"]
    items = SPEC.json_schema["properties"]["entities"]["items"]
    assert items["properties"]["type"] == {"enum": ["person", "organisation", "place"]}
    assert SPEC.json_schema["required"] == ["entities"]
    user = SPEC.render({"id": "a", "title": "T", "text": "Body."})[1]["content"]
    assert "- person: a named individual" in user and "one of person, organisation, place" in user


def test_fields_are_typed_json_schema_snippets_next_to_the_entities(tmp_path):
    folder = _copy_filter(tmp_path, {"fields": {"topic": {"enum": ["politics", "sport"], "description": "the beat"},
                                                "year": {"type": ["integer", "null"]}}})
    spec = load_filter(folder)
    assert spec.json_schema["required"] == ["entities", "topic", "year"]
    assert spec.json_schema["properties"]["year"] == {"type": ["integer", "null"]}
    assert spec.labelled({"entities": [], "topic": "sport", "year": None})["fields"] == {"topic": "sport",
                                                                                         "year": None}


def test_a_broken_extract_filter_lists_every_problem(tmp_path):
    folder = _copy_filter(tmp_path, {
        "entity_types": [{"name": "person"}, {"name": "person"}],
        "fields": {"entities": {"type": "string"}, "when": {"type": "not-a-type"}},
    })
    with pytest.raises(FilterSpecError) as e:
        load_filter(folder)
    msg = str(e.value)
    assert "duplicate entity type(s): person" in msg
    assert "fields: 'entities' must be snake_case and not 'entities'" in msg
    assert "fields.when: not a valid JSON schema at type" in msg


def _copy_filter(tmp_path: Path, changes: dict) -> Path:
    import shutil

    import yaml

    folder = tmp_path / "news_entities" / "v1"
    shutil.copytree(ROOT / "filters" / "news_entities" / "v1", folder)
    raw = yaml.safe_load((folder / "filter.yaml").read_text())
    (folder / "filter.yaml").write_text(yaml.safe_dump({**raw, **changes}))
    return folder


# ----------------------------------------------------------------------------- the check
def test_an_entity_not_in_the_text_is_fed_back_by_name():
    record = {"title": "Blunkett hints at election call",
              "text": "Ex-Home Secretary David Blunkett spoke to BBC Radio  Five Live about O\u2019Sullivan."}
    ok = {"entities": _ents(person=["david blunkett", "O'Sullivan", "Blunkett"], organisation=["BBC Radio Five Live"])}
    assert SPEC.check(ok, record) is None  # case, whitespace and typographic quotes do not matter
    bad = {"entities": _ents(person=["David Blunkett", "Tony Blair"], place=["Sheffield"])}
    assert SPEC.check(bad, record) == ("not found in the text: 'Tony Blair' (person); 'Sheffield' (place). Give "
                                       "each entity's text exactly as it is written in the text, or leave it out")
    lenient = SPEC.model_copy(update={"require_spans_in_text": False})
    assert lenient.check(bad, record) is None


@pytest.fixture
def oracle(monkeypatch):
    set_key(monkeypatch, KEY_ENV, "sk-extract-")
    yield from checked(FakeOpenAI())


def test_the_oracle_is_asked_again_about_an_invented_entity_on_a_real_article(oracle, tmp_path, shared_data):
    """The engine validates the schema, then the task's check; the re-ask quotes the entity."""
    record = _bbc(shared_data, "bbc-politics-397")
    gold = json.loads(GOLD_FILE.read_text())["bbc-politics-397"]
    first = {"entities": [*_ents(person=["David Blunkett", "Gordon Brown"]), {"type": "place", "text": "Sheffield"}]}
    second = {"entities": SPEC.gold_entities(gold)}
    oracle.responder = lambda body: first if turn(body) == 0 else second
    cfg = fake_oracle("openai", "fake", oracle.base_url, KEY_ENV)
    valid, invalid, stats = label_records(tmp_path, cfg, SPEC, [{**record, "gold": gold}], max_words=500)
    row = valid[record["title"]]
    assert not invalid and stats["attempts"] == 2 and row["attempts"] == 2
    feedback = oracle.requests[1]["messages"][-1]["content"]
    assert "not found in the text: 'Gordon Brown' (person)" in feedback and "'Sheffield'" not in feedback
    assert row["entities"] == second["entities"] and row["gold_agrees"] is True
    assert stats["gold_checked"] == 1 and stats["gold_agreed"] == 1
    assert prompt_title(oracle.requests[0]) == record["title"]


def _bbc(shared_data: Path, rid: str) -> dict:
    for line in (shared_data / "corpora" / "bbc_news_2225.jsonl").open(encoding="utf-8"):
        row = json.loads(line)
        if row["id"] == rid:
            return {"id": rid, "title": row["title"], "text": row["text"], "metadata": {}}
    raise KeyError(rid)


# ----------------------------------------------------------------------------- metrics
def test_partial_match_is_word_containment_or_half_the_words_shared():
    assert partial_match("blair", "tony blair") and partial_match("the labour party", "labour party")
    assert partial_match("new york times", "the new york times company")
    assert not partial_match("ian", "brian")  # words, not characters
    assert not partial_match("bank of england", "england's central bank")  # 2 of 5 words shared: 0.4
    assert partial_match("manchester united fc", "united manchester")  # 2 of 3 words shared, not in order


def test_entity_metrics_on_a_hand_computed_fixture():
    truth = [_row("r1", person=["Tony Blair", "Michael Howard"], organisation=["Labour Party"], place=["London"]),
             _row("r2", person=["John Major"], place=["Sheffield", "US"]),
             _row("r3", organisation=["Bank of England"])]
    predictions = [
        # "Tony Blair" twice (once with two spaces) counts once; "Howard" is a partial match; BBC is spurious
        _pred("r1", person=["Tony Blair", "Tony  Blair", "Howard"], organisation=["Labour Party", "BBC"]),
        _pred("r2", person=["John Major"], organisation=["Sheffield"], place=["US"]),  # Sheffield: wrong type
        {"id": "r3", "answer": None, "raw": "{", "invalid_reason": "bad_json"},  # extracts nothing
    ]
    metrics, confusion, per_type = SPEC.evaluate(truth, predictions)
    # exact, by type (tp / predicted / true): person 2/3/3, organisation 1/3/2, place 1/1/3
    assert metrics["per_type"]["person"]["exact"] == {"precision": 0.6667, "recall": 0.6667, "f1": 0.6667}
    assert metrics["per_type"]["organisation"]["exact"] == {"precision": 0.3333, "recall": 0.5, "f1": 0.4}
    assert metrics["per_type"]["place"]["exact"] == {"precision": 1.0, "recall": 0.3333, "f1": 0.5}
    assert [metrics["per_type"][t]["support"] for t in SPEC.type_names] == [3, 2, 3]
    # micro: 4 of 7 predicted are right, 4 of 8 true are found: F1 = 2*4 / (7+8)
    assert (metrics["exact_precision"], metrics["exact_recall"], metrics["exact_f1"]) == (0.5714, 0.5, 0.5333)
    assert metrics["exact_macro_f1"] == 0.5222  # (0.6667 + 0.4 + 0.5) / 3
    # partial: "Howard" matches "Michael Howard", so person is 3/3/3
    assert metrics["per_type"]["person"]["partial"]["f1"] == 1.0
    assert (metrics["partial_precision"], metrics["partial_recall"], metrics["partial_f1"]) == (0.7143, 0.625, 0.6667)
    assert metrics["partial_macro_f1"] == 0.6333  # (1 + 0.4 + 0.5) / 3
    assert metrics["valid_json_share"] == 0.6667 and metrics["n_test"] == 3 and metrics["n_entities"] == 8
    assert {(r["id"], r["actual"], r["predicted"]) for r in confusion} == {
        ("r1", "person", "person"), ("r1", "organisation", "organisation"), ("r1", "person", MISSED),
        ("r1", "place", MISSED), ("r1", SPURIOUS, "person"), ("r1", SPURIOUS, "organisation"),
        ("r2", "person", "person"), ("r2", "place", "place"), ("r2", "place", "organisation"),
        ("r3", "organisation", MISSED)}
    assert per_type == [{"name": "person", "value": 0.6667, "metric": "f1"},
                        {"name": "organisation", "value": 0.4, "metric": "f1"},
                        {"name": "place", "value": 0.5, "metric": "f1"}]


def test_partial_matches_are_one_to_one():
    truth = [_row("r", person=["Tony Blair", "Cherie Blair"])]
    metrics, _, _ = SPEC.evaluate(truth, [_pred("r", person=["Blair"])])
    assert metrics["partial_precision"] == 1.0 and metrics["partial_recall"] == 0.5  # one Blair, not two


def test_a_type_nobody_used_scores_one_and_a_spurious_type_zero():
    metrics, _, _ = SPEC.evaluate([_row("r", person=["Ann Lee"])], [_pred("r", person=["Ann Lee"])])
    assert metrics["exact_f1"] == 1.0 and metrics["exact_macro_f1"] == 1.0
    metrics, _, _ = SPEC.evaluate([_row("r", person=["Ann Lee"])],
                                  [_pred("r", person=["Ann Lee"], place=["Leeds"])])
    assert metrics["per_type"]["place"]["exact"] == {"precision": 0.0, "recall": 1.0, "f1": 0.0}
    assert metrics["exact_macro_f1"] == 0.6667


def test_field_accuracy_compares_normalised_values(tmp_path):
    spec = load_filter(_copy_filter(tmp_path, {"fields": {"topic": {"type": "string"}}}))

    def row(rid, topic):
        return {"id": rid, **{k: v for k, v in spec.labelled({"entities": [], "topic": topic}).items()
                              if k != "label"}}

    truth = [row("a", "Politics"), row("b", "sport"), row("c", "tech")]
    predictions = [{"id": "a", "answer": {"entities": [], "topic": "politics."}},
                   {"id": "b", "answer": {"entities": [], "topic": "business"}}, {"id": "c", "answer": None}]
    assert spec.evaluate(truth, predictions)[0]["field_accuracy"] == {"topic": 0.3333}


def test_oracle_agreement_is_the_second_oracles_f1_against_the_first():
    first = {"a": _row("a", person=["Ann Lee", "Bo Chan"]), "b": _row("b", place=["Leeds"]), "c": _row("c")}
    second = {"a": _row("a", person=["Ann Lee"]), "b": _row("b", place=["Leeds"], organisation=["Arup"])}
    result = SPEC.agreement(first, second, ["a", "b", "c"])
    assert result["n"] == 2  # c only in the first
    # 2 shared of 3 in each: F1 = 2*2 / (3+3)
    assert result["exact_f1"] == 0.6667 and result["partial_f1"] == 0.6667


# ----------------------------------------------------------------------------- gold
def test_the_hand_written_gold_is_in_the_articles_and_passes_the_tasks_check(shared_data):
    gold = {k: v for k, v in json.loads(GOLD_FILE.read_text()).items() if not k.startswith("_")}
    assert len(gold) == 8
    counts = {}
    for rid, by_type in gold.items():
        record = _bbc(shared_data, rid)
        entities = SPEC.gold_entities(by_type)
        assert SPEC.check({"entities": entities}, record) is None, rid
        for e in entities:
            counts[e["type"]] = counts.get(e["type"], 0) + 1
    assert counts == {"person": 28, "organisation": 16, "place": 7}


def test_gold_comes_as_a_list_a_mapping_or_their_json_and_unknown_types_are_not_read():
    as_list = [{"type": "Person", "text": "Ann Lee"}, {"type": "place", "text": "Leeds"}]
    expected = _ents(person=["Ann Lee"], place=["Leeds"])
    assert SPEC.gold_entities(as_list) == expected
    assert SPEC.gold_entities({"person": ["Ann Lee"], "place": "Leeds"}) == expected
    assert SPEC.gold_entities(json.dumps({"entities": as_list})) == expected
    assert SPEC.gold_entities([{"type": "PER", "text": "Ann Lee"}]) is None
    assert SPEC.gold_entities("Ann Lee") is None and SPEC.gold_entities(3) is None
    row = _row("a", person=["Ann Lee"])
    assert SPEC.gold_agrees(row, [{"type": "PER", "text": "Ann Lee"}]) is None  # not compared: counted unusable


def test_gold_agrees_at_the_filters_f1_and_with_gold_replaces_the_entities():
    row = {"id": "a", "label": {"entities": _ents(person=["Blair"])}, **_row("a", person=["Blair"])}
    gold = {"person": ["Tony Blair"]}
    assert SPEC.gold_agrees(row, {"person": ["blair."]}) is True
    assert SPEC.gold_agrees(row, gold) is False  # exact F1 0
    partial = SPEC.model_copy(update={"gold": SPEC.gold.model_copy(update={"match": "partial"})})
    assert partial.gold_agrees(row, gold) is True
    half = SPEC.model_copy(update={"gold": SPEC.gold.model_copy(update={"min_f1": 0.6})})
    assert half.gold_agrees(row, {"person": ["Blair", "Cherie Blair"]}) is True  # F1 2/3
    assert half.gold_agrees(row, {"person": ["Blair", "Cherie Blair", "Euan Blair"]}) is False  # F1 1/2
    replaced = SPEC.with_gold(row, gold)
    assert replaced["label"] == {"entities": _ents(person=["Tony Blair"])}
    assert replaced["entities"] == _ents(person=["Tony Blair"]) and replaced["id"] == "a"


# ----------------------------------------------------------------------------- students
def test_a_student_is_told_the_types_and_the_sklearn_baseline_points_to_lora(tmp_path):
    from distill.config import SklearnStudent
    from distill.errors import ConfigError
    from distill.students import task_info, train_student

    info = task_info(SPEC)
    assert info["kind"] == "extract" and info["entity_types"] == ["person", "organisation", "place"]
    assert info["fields"] == [] and info["schema"] == SPEC.json_schema
    row = {"id": "a", "messages": [{"role": "user", "content": "x"}], **_row("a", person=["Ann Lee"])}
    with pytest.raises(ConfigError, match="student=lora"):
        train_student(SklearnStudent(kind="sklearn"), [row], [], SPEC, tmp_path / "m")
