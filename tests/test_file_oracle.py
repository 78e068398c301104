"""Labels from a file (``oracle.provider: file``): answers read from the records' own columns, through the
same engine (validation, invalid records, cache, metrics) as any oracle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill import jsonl, pipeline
from distill.config import LabelConfig
from distill.filterspec import load_filter
from distill.labeling.cache import request_key
from distill.labeling.oracle_check import oracle_check
from distill.params import compose
from distill.providers import ChatRequest, oracle_config

ROOT = Path(__file__).resolve().parents[1]
BBC = load_filter(ROOT / "filters" / "bbc_topic" / "v1")
RUBRIC = load_filter(ROOT / "filters" / "sustainability_tech_deployment" / "v1")
TEXT = "The match went to extra time before the home side scored twice in the last minutes of play."


def record(i: int, **meta) -> dict:
    return {"id": f"r{i}", "title": f"Story {i}", "text": TEXT, "metadata": meta}


def label(tmp_path: Path, spec, oracle: dict, records: list[dict], max_attempts: int = 1) -> dict:
    jsonl.write_jsonl(tmp_path / "passed.jsonl", records)
    cfg = LabelConfig(output_dir=str(tmp_path / "labels"), cache_path=str(tmp_path / "cache.sqlite"),
                      max_attempts=max_attempts, progress="off")
    return pipeline.label(cfg, oracle_config(oracle), spec, tmp_path / "passed.jsonl", metrics_dir=tmp_path)


def rows(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in jsonl.read_jsonl(path)}


def test_classify_labels_come_from_a_column_and_bad_values_become_invalid_records(tmp_path):
    records = [record(0, category="sport"), record(1, category="Tech"), record(2, category="technology"),
               record(3, category="weather"), record(4)]
    oracle = {"provider": "file", "fields": {"label": "category"}, "values": {"technology": "tech"}}
    metrics = label(tmp_path, BBC, oracle, records)
    good, bad = rows(tmp_path / "labels/labels.jsonl"), rows(tmp_path / "labels/invalid.jsonl")
    # a label matched case-insensitively, and one renamed by oracle.values
    assert {i: r["labels"] for i, r in good.items()} == {"r0": ["sport"], "r1": ["tech"], "r2": ["tech"]}
    assert good["r0"]["label"] == {"label": "sport"} and good["r0"]["oracle"] == "file:labels"
    # a value outside the label set, and a record without one, fail validation like any oracle answer
    assert bad["r3"]["reason"] == "schema" and "'weather' is not one of" in bad["r3"]["attempts"][0]["detail"]
    assert bad["r4"]["reason"] == "schema" and "'label' is a required property" in bad["r4"]["attempts"][0]["detail"]
    assert (metrics["valid"], metrics["invalid"], metrics["cost_usd"], metrics["input_tokens"]) == (3, 2, 0.0, 0)


def test_a_changed_annotation_is_a_new_answer_and_an_unchanged_one_a_cache_hit(tmp_path):
    oracle = {"provider": "file", "fields": {"label": "category"}}
    first = label(tmp_path, BBC, oracle, [record(0, category="sport"), record(1, category="politics")])
    assert (first["requests"], first["cache_hits"]) == (2, 0)
    again = label(tmp_path, BBC, oracle, [record(0, category="sport"), record(1, category="business")])
    assert (again["requests"], again["cache_hits"]) == (1, 1)  # the corrected record only
    assert rows(tmp_path / "labels/labels.jsonl")["r1"]["labels"] == ["business"]


def test_the_context_is_in_the_cache_key_only_when_a_provider_sends_one():
    request = ChatRequest(messages=[{"role": "user", "content": "x"}], schema={"type": "object"})
    with_context = ChatRequest(messages=request.messages, schema=request.schema, context={"category": "sport"})
    other = ChatRequest(messages=request.messages, schema=request.schema, context={"category": "tech"})
    identity = {"provider": "openai", "model": "m"}
    keys = {request_key(identity, r) for r in (request, with_context, other)}
    assert len(keys) == 3
    # every other provider's keys are what they were before contexts existed (the hash the code before them
    # gave): a cache stays valid
    assert request_key(identity, request) == "6adccb6d7cea6ee7533ec5ae5a21157f3b88eddf2884c070d0886010e55719df"


def test_score_dimensions_from_text_columns_with_the_reasoning_filled(tmp_path):
    dims = RUBRIC.dimension_names
    fields = {d: f"h_{d}" for d in dims}
    meta = {f"h_{d}": str(i % 11) for i, d in enumerate(dims)}  # as a CSV holds them: text
    bad = {**meta, f"h_{dims[0]}": "7.5"}
    label(tmp_path, RUBRIC, {"provider": "file", "fields": fields, "fill_text": "annotated by hand"},
          [record(0, **meta), record(1, **bad)])
    good, invalid = rows(tmp_path / "labels/labels.jsonl"), rows(tmp_path / "labels/invalid.jsonl")
    assert good["r0"]["scores"] == {d: i % 11 for i, d in enumerate(dims)}
    assert good["r0"]["label"]["reasoning"] == "annotated by hand"
    overall, tier = RUBRIC.score(good["r0"]["scores"])  # computed by the project, as for any oracle
    assert (good["r0"]["overall"], good["r0"]["tier"]) == (overall, tier)
    assert "7.5 is not of type 'integer'" in invalid["r1"]["attempts"][0]["detail"]


def test_one_column_holding_the_whole_answer(tmp_path):
    earlier = [record(0, label=json.dumps({"label": "politics"})), record(1, label={"label": "sport"}),
               record(2, label="not json")]
    label(tmp_path, BBC, {"provider": "file", "answer_column": "label"}, earlier)
    assert {i: r["labels"] for i, r in rows(tmp_path / "labels/labels.jsonl").items()} == {
        "r0": ["politics"], "r1": ["sport"]}
    assert rows(tmp_path / "labels/invalid.jsonl")["r2"]["reason"] == "bad_json"


def test_the_config_names_what_to_set():
    with pytest.raises(ValueError, match="needs oracle.fields .* or oracle.answer_column"):
        oracle_config(provider="file", fields={})
    # conf/oracle/file.yaml composes, and a column is picked from the command line
    params = compose(ROOT / "conf", ["oracle=file", "oracle.fields.label=category"])
    assert oracle_config(params["oracle"]).columns == ["category"]


def test_asked_twice_a_file_measures_nothing_but_a_second_annotator_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("filters", "conf"):
        (tmp_path / name).symlink_to(ROOT / name)
    records = [record(i, category=c, second=s) for i, (c, s) in enumerate(
        [("sport", "sport"), ("tech", "tech"), ("politics", "business"), ("sport", "sport")])]
    jsonl.write_jsonl("passed.jsonl", records)
    params = compose(ROOT / "conf", ["filter=bbc_topic", "oracle=file", "oracle.fields.label=category",
                                     "label.cache_path=cache.sqlite"])
    result = oracle_check(params, "passed.jsonl", output="agreement.json")
    assert result["measured"] is False and "oracle_check.second" in result["reason"]
    params["oracle_check"]["second"] = {"provider": "file", "fields": {"label": "second"}}
    result = oracle_check(params, "passed.jsonl", output="agreement.json")
    assert result["n"] == 4 and result["label_agreement"] == 0.75
    assert json.loads(Path("agreement.json").read_text())["ids_sha256"]


def test_a_request_without_context_is_refused_with_the_reason():
    import asyncio

    from distill.providers import make_provider
    from distill.providers.base import ProviderError

    provider = make_provider(oracle_config(provider="file", fields={"label": "category"}))
    with pytest.raises(ProviderError, match="answers from the record's columns"):
        asyncio.run(provider.complete(ChatRequest(messages=[], schema={})))
