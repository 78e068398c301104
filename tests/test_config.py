"""Configuration: params.yaml matches conf/, every combination composes and validates, bad config fails early."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill.config import ConfigError, check_all, section
from distill.filterspec import load_filter
from distill.params import compose

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_params_yaml_is_the_composition_of_conf():
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert committed == compose(CONF), (
        "params.yaml drifted from conf/: run `distill config compose` and commit params.yaml"
    )


COMBINATIONS = list(itertools.product(
    _options("filter"), _options("oracle"), _options("student"), [None, *_options("experiment")]
))


@pytest.mark.parametrize(("filter_", "oracle", "student", "experiment"), COMBINATIONS)
def test_every_config_combination_composes_and_validates(filter_, oracle, student, experiment):
    overrides = [f"filter={filter_}", f"oracle={oracle}", f"student={student}"]
    if experiment:
        overrides.append(f"experiment={experiment}")
    params = compose(CONF, overrides)
    for name in ("filter", "prefilter", "oracle", "label", "merge", "split", "student", "train", "evaluate"):
        section(params, name)
    assert params["oracle"]["provider"] == yaml.safe_load((CONF / "oracle" / f"{oracle}.yaml").read_text())["provider"]
    spec = load_filter(ROOT / section(params, "filter").path)
    assert spec.name == params["filter"]["name"]


def test_unknown_key_is_rejected_with_its_path():
    params = compose(CONF, ["+label.max_atempts=5"])
    with pytest.raises(ConfigError, match=r"label\.max_atempts"):
        section(params, "label")


@pytest.mark.parametrize(("override", "message"), [
    ("split.train=0.9", "must be 1.0"),
    ("label.max_attempts=0", "label.max_attempts"),
    ("split.balance.on_violation=explode", "on_violation"),
    ("student.kind=forest", "student.kind"),
])
def test_invalid_values_say_what_to_fix(override, message):
    params = compose(CONF, [override])
    problems = check_all(params)
    assert any(message in p for p in problems), problems


def test_openai_oracle_without_key_is_reported_by_config_check(tmp_path):
    params = compose(CONF, ["oracle=openai", "oracle.api_key_env=DISTILL_TEST_UNSET_KEY"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if k != "DISTILL_TEST_UNSET_KEY"}
    proc = subprocess.run(
        [sys.executable, "-m", "distill.cli", "config", "check", "--params", str(tmp_path / "params.yaml")],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2
    assert "DISTILL_TEST_UNSET_KEY" in proc.stderr and "Traceback" not in proc.stderr


def test_config_check_passes_on_the_committed_params():
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "config", "check"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
