"""The generate kind: generation templates (built-in and custom), the filter, the student's metrics on a
hand-computed fixture, the split that keeps a topic whole, and the prefilter that reads no corpus."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from distill.config import PrefilterConfig, SklearnStudent, SplitConfig
from distill.errors import ConfigError, FilterSpecError
from distill.filterspec import load_filter, load_filter_at
from distill.tasks import KINDS, GenerateTask
from distill.tasks.gen_templates import BUILTIN_DIR, available, find_template, read_template, search_path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "filters" / "home_energy_qa" / "v1"
SPEC = load_filter(SHIPPED)
BUILTINS = ["coding", "coding_reasoning", "reasoning", "simple_qa", "tool_trace"]


# ----------------------------------------------------------------------------- templates
def test_the_builtin_templates_load_and_their_examples_satisfy_their_schemas():
    assert [name for name, _ in available([BUILTIN_DIR])] == BUILTINS
    for name in BUILTINS:
        t = find_template(name, [BUILTIN_DIR])
        assert t.name == name and t.item_schema["type"] == "object" and t.description
    reasoning = find_template("reasoning", [BUILTIN_DIR])
    assert set(reasoning.item_schema["required"]) == {"question", "steps", "final_answer"}
    trace = find_template("tool_trace", [BUILTIN_DIR])
    call = trace.item_schema["properties"]["tool_calls"]["items"]
    assert set(call["required"]) == {"tool", "arguments", "result"}


def test_duplicates_are_judged_on_the_dedup_fields_only():
    qa = find_template("simple_qa", [BUILTIN_DIR])
    assert qa.item_text({"question": "Why insulate?", "answer": "It saves heat."}) == "Why insulate?"
    reasoning = find_template("reasoning", [BUILTIN_DIR])
    assert reasoning.item_text({"question": "q?", "steps": ["a"], "final_answer": "b"}) == "q?"
    reasoning_all = reasoning.model_copy(update={"dedup_fields": []})
    assert reasoning_all.item_text({"question": "q?", "steps": ["a", "b"], "final_answer": "c"}) == "q? a b c"


def test_the_oracle_sees_the_topics_items_so_far_and_the_student_is_asked_for_one():
    qa = find_template("simple_qa", [BUILTIN_DIR])
    so_far = [{"question": f"Question number {i}?", "answer": "a"} for i in range(25)]
    oracle = qa.render("home energy", "solar > panels", 4, so_far)
    assert "Domain: home energy\nTopic: solar > panels" in oracle and "Write 4 new" in oracle
    listed = [line for line in oracle.splitlines() if line.startswith("- Question number")]
    assert listed == [f"- Question number {i}?" for i in range(5, 25)]  # the last 20
    assert "(the last 20 of 25)" in oracle and 'holding 4 items' in oracle
    student = qa.render("home energy", "solar > panels", 1, [])
    assert "Items already written" not in student and "Write 1 new" in student
    assert student.endswith("Reply with one JSON object: the item, with the same fields as the example, and "
                            "nothing else.")
    assert "\n\n\n" not in student  # the empty examples block leaves no gap


def _template(**changes) -> dict:
    raw = yaml.safe_load((BUILTIN_DIR / "simple_qa.yaml").read_text())
    raw.update(name="mine", **changes)
    return raw


@pytest.mark.parametrize("changes, message", [
    ({"example": {"question": "Why insulate a loft?"}},
     "example does not satisfy the schema: at (root): 'answer' is a required property"),
    ({"example": {"question": "Why?", "answer": "a"}},
     "example does not satisfy the schema: at question: 'Why?' is too"),
    ({"user_prompt": "Write {count} items about {subject}"}, "unknown field(s) ['subject']"),
    ({"user_prompt": "Write {count} items"}, "never uses {topic}"),
    ({"dedup_fields": ["title"]}, "dedup_fields ['title'] are not properties"),
    ({"schema": {"type": "array"}}, "schema must describe a JSON object"),
])
def test_a_broken_template_says_what_to_fix(tmp_path, changes, message):
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(_template(**changes)))
    with pytest.raises(FilterSpecError) as e:
        read_template(tmp_path / "mine.yaml")
    assert message in str(e.value) and "mine.yaml" in str(e.value)


def test_a_template_is_named_by_its_file(tmp_path):
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(_template()))
    with pytest.raises(FilterSpecError, match="set name: other, or rename the file"):
        read_template(tmp_path / "other.yaml")


def _filter_copy(tmp_path: Path, **changes) -> Path:
    dest = tmp_path / "filters" / "home_energy_qa" / "v1"
    shutil.copytree(SHIPPED, dest)
    raw = yaml.safe_load((dest / "filter.yaml").read_text())
    raw.update(changes)
    (dest / "filter.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return dest


def test_custom_templates_come_from_template_dir_then_the_filter_folder_then_the_builtins(tmp_path):
    folder = _filter_copy(tmp_path, template="mine")
    with pytest.raises(FilterSpecError) as e:
        load_filter(folder)
    assert "generation template 'mine' not found" in str(e.value) and "simple_qa" in str(e.value)
    (folder / "mine.yaml").write_text(yaml.safe_dump(_template(description="in the filter folder")))
    assert load_filter(folder).tmpl.description == "in the filter folder"

    (tmp_path / "team_templates").mkdir()
    (tmp_path / "team_templates" / "mine.yaml").write_text(yaml.safe_dump(_template(description="the team's")))
    folder = _filter_copy(tmp_path / "second", template="mine", template_dir="../../../../team_templates")
    (folder / "mine.yaml").write_text(yaml.safe_dump(_template(description="in the filter folder")))
    spec = load_filter(folder)
    assert spec.tmpl.description == "the team's"  # template_dir first
    # a custom template may replace a built-in one of the same name
    shadow = {**yaml.safe_load((BUILTIN_DIR / "simple_qa.yaml").read_text()), "description": "our simple_qa"}
    (folder / "simple_qa.yaml").write_text(yaml.safe_dump(shadow))
    assert find_template("simple_qa", search_path(folder)).description == "our simple_qa"


# ----------------------------------------------------------------------------- the filter
def test_the_shipped_filter_is_a_generate_task():
    assert KINDS["generate"] is GenerateTask and isinstance(SPEC, GenerateTask)
    assert (SPEC.template, SPEC.target, SPEC.batch) == ("simple_qa", 120, 4)
    assert (SPEC.topics.depth, SPEC.topics.breadth, SPEC.dedup.jaccard) == (2, 4, 0.6)
    assert SPEC.json_schema == find_template("simple_qa", [BUILTIN_DIR]).item_schema
    assert SPEC.render({"topic": "heat pumps > sizing"}) == SPEC.student_messages("heat pumps > sizing")
    assert SPEC.student_messages("t")[0]["content"] == SPEC.tmpl.system_prompt.strip()
    batch = SPEC.batch_schema(4)["properties"]["items"]
    assert batch["maxItems"] == 4 and batch["items"] == SPEC.json_schema


def test_bad_generate_settings_fail_with_the_key_named(tmp_path):
    folder = _filter_copy(tmp_path, target=0, batch=0)
    with pytest.raises(FilterSpecError) as e:
        load_filter(folder)
    assert "target: Input should be greater than or equal to 1" in str(e.value)
    assert "batch: Input should be greater than or equal to 1" in str(e.value)


def test_the_sklearn_baseline_refuses_a_generate_task_naming_the_lora_student(tmp_path):
    from distill.students import student_problem, train_student

    row = {"id": "a", "topic": "t", "messages": [*SPEC.student_messages("t"),
                                                 {"role": "assistant", "content": "{}"}]}
    with pytest.raises(ConfigError, match="use student=lora"):
        train_student(SklearnStudent(kind="sklearn"), [row], [], SPEC, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    assert student_problem(SklearnStudent(kind="sklearn"), load_filter(
        ROOT / "filters" / "sustainability_tech_deployment" / "v1")) is None


# ----------------------------------------------------------------------------- evaluation by hand
def _test_row(i: int, topic: str, question: str) -> dict:
    item = {"question": question, "answer": "x"}
    return {"id": f"t{i}", "topic": topic, "messages": [*SPEC.student_messages(topic),
                                                        {"role": "assistant", "content": json.dumps(item)}]}


def test_student_items_metrics_by_hand():
    """Three valid answers and one invalid. With 1-word shingles and a 0.5 threshold:
    "a b c d" is new; "A B C D!" normalises to it (an exact duplicate); "a b c e" shares 3 of 5 words
    with it (0.6 > 0.5: a near duplicate)."""
    spec = SPEC.model_copy(update={"dedup": SPEC.dedup.model_copy(update={"shingle_size": 1, "jaccard": 0.5})})
    truth = [_test_row(1, "solar", "w x"), _test_row(2, "solar", "y z"), _test_row(3, "heat", "w y"),
             _test_row(4, "heat", "x z")]
    answers = [{"question": "a b c d", "answer": "1"}, {"question": "A B C D!", "answer": "2"},
               {"question": "a b c e", "answer": "3"}, None]
    predictions = [{"id": f"t{i}", "answer": a, "raw": "", "invalid_reason": None if a else "schema"}
                   for i, a in enumerate(answers, 1)]
    metrics, rows, parts = spec.evaluate(truth, predictions)
    assert metrics["n_test"] == 4 and metrics["valid_json_share"] == 0.75 and metrics["test_topics"] == 2
    assert metrics["distinct_share"] == round(2 / 3, 4)  # two distinct normalised texts among three
    assert metrics["near_distinct_share"] == round(1 / 3, 4)  # only the first would be kept
    # words a b c d | a b c d | a b c e: 5 distinct of 12; bigrams ab bc cd ab bc cd ab bc ce: 4 of 9
    assert metrics["distinct_1"] == round(5 / 12, 4) and metrics["distinct_2"] == round(4 / 9, 4)
    # word-set distances: (1, 2) 0, (1, 3) 1 - 3/5, (2, 3) 1 - 3/5 -> 0.8 / 3
    assert metrics["mean_jaccard_distance"] == round(0.8 / 3, 4)
    # the oracle's items w x | y z | w y | x z: 4 distinct bigrams of 4; distances 1, 2/3, 2/3, 2/3, 2/3, 1
    assert metrics["oracle_distinct_2"] == 1.0 and metrics["oracle_mean_jaccard_distance"] == round(14 / 18, 4)
    assert [r["predicted"] for r in rows] == ["distinct", "exact_duplicate", "near_duplicate", "invalid"]
    assert [r["actual"] for r in rows] == ["solar", "solar", "heat", "heat"]
    assert {p["name"]: p["value"] for p in parts}["distinct-2"] == round(4 / 9, 4)


# ----------------------------------------------------------------------------- split and prefilter
def test_the_split_keeps_each_topic_in_one_split_so_no_prompt_leaks(tmp_path):
    from distill import pipeline
    from distill.jsonl import read_jsonl, write_jsonl

    rows = []
    for t in range(10):
        for k in range(3):
            item, topic = {"question": f"question {k} on topic {t} is here?", "answer": "a"}, f"topic {t}"
            rows.append({"id": f"gen-{t}-{k}", "title": topic, "text": item["question"], "metadata": {},
                         "messages": SPEC.student_messages(topic), **SPEC.labelled(item, {"topic": topic})})
    write_jsonl(tmp_path / "merged.jsonl", rows)
    metrics = pipeline.split(SplitConfig(output_dir=str(tmp_path / "split")), SPEC, tmp_path / "merged.jsonl",
                             metrics_dir=tmp_path)
    parts = {s: list(read_jsonl(tmp_path / "split" / f"{s}.jsonl")) for s in ("train", "val", "test")}
    topics = {s: {r["topic"] for r in rs} for s, rs in parts.items()}
    assert metrics["sizes"] == {"train": 24, "val": 3, "test": 3}  # topics 8 / 1 / 1, three rows each
    assert not (topics["train"] & topics["test"]) and not (topics["train"] & topics["val"])
    assert len(topics["test"]) == 1 and metrics["leaked_prompts"] == 0
    ex = parts["test"][0]
    assert ex["messages"][:2] == SPEC.student_messages(ex["topic"])
    assert json.loads(ex["messages"][2]["content"])["answer"] == "a"


def test_the_prefilter_of_a_generate_filter_reads_nothing_and_writes_empty_outputs(tmp_path):
    from distill import pipeline

    cfg = PrefilterConfig(input=str(tmp_path / "no_such_corpus.jsonl"), output_dir=str(tmp_path / "pre"))
    metrics = pipeline.prefilter(cfg, SPEC, metrics_dir=tmp_path)
    for name in ("passed.jsonl", "blocked_sample.jsonl", "quarantine.jsonl"):
        assert (tmp_path / "pre" / name).read_text() == ""
    assert metrics["records"] == 0 and "reads no corpus" in metrics["skipped"]
    assert json.loads((tmp_path / "prefilter.json").read_text()) == metrics


def test_load_at_checks_the_folder_of_a_generate_filter_too(tmp_path):
    folder = _filter_copy(tmp_path)
    (folder / "README.md").unlink()
    with pytest.raises(FilterSpecError, match="README.md is missing"):
        load_filter_at(tmp_path / "filters", "home_energy_qa", "v1")


@pytest.mark.parametrize("command, message", [
    (["estimate"], "its requests depend on its answers"),
    (["oracle-check"], "no records two oracles could both answer"),
])
def test_commands_that_need_a_corpus_say_a_generate_filter_has_none(tmp_path, monkeypatch, command, message):
    from click.testing import CliRunner

    from distill.cli import main
    from distill.params import compose

    shutil.copytree(ROOT / "filters", tmp_path / "filters")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(compose(ROOT / "conf", ["filter=home_energy_qa"])))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 2 and message in result.output and "home_energy_qa is a generate task" in result.output


def test_config_check_names_the_student_a_generate_filter_needs(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from distill.cli import main
    from distill.params import compose

    shutil.copytree(ROOT / "filters", tmp_path / "filters")
    monkeypatch.chdir(tmp_path)
    for student, code in (("sklearn", 2), ("lora", 0)):
        params = compose(ROOT / "conf", ["filter=home_energy_qa", f"student={student}"])
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        result = CliRunner().invoke(main, ["config", "check", "--config-dir", str(ROOT / "conf")])
        assert result.exit_code == code, result.output
        assert ("use student=lora" in result.output) == (student == "sklearn")


def test_templates_list_and_show_built_in_and_custom_templates(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from distill.cli import main

    folder = _filter_copy(tmp_path)
    (folder / "mine.yaml").write_text(yaml.safe_dump(_template(description="our own QA pairs")))
    (folder / "broken.yaml").write_text(yaml.safe_dump({**_template(), "name": "broken", "user_prompt": "no topic"}))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["templates", "list"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()}
    assert sorted(rows) == sorted([*BUILTINS, "mine", "broken"])
    assert rows["reasoning"].endswith("(built-in)") and "our own QA pairs" in rows["mine"]
    assert str(Path("filters/home_energy_qa/v1/mine.yaml")) in rows["mine"] and "INVALID" in rows["broken"]

    shown = CliRunner().invoke(main, ["templates", "show", "tool_trace"]).output
    assert '"tool_calls"' in shown and "the student is asked:" in shown and "Topic: <topic>" in shown
    assert "Write 1 new request(s)" in shown.split("the student is asked:")[1]
    assert CliRunner().invoke(main, ["templates", "show", "mine"]).output.startswith("mine: our own QA pairs")
    missing = CliRunner().invoke(main, ["templates", "show", "nope"])
    assert missing.exit_code == 2 and "generation template 'nope' not found" in missing.output
