"""Filter definitions: the real one loads, broken copies fail with a message that says what to fix,
scores and tiers are computed by us, and the answer schema accepts exactly the valid answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from distill.errors import FilterSpecError
from distill.filterspec import load_filter
from distill.validate import Invalid, check

ROOT = Path(__file__).resolve().parents[1]
REAL_FILTER = ROOT / "filters" / "sustainability_tech_deployment" / "v1"


def broken_copy(tmp_path: Path, edit=None, template: str | None = None) -> Path:
    """A copy of the real filter with ``edit(raw_yaml_dict)`` applied and/or a new template."""
    dest = tmp_path / "filter"
    shutil.copytree(REAL_FILTER, dest)
    raw = yaml.safe_load((dest / "filter.yaml").read_text(encoding="utf-8"))
    if edit:
        edit(raw)
    (dest / "filter.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    if template is not None:
        (dest / raw["template"]).write_text(template, encoding="utf-8")
    return dest


def load_error(path: Path) -> str:
    with pytest.raises(FilterSpecError) as e:
        load_filter(path)
    return str(e.value)


# ----------------------------------------------------------------------------- the real filter
def test_real_filter_loads(real_filter):
    assert real_filter.dimension_names
    assert abs(sum(d.weight for d in real_filter.dimensions) - 1) < 1e-9
    assert "{text}" in real_filter.template_text
    msgs = real_filter.render({"id": "x", "title": "T", "text": "Body text here."})
    assert msgs[0]["role"] == "system" and msgs[1]["role"] == "user"
    assert "Body text here." in msgs[1]["content"] and "T" in msgs[1]["content"]


def test_a_copy_of_the_real_filter_loads(tmp_path):
    assert load_filter(broken_copy(tmp_path)).name == load_filter(REAL_FILTER).name


def test_real_filter_uniform_scores_map_to_their_tier(real_filter):
    mins = [t.min_score for t in real_filter.tiers]
    for k in range(real_filter.scale_max + 1):
        overall, tier = real_filter.score({d: k for d in real_filter.dimension_names})
        assert overall == k
        expected = next(t.name for t in real_filter.tiers if k >= t.min_score)
        assert tier == expected
    assert mins == sorted(mins, reverse=True) and mins[-1] == 0


# ----------------------------------------------------------------------------- broken copies
def test_weights_not_summing_to_one(tmp_path):
    def edit(raw):
        raw["dimensions"][0]["weight"] = round(raw["dimensions"][0]["weight"] - 0.1, 6)

    msg = load_error(broken_copy(tmp_path, edit))
    assert "must sum to 1.0 but sum to 0.9 " in msg
    raw = yaml.safe_load((tmp_path / "filter" / "filter.yaml").read_text())
    for d in raw["dimensions"]:
        assert f"{d['name']}={d['weight']:g}" in msg
    assert "filter.yaml" in msg


def test_tiers_out_of_order(tmp_path):
    def edit(raw):
        raw["tiers"][0], raw["tiers"][1] = raw["tiers"][1], raw["tiers"][0]

    msg = load_error(broken_copy(tmp_path, edit))
    assert "strictly decreasing min_score" in msg
    raw = yaml.safe_load((tmp_path / "filter" / "filter.yaml").read_text())
    assert f"{raw['tiers'][0]['name']}>={raw['tiers'][0]['min_score']:g}" in msg


def test_tiers_with_equal_thresholds(tmp_path):
    def edit(raw):
        raw["tiers"][1]["min_score"] = raw["tiers"][0]["min_score"]

    assert "strictly decreasing min_score" in load_error(broken_copy(tmp_path, edit))


def test_last_tier_must_start_at_zero(tmp_path):
    def edit(raw):
        raw["tiers"][-1]["min_score"] = 0.5

    msg = load_error(broken_copy(tmp_path, edit))
    last = yaml.safe_load((tmp_path / "filter" / "filter.yaml").read_text())["tiers"][-1]["name"]
    assert f"last tier ({last}) must have min_score 0" in msg


def test_duplicate_dimension(tmp_path):
    def edit(raw):
        raw["dimensions"][1]["name"] = raw["dimensions"][0]["name"]

    msg = load_error(broken_copy(tmp_path, edit))
    name = yaml.safe_load((tmp_path / "filter" / "filter.yaml").read_text())["dimensions"][0]
    assert f"duplicate dimension(s): {name['name']}" in msg


def test_unknown_key_is_rejected(tmp_path):
    def edit(raw):
        raw["dimensions"][0]["weigth"] = raw["dimensions"][0].pop("weight")

    msg = load_error(broken_copy(tmp_path, edit))
    assert "dimensions.0.weigth" in msg and "dimensions.0.weight" in msg


def test_template_with_an_unknown_field(tmp_path):
    msg = load_error(broken_copy(tmp_path, template="By {author}:\n{title}\n{text}\n"))
    assert "unknown field(s) {author}" in msg
    assert "prompt" in msg and "known fields:" in msg


def test_template_without_text(tmp_path):
    msg = load_error(broken_copy(tmp_path, template="Rate this: {title}\n"))
    assert "never uses {text}" in msg


def test_template_with_unbalanced_braces(tmp_path):
    msg = load_error(broken_copy(tmp_path, template="Answer as {json: {text}\n"))
    assert "malformed template" in msg


def test_missing_template_file(tmp_path):
    def edit(raw):
        raw["template"] = "nope.md"

    assert "template file 'nope.md' not found" in load_error(broken_copy(tmp_path, edit))


@pytest.mark.parametrize("pattern", [
    r"(unclosed",
    r"sponsored(?= content)",  # look-ahead: fine for Python's re, refused by polars' engine
    r"(ad)\1",                 # backreference: likewise
])
def test_prefilter_pattern_that_does_not_compile(tmp_path, pattern):
    def edit(raw):
        raw["prefilter"]["block_patterns"] = [{"reason": "ads", "pattern": pattern}]

    msg = load_error(broken_copy(tmp_path, edit))
    assert "prefilter pattern for reason 'ads' does not compile" in msg


def test_prefilter_pattern_in_the_engines_syntax_is_accepted(tmp_path):
    def edit(raw):
        raw["prefilter"]["block_patterns"] = [{"reason": "ads", "pattern": r"\p{Lu}{5,} SALE"}]

    assert load_filter(broken_copy(tmp_path, edit)).prefilter.block_patterns[0].reason == "ads"


def test_missing_filter(tmp_path):
    assert "filter definition not found" in load_error(tmp_path / "nothing")


# ----------------------------------------------------------------------------- score and tiers
SMALL = """
name: small
version: v1
description: test
dimensions:
  - {name: a, weight: 0.7, question: "A?", rubric: {0: none, 10: all}}
  - {name: b, weight: 0.2, question: "B?", rubric: {0: none, 10: all}}
  - {name: c, weight: 0.1, question: "C?", rubric: {0: none, 10: all}}
tiers:
  - {name: high, min_score: 6.5}
  - {name: mid, min_score: 4.5}
  - {name: low, min_score: 0}
system_prompt: Rate it.
template: prompt.md
"""


@pytest.fixture()
def small(tmp_path):
    (tmp_path / "filter.yaml").write_text(SMALL, encoding="utf-8")
    (tmp_path / "prompt.md").write_text("{title}\n{text}\n", encoding="utf-8")
    return load_filter(tmp_path)


def test_tier_for_at_the_boundaries(small):
    assert small.tier_for(10) == "high"
    assert small.tier_for(6.5) == "high"
    assert small.tier_for(6.499) == "mid"
    assert small.tier_for(4.5) == "mid"
    assert small.tier_for(4.4999) == "low"
    assert small.tier_for(0) == "low"


def test_score_is_the_weighted_mean_and_lands_on_a_boundary_exactly(small):
    # 0.7*8 + 0.2*3 + 0.1*3 is 6.499999999999999 in floating point: an article exactly on the
    # threshold must still get the higher tier
    assert small.score({"a": 8, "b": 3, "c": 3}) == (6.5, "high")
    assert small.score({"a": 6, "b": 1, "c": 1}) == (4.5, "mid")
    assert small.score({"a": 7, "b": 6, "c": 3}) == (6.4, "mid")
    assert small.score({"a": 0, "b": 0, "c": 0}) == (0.0, "low")
    assert small.score({"a": 10, "b": 10, "c": 10}) == (10.0, "high")


def test_score_ignores_an_overall_claimed_by_the_oracle(small):
    assert small.score({"a": 1, "b": 1, "c": 1, "overall": 9, "tier": "high"}) == (1.0, "low")


# ----------------------------------------------------------------------------- answer schema
def answer(spec, **over):
    base = {d: 5 for d in spec.dimension_names} | {"reasoning": "Pilot running, some figures."}
    return base | over


def as_json(obj) -> str:
    return json.dumps(obj)


def test_schema_accepts_a_valid_answer(real_filter):
    a = answer(real_filter)
    assert check(as_json(a), real_filter.json_schema) == a
    lo = answer(real_filter, **{d: 0 for d in real_filter.dimension_names})
    hi = answer(real_filter, **{d: real_filter.scale_max for d in real_filter.dimension_names})
    assert check(as_json(lo), real_filter.json_schema) == lo
    assert check(as_json(hi), real_filter.json_schema) == hi


@pytest.mark.parametrize("value", [11, -1, 5.5, "5", None])
def test_schema_rejects_a_bad_score(real_filter, value):
    dim = real_filter.dimension_names[0]
    got = check(as_json(answer(real_filter, **{dim: value})), real_filter.json_schema)
    assert isinstance(got, Invalid) and got.reason == "schema"
    assert f"at {dim}:" in got.detail


def test_schema_rejects_a_missing_key(real_filter):
    dim = real_filter.dimension_names[-1]
    a = answer(real_filter)
    del a[dim]
    got = check(as_json(a), real_filter.json_schema)
    assert isinstance(got, Invalid) and f"'{dim}' is a required property" in got.detail


def test_schema_rejects_an_extra_key(real_filter):
    got = check(as_json(answer(real_filter, overall=7.5)), real_filter.json_schema)
    assert isinstance(got, Invalid) and "'overall'" in got.detail


def test_schema_limits_the_reasoning(real_filter):
    too_long = "x" * (real_filter.output.reasoning_max_chars + 1)
    for bad in ("", too_long):
        got = check(as_json(answer(real_filter, reasoning=bad)), real_filter.json_schema)
        assert isinstance(got, Invalid) and "at reasoning:" in got.detail
