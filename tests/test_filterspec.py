"""Filter definitions: the real one loads, broken copies fail with a message that says what to fix,
scores and tiers are computed by us, and the answer schema accepts exactly the valid answers."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from distill.errors import FilterSpecError
from distill.filterspec import conf_file_text, latest_version, load_filter, load_filter_at
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


def test_every_cross_field_problem_is_reported_at_once(tmp_path):
    def edit(raw):
        raw["dimensions"][0]["weight"] = 0.5
        raw["tiers"][-1]["min_score"] = 0.5

    msg = load_error(broken_copy(tmp_path, edit))
    assert "must sum to 1.0" in msg and "must have min_score 0" in msg
    assert len([ln for ln in msg.splitlines() if ln.startswith("  - (top level): ")]) == 2


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


# ----------------------------------------------------------------------------- the filter's folder
def project_copy(tmp_path: Path, name: str = "sustainability_tech_deployment", version: str = "v1",
                 edit=None) -> Path:
    """The real filter copied to ``tmp_path/filters/<name>/<version>/``, ``edit(raw_yaml_dict)`` applied;
    with ``tmp_path/conf/filter/`` holding a copy of the real filter's conf file."""
    dest = tmp_path / "filters" / name / version
    shutil.copytree(REAL_FILTER, dest)
    if edit:
        raw = yaml.safe_load((dest / "filter.yaml").read_text(encoding="utf-8"))
        edit(raw)
        (dest / "filter.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    conf = tmp_path / "conf" / "filter"
    if not conf.exists():
        conf.mkdir(parents=True)
        shutil.copy(ROOT / "conf" / "filter" / f"{REAL_FILTER.parent.name}.yaml", conf)
    return dest


def load_at_error(root: Path, name: str, version: str) -> str:
    with pytest.raises(FilterSpecError) as e:
        load_filter_at(root, name, version)
    return str(e.value)


def test_a_complete_filter_folder_loads(tmp_path):
    project_copy(tmp_path)
    spec = load_filter_at(tmp_path / "filters", "sustainability_tech_deployment", "v1")
    assert spec.name == "sustainability_tech_deployment" and spec.version == "v1"


def test_version_folder_must_match_the_version_it_declares(tmp_path):
    project_copy(tmp_path, version="v98")
    msg = load_at_error(tmp_path / "filters", "sustainability_tech_deployment", "v98")
    assert "says version: v1, but its folder is v98/" in msg
    assert "set version: v98, or rename the folder to v1/" in msg


def test_name_must_match_its_folder(tmp_path):
    project_copy(tmp_path, name="deployment")
    msg = load_at_error(tmp_path / "filters", "deployment", "v1")
    assert "says name: sustainability_tech_deployment, but its folder is deployment/" in msg
    assert "set name: deployment" in msg


def test_readme_is_required(tmp_path):
    dest = project_copy(tmp_path)
    (dest / "README.md").unlink()
    msg = load_at_error(tmp_path / "filters", "sustainability_tech_deployment", "v1")
    assert f"{dest / 'README.md'} is missing" in msg and "rubric" in msg


def test_every_folder_problem_is_reported_at_once(tmp_path):
    dest = project_copy(tmp_path, name="other", version="v2")
    (dest / "README.md").unlink()
    msg = load_at_error(tmp_path / "filters", "other", "v2")
    assert "says name:" in msg and "says version:" in msg and "README.md is missing" in msg


def test_a_missing_filter_in_a_queued_experiment_says_to_commit_it(tmp_path, monkeypatch):
    exp = tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc123"
    exp.mkdir(parents=True)
    monkeypatch.chdir(exp)
    msg = load_at_error(Path("filters"), "my_filter", "v1")
    assert "filter definition not found" in msg
    assert "queued experiment" in msg and "committed to git" in msg and "without --queue" in msg
    monkeypatch.chdir(tmp_path)  # outside a queued copy: no such advice
    assert "queued" not in load_at_error(Path("filters"), "my_filter", "v1")


def test_latest_version_orders_numerically(tmp_path):
    for v in ("v2", "v10", "v9"):
        project_copy(tmp_path, name="x", version=v)
    assert latest_version(tmp_path / "filters", "x") == "v10"
    assert latest_version(tmp_path / "filters", "nothing") is None


# ----------------------------------------------------------------------------- distill filters list
def filters_list(tmp_path: Path, monkeypatch) -> tuple[int, str]:
    from click.testing import CliRunner

    from distill.cli import main

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["filters", "list"])
    return result.exit_code, result.output


def test_filters_list_passes_on_the_real_filters(monkeypatch):
    code, out = filters_list(ROOT, monkeypatch)
    assert code == 0, out
    assert "sustainability_tech_deployment" in out and "INVALID" not in out


def test_filters_list_shows_every_problem_in_full_and_fails(tmp_path, monkeypatch):
    project_copy(tmp_path)

    def edit(raw):
        raw["dimensions"][0]["weight"] = 0.5
        raw["tiers"][0], raw["tiers"][1] = raw["tiers"][1], raw["tiers"][0]

    project_copy(tmp_path, version="v98", edit=edit)
    code, out = filters_list(tmp_path, monkeypatch)
    assert code == 2
    lines = out.splitlines()
    assert any(ln.startswith("sustainability_tech_deployment") and "v1" in ln and "dimensions" in ln for ln in lines)
    assert re.search(r"^sustainability_tech_deployment +v98 +INVALID:$", out, flags=re.MULTILINE)
    # the whole message, not its first line: both validation errors
    assert "invalid filter definition:" in out and "must sum to 1.0" in out and "strictly decreasing" in out
    assert "says version: v1, but its folder is v98/" in out  # read although the rest does not validate
    assert "1 invalid filter(s)" in out


def test_filters_list_names_the_folder_problems(tmp_path, monkeypatch):
    project_copy(tmp_path, version="v98")
    code, out = filters_list(tmp_path, monkeypatch)
    assert code == 2 and "says version: v1, but its folder is v98/" in out


def test_a_filter_without_its_conf_file_is_reported_with_the_file_to_create(tmp_path, monkeypatch):
    def edit(raw):
        raw["name"] = "my_filter"

    project_copy(tmp_path)
    project_copy(tmp_path, name="my_filter", version="v1", edit=edit)
    project_copy(tmp_path, name="my_filter", version="v2", edit=lambda raw: raw.update(name="my_filter",
                                                                                          version="v2"))
    code, out = filters_list(tmp_path, monkeypatch)
    assert code == 2
    assert "my_filter has no conf/filter/my_filter.yaml" in out and "-S filter=my_filter" in out
    assert "INVALID" not in out  # the filter itself is fine
    # the content to create, printed exactly (indented): the newest version
    content = re.search(r"Create conf/filter/my_filter.yaml with:\n\n((?:    .*\n)+)", out).group(1)
    text = "".join(line[4:] + "\n" for line in content.splitlines())
    assert yaml.safe_load(text) == {"name": "my_filter", "version": "v2", "root": "filters"}
    (tmp_path / "conf" / "filter" / "my_filter.yaml").write_text(text)
    code, out = filters_list(tmp_path, monkeypatch)
    assert code == 0, out


def test_a_conf_file_that_selects_a_missing_filter_is_reported(tmp_path, monkeypatch):
    project_copy(tmp_path)
    (tmp_path / "conf" / "filter" / "gone.yaml").write_text("name: gone\nversion: v3\nroot: filters\n")
    code, out = filters_list(tmp_path, monkeypatch)
    assert code == 2 and "conf/filter/gone.yaml selects filters/gone/v3/, which has no filter.yaml" in out


def test_the_printed_conf_file_is_the_shape_of_the_shipped_one():
    shipped = (ROOT / "conf" / "filter" / "sustainability_tech_deployment.yaml").read_text()
    assert conf_file_text("sustainability_tech_deployment", "v1") == shipped
