"""The review store, export, sampling and how merge applies reviews (no web server here)."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest

from distill import pipeline
from distill.config import MergeConfig
from distill.errors import InputError
from distill.merge import answer_hash
from distill.review.dataset import Dataset, criteria
from distill.review.export import export, import_file, wilson
from distill.review.forms import form_fields, parse_form, validation_error
from distill.review.sampling import sample
from distill.review.store import Review, ReviewStore
from tests.review_project import make_project, read_jsonl


@pytest.fixture
def project(tmp_path, monkeypatch):
    info = make_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    return info


def test_a_review_is_keyed_by_the_answer_so_a_relabelled_record_needs_review_again(project, tmp_path):
    store = ReviewStore(tmp_path / "r.sqlite")
    row = project["rows"]["rec-0"]
    store.save(Review("rec-0", answer_hash(row["label"]), is_correct=True, reviewer="ann"))
    assert store.get("rec-0", answer_hash(row["label"])).is_correct is True
    relabelled = {**row["label"], "reasoning": "a new answer"}
    assert store.get("rec-0", answer_hash(relabelled)) is None  # the new answer has no review
    assert [r.is_correct for r in store.history("rec-0")] == [True]  # the old one is kept


def test_saves_are_committed_and_visible_to_another_connection(tmp_path):
    store = ReviewStore(tmp_path / "r.sqlite")
    store.save(Review("a", "h1", is_correct=False, note="wrong tier", criteria={"scale": "wrong"},
                      corrected={"x": 1}))
    other = sqlite3.connect(tmp_path / "r.sqlite")  # as a new process would read it
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert other.execute("SELECT record_id, is_correct, note, corrected FROM reviews").fetchall() == [
        ("a", 0, "wrong tier", '{"x": 1}')]


def test_an_unchanged_save_keeps_its_time_and_an_empty_review_is_removed(tmp_path):
    store = ReviewStore(tmp_path / "r.sqlite")
    first = store.save(Review("a", "h", is_correct=True)).updated_at
    assert store.save(Review("a", "h", is_correct=True)).updated_at == first  # reviews.jsonl does not change
    store.save(Review("a", "h"))  # unreviewed, no note: nothing left to keep
    assert store.all() == []
    with pytest.raises(ValueError, match="ok or wrong"):
        store.save(Review("a", "h", criteria={"scale": "meh"}))


def test_wilson_interval_matches_the_formula_and_handles_the_edges():
    lo, hi = wilson(8, 10)
    z = 1.959964
    p, n = 0.8, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == (round(centre - half, 4), round(centre + half, 4))
    assert wilson(0, 0) is None
    assert wilson(5, 5)[1] == 1.0 and wilson(5, 5)[0] > 0.5
    assert wilson(0, 5)[0] == 0.0


def test_export_writes_reviews_and_the_precision_estimate(project, tmp_path):
    ds = Dataset("params.yaml")
    store = ReviewStore(tmp_path / "r.sqlite")
    verdicts = {"rec-0": True, "rec-1": True, "rec-2": False, "rec-3": True}
    for rid, ok in verdicts.items():
        store.save(Review(rid, ds.items[rid].key, is_correct=ok, source="random" if rid != "rec-3" else "browse",
                          criteria={"scale": "ok" if ok else "wrong"}))
    store.save(Review("rec-9", "stale-hash", is_correct=False))  # a record that is no longer there
    stats = export(ds, store, metrics_path="metrics/review.json")
    rows = read_jsonl(tmp_path / "data/reviews/reviews.jsonl")
    assert [(r["id"], r["is_correct"]) for r in rows] == sorted([*verdicts.items(), ("rec-9", False)])
    written = json.loads((tmp_path / "metrics/review.json").read_text())
    assert written == stats
    assert stats["records"] == 8 and stats["reviewed"] == 4 and stats["share_reviewed"] == 0.5
    assert stats["correct"] == 3 and stats["incorrect"] == 1 and stats["stale"] == 1
    assert stats["precision"] == 0.75 and stats["precision_ci95"] == wilson(3, 4)
    assert stats["random_sample"]["reviewed"] == 3 and stats["random_sample"]["precision_ci95"] == wilson(2, 3)
    assert stats["criteria"]["scale"] == {"ok": 3, "wrong": 1, "share_ok": 0.75}


def test_a_committed_reviews_file_is_imported_into_an_empty_store(project, tmp_path):
    ds = Dataset("params.yaml")
    first = ReviewStore(tmp_path / "a.sqlite")
    first.save(Review("rec-0", ds.items["rec-0"].key, is_correct=False, note="teammate", reviewer="bo"))
    export(ds, first, metrics_path="metrics/review.json")
    second = ReviewStore(tmp_path / "b.sqlite")
    assert import_file(second, "data/reviews/reviews.jsonl") == 1
    assert import_file(second, "data/reviews/reviews.jsonl") == 0
    got = second.get("rec-0", ds.items["rec-0"].key)
    assert (got.is_correct, got.note, got.reviewer) == (False, "teammate", "bo")


# ----------------------------------------------------------------------------- merge applies reviews
def _merge(tmp_path, spec, reviews: list[dict], incorrect: str = "drop"):
    path = tmp_path / "data/reviews/reviews.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in reviews))
    cfg = MergeConfig(extra_dir=str(tmp_path / "none"), reviews=str(path), incorrect=incorrect,
                      output_dir=str(tmp_path / "merged"))
    metrics = pipeline.merge(cfg, spec, tmp_path / "data/labels/labels.jsonl", metrics_dir=tmp_path / "m")
    return metrics, read_jsonl(tmp_path / "merged/labels.jsonl"), read_jsonl(tmp_path / "merged/rejected.jsonl")


def test_merge_replaces_corrected_answers_and_drops_incorrect_ones(project, tmp_path):
    spec, rows = project["spec"], project["rows"]
    corrected = {**{d: 10 for d in spec.dimension_names}, "reasoning": "fully deployed, says the reviewer"}
    def review(rid, is_correct, corrected=None, answer=None):
        return {"id": rid, "answer_hash": answer or answer_hash(rows[rid]["label"]), "is_correct": is_correct,
                "corrected": corrected}

    reviews = [review("rec-0", False, corrected), review("rec-1", False), review("rec-2", True),
               review("rec-3", False, answer="an-answer-relabelled-since")]
    metrics, merged, rejected = _merge(tmp_path, spec, reviews)
    by_id = {r["id"]: r for r in merged}
    assert "rec-1" not in by_id and rejected == []  # dropped
    assert by_id["rec-0"]["label"] == corrected and by_id["rec-0"]["oracle_label"] == rows["rec-0"]["label"]
    assert by_id["rec-0"]["tier"] == spec.tier_names[0] and by_id["rec-0"]["overall"] == 10.0  # rescored
    assert by_id["rec-3"]["label"] == rows["rec-3"]["label"]  # a stale review does not apply
    assert metrics["reviews"] == {"in_file": 4, "applied": 3, "stale": 1, "corrected": 1, "confirmed": 1,
                                  "incorrect_dropped": 1, "incorrect_kept_apart": 0}
    assert metrics["kept"] == len(rows) - 1 and metrics["rows_in"] == len(rows)

    metrics, merged, rejected = _merge(tmp_path, spec, reviews, incorrect="keep_apart")
    assert [r["id"] for r in rejected] == ["rec-1"] and "rec-1" not in {r["id"] for r in merged}
    assert metrics["reviews"]["incorrect_kept_apart"] == 1 and metrics["reviews"]["incorrect_dropped"] == 0


def test_merge_refuses_a_corrected_answer_that_breaks_the_schema(project, tmp_path):
    spec, rows = project["spec"], project["rows"]
    bad = {"id": "rec-0", "answer_hash": answer_hash(rows["rec-0"]["label"]), "is_correct": False,
           "corrected": {**rows["rec-0"]["label"], "scale": 42}}
    with pytest.raises(InputError, match=r"reviews.jsonl:1: .*rec-0.*scale: 42 is greater than the maximum of 10"):
        _merge(tmp_path, spec, [bad])


# ----------------------------------------------------------------------------- form and sampling
def test_the_schema_becomes_a_form_and_the_form_an_answer(project):
    spec = project["spec"]
    label = project["rows"]["rec-0"]["label"]
    fields = form_fields(spec.json_schema, label)
    assert [f.name for f in fields] == [*spec.dimension_names, "reasoning"]
    assert fields[0].kind == "integer" and (fields[0].minimum, fields[0].maximum) == (0, 10)
    assert fields[-1].kind == "text"
    form = {f.input_name: f.value for f in fields}
    assert parse_form(spec.json_schema, form) == label  # untouched form: the same answer
    form["f_scale"] = "eleven"
    answer = parse_form(spec.json_schema, form)
    assert answer["scale"] == "eleven"  # kept as typed: the validator, not the form, says what is wrong
    assert validation_error(spec.json_schema, answer) == "at scale: 'eleven' is not of type 'integer'"
    del form["f_reasoning"]
    assert "'reasoning' is a required property" in validation_error(spec.json_schema,
                                                                    parse_form(spec.json_schema, form))
    assert criteria(spec.json_schema) == spec.dimension_names  # reasoning is free text, not a criterion


def test_sampling_strategies_pick_unreviewed_records_reproducibly(project):
    ds = Dataset("params.yaml")
    reviewed = {("rec-5", ds.items["rec-5"].key)}
    picked = sample(ds, 3, "random", reviewed, seed=1)
    assert picked == sample(ds, 3, "random", reviewed, seed=1) and len(set(picked)) == 3
    assert "rec-5" not in sample(ds, 10, "random", reviewed) and "rec-bad" not in sample(ds, 10, "random", set())
    # the re-asked record first, then by distance of the overall score to a tier boundary
    uncertain = sample(ds, 10, "uncertain", set())
    assert uncertain[0] == "rec-1"
    bounds = ds.boundaries()
    dist = [min(abs(ds.items[i].row["overall"] - b) for b in bounds) for i in uncertain[1:]]
    assert dist == sorted(dist)
    # gold disagreement outranks another oracle's, which outranks the student's; then the rest
    assert sample(ds, 3, "disagreement", set())[:3] == ["rec-3", "rec-4", "rec-6"]
    with pytest.raises(ValueError, match="strategy"):
        sample(ds, 1, "loudest", set())
