"""Configuration: params.yaml matches conf/, every combination composes and validates, bad config fails early."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from distill.config import ConfigError, check_all, section
from distill.filterspec import load_filter
from distill.params import compose, compose_to_file

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def _committed_conf() -> Path:
    """conf/ as committed: without this machine's gitignored conf/local.yaml, if there is one."""
    if not (CONF / "local.yaml").exists():
        return CONF
    copy = Path(tempfile.mkdtemp(prefix="distill-conf-")) / "conf"
    shutil.copytree(CONF, copy, ignore=lambda d, names: ["local.yaml"] if Path(d) == CONF else [])
    return copy


COMMITTED_CONF = _committed_conf()


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_params_yaml_is_the_composition_of_conf():
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert committed == compose(COMMITTED_CONF), (
        "params.yaml drifted from conf/ (conf/local.yaml left out: it is this machine's only): run "
        "`distill config compose` and commit params.yaml"
    )


COMBINATIONS = list(itertools.product(
    _options("filter"), _options("oracle"), _options("student"), [None, *_options("experiment")]
))


@pytest.mark.parametrize(("filter_", "oracle", "student", "experiment"), COMBINATIONS)
def test_every_config_combination_composes_and_validates(filter_, oracle, student, experiment):
    overrides = [f"filter={filter_}", f"oracle={oracle}", f"student={student}"]
    if experiment:
        overrides.append(f"experiment={experiment}")
    params = compose(COMMITTED_CONF, overrides)
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


# ----------------------------------------------------------------------------- lasting settings
PROJECT = """# @package _global_
defaults:
  - override /oracle: openai_gpt4o_mini
prefilter:
  input: data/raw/team_corpus.csv
oracle:
  limits:
    rpm: 5000
label:
  max_words: 500
  cache_path: team.sqlite
split:
  seed: 1
"""

LOCAL = """label:
  cache_path: /home/me/.cache/distill/llm.sqlite
split:
  seed: 2
"""


def _conf_with(tmp_path: Path, project: str | None = None, local: str | None = None) -> Path:
    conf = tmp_path / "conf"
    shutil.copytree(COMMITTED_CONF, conf)
    if project is not None:
        (conf / "project.yaml").write_text(project)
    if local is not None:
        (conf / "local.yaml").write_text(local)
    return conf


def _compose_with(how: str, conf: Path, overrides: list[str]) -> dict:
    """Compose with distill's helper, as `dvc exp run` does (DVC's compose_and_dump), or with the CLI."""
    if how == "distill.params.compose":
        return compose(conf, overrides)
    out = conf.parent / f"params-{len(list(conf.parent.glob('params-*')))}.yaml"
    if how == "dvc compose_and_dump":
        compose_to_file(conf, out, overrides)
    else:
        from click.testing import CliRunner

        from distill.cli import main

        result = CliRunner().invoke(main, ["config", "compose", "--config-dir", str(conf), "--output", str(out),
                                           *overrides])
        assert result.exit_code == 0, result.output
    return yaml.safe_load(out.read_text())


def test_project_and_local_ship_empty_and_leave_params_yaml_as_it_was():
    assert yaml.safe_load((CONF / "project.yaml").read_text()) is None, "conf/project.yaml ships without settings"
    defaults = yaml.safe_load((CONF / "config.yaml").read_text())["defaults"]
    assert defaults.index("_self_") < defaults.index("project") < defaults.index({"optional .@_global_": "local"})
    # with project.yaml empty and no local.yaml, params.yaml is what it always was (and matches conf/)
    assert compose(COMMITTED_CONF) == yaml.safe_load((ROOT / "params.yaml").read_text())
    ignored = subprocess.run(["git", "check-ignore", "-q", "conf/local.yaml"], cwd=ROOT, check=False)
    assert ignored.returncode == 0, "conf/local.yaml must be gitignored (this machine's settings)"
    assert subprocess.run(["git", "check-ignore", "-q", "conf/project.yaml"], cwd=ROOT, check=False).returncode == 1


@pytest.mark.parametrize("how", ["distill.params.compose", "dvc compose_and_dump", "distill config compose"])
def test_project_and_local_settings_apply_with_precedence(tmp_path, how):
    """defaults < conf/project.yaml < conf/local.yaml < the command line (-S)."""
    conf = _conf_with(tmp_path, PROJECT, LOCAL)
    params = _compose_with(how, conf, [])
    assert params["prefilter"]["input"] == "data/raw/team_corpus.csv"  # project over the defaults
    assert params["label"]["max_words"] == 500
    assert params["label"]["cache_path"] == "/home/me/.cache/distill/llm.sqlite"  # local over project
    assert params["split"]["seed"] == 2
    assert params["oracle"]["provider"] == "openai" and params["oracle"]["model"] == "gpt-4o-mini"
    assert params["oracle"]["limits"]["rpm"] == 5000  # project over the oracle option it picked
    assert params["oracle"]["limits"]["tpm"] == 200000  # the option's own value, untouched
    assert params["label"]["max_attempts"] == 3 and params["student"]["kind"] == "sklearn"  # the rest: defaults
    for name in ("prefilter", "oracle", "label", "split"):
        section(params, name)

    params = _compose_with(how, conf, ["split.seed=7", "oracle.limits.rpm=9", "label.cache_path=cli.sqlite"])
    assert params["split"]["seed"] == 7 and params["oracle"]["limits"]["rpm"] == 9  # -S over everything
    assert params["label"]["cache_path"] == "cli.sqlite"
    assert params["prefilter"]["input"] == "data/raw/team_corpus.csv"  # -S adds to them, never resets them

    params = _compose_with(how, conf, ["oracle=gemini_flash"])  # a group on the command line beats project's
    assert params["oracle"]["provider"] == "gemini" and params["oracle"]["limits"]["rpm"] == 5000

    (conf / "local.yaml").unlink()  # optional: without it, project's values
    params = _compose_with(how, conf, [])
    assert params["split"]["seed"] == 1 and params["label"]["cache_path"] == "team.sqlite"


def test_the_example_in_project_yaml_composes_and_validates(tmp_path):
    """The commented example in conf/project.yaml, uncommented, is a working project.yaml."""
    lines = (CONF / "project.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# defaults:"))
    example = "\n".join(re.sub(r"^# ?", "", line) for line in lines[start:])
    assert yaml.safe_load(example)
    params = compose(_conf_with(tmp_path, "# @package _global_\n" + example))
    for name in ("prefilter", "oracle", "label", "student"):
        section(params, name)
    assert params["oracle"]["provider"] == "openai"


@pytest.mark.slow
def test_dvc_exp_run_honours_project_and_local(tmp_path):
    """The real `dvc exp run` (DVC's Hydra composition) picks up both files, and -S is not remembered."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _conf_with(repo, PROJECT, LOCAL)
    shutil.copytree(ROOT / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    (repo / "dvc.yaml").write_text(
        "stages:\n  show:\n    cmd: python -c \"open('out.txt', 'w').write('ok')\"\n"
        "    params: [split, label]\n    outs: [{out.txt: {cache: false}}]\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    dvc = str(Path(sys.executable).with_name("dvc"))

    def sh(*cmd: str) -> str:
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, check=False, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    sh("git", "init", "-q", "-b", "main")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "init")
    assert "conf/local.yaml" not in sh("git", "ls-files")

    def params() -> dict:
        return yaml.safe_load((repo / "params.yaml").read_text())

    sh(dvc, "exp", "run", "-S", "split.seed=7")
    assert params()["split"]["seed"] == 7 and params()["label"]["cache_path"].startswith("/home/me/")
    assert params()["oracle"]["provider"] == "openai"
    assert params()["prefilter"]["input"] == "data/raw/team_corpus.csv"
    sh(dvc, "exp", "run")  # split.seed=7 is not remembered; project and local stay
    assert params()["split"]["seed"] == 2 and params()["label"]["cache_path"].startswith("/home/me/")
    assert params()["oracle"]["provider"] == "openai" and params()["label"]["max_words"] == 500


# ----------------------------------------------------------------------------- the README's -S commands
README = ROOT / "README.md"
#: a value that stands for "yours here" in the README (NAME, N, ...): composed as written, not validated
_PLACEHOLDER = re.compile(r"^(\.\.\.|[A-Z][A-Z_]*)$")


def _readme_commands() -> list[str]:
    """Every `dvc exp run ... -S ...` line of the README's (and docs/scaling.md's) code blocks, and every
    inline `-S ...` span."""
    text = README.read_text(encoding="utf-8") + "\n" + (README.parent / "docs/scaling.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            if line.startswith("dvc exp run") and " -S " in line:
                commands.append(re.split(r"\s+#", line, maxsplit=1)[0])
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL).replace("\n", " ")
    commands += [span for span in re.findall(r"`([^`]+)`", prose) if re.search(r"(^|\s)-S ", span)]
    return commands


def _overrides(command: str) -> list[str] | None:
    """The command's -S overrides; None for a pattern (a group option or a key that is a placeholder)."""
    tokens = shlex.split(command.replace("$HOME", "/home/me"))
    overrides = [tokens[i + 1] for i, t in enumerate(tokens) if t in ("-S", "--set-param")]
    for o in overrides:
        key, _, value = o.partition("=")
        if "KEY" in key or ("." not in key and _PLACEHOLDER.match(value)):
            return None
    return overrides


def test_every_readme_override_composes():
    from dvc.utils.hydra import get_hydra_sweeps

    commands = _readme_commands()
    assert len(commands) >= 20, commands  # the extraction still finds the README's commands
    checked, failures = 0, []
    for command in commands:
        overrides = _overrides(command)
        if overrides is None:
            continue
        for sweep in get_hydra_sweeps({"params.yaml": overrides}):  # --queue sweeps, split as DVC splits them
            try:
                params = compose(COMMITTED_CONF, sweep["params.yaml"])
            except ConfigError as e:
                failures.append(f"`{command}` does not compose: {e}")
                continue
            checked += 1
            if any(_PLACEHOLDER.match(o.partition("=")[2]) for o in sweep["params.yaml"]):
                continue
            for name in ("prefilter", "oracle", "label", "split", "student"):
                try:
                    section(params, name)
                except ConfigError as e:
                    failures.append(f"`{command}` composes an invalid config: {e}")
    assert not failures, "README commands that fail:\n\n" + "\n\n".join(failures)
    assert checked >= 15, checked


# ----------------------------------------------------------------------------- distill config check / compose
def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=cwd, capture_output=True, text=True,
                          check=False)


def test_config_check_names_the_params_file_it_read(tmp_path):
    params = compose(COMMITTED_CONF, ["label.max_attempts=0"])
    params.pop("split")
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(params))
    proc = _cli(["config", "check", "--params", str(tmp_path / "other.yaml")], ROOT)
    assert proc.returncode == 2
    assert f"invalid 'label' section in {tmp_path / 'other.yaml'}" in proc.stderr
    assert f"{tmp_path / 'other.yaml'} has no 'split' section" in proc.stderr
    assert "params.yaml" not in proc.stderr.replace("other.yaml", "")


def _project_with_new_filter(tmp_path: Path) -> Path:
    """A working directory with conf/, filters/ (the real one plus my_filter, a copy) and params.yaml."""
    shutil.copytree(COMMITTED_CONF, tmp_path / "conf")
    shutil.copytree(ROOT / "filters", tmp_path / "filters")
    new = tmp_path / "filters" / "my_filter" / "v1"
    shutil.copytree(ROOT / "filters" / "sustainability_tech_deployment" / "v1", new)
    (new / "filter.yaml").write_text(
        (new / "filter.yaml").read_text().replace("name: sustainability_tech_deployment", "name: my_filter", 1))
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_config_check_reports_a_filter_without_its_conf_file(tmp_path):
    cwd = _project_with_new_filter(tmp_path)
    proc = _cli(["config", "check"], cwd)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "filter my_filter has no conf/filter/my_filter.yaml" in proc.stderr
    assert "    name: my_filter\n    version: v1\n    root: filters\n" in proc.stderr
    (cwd / "conf" / "filter" / "my_filter.yaml").write_text("name: my_filter\nversion: v1\nroot: filters\n")
    proc = _cli(["config", "check"], cwd)
    assert proc.returncode == 0, proc.stderr


def test_config_compose_with_a_filter_without_its_conf_file_says_what_to_create(tmp_path):
    cwd = _project_with_new_filter(tmp_path)
    proc = _cli(["config", "compose", "filter=my_filter"], cwd)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Could not find 'filter/my_filter'" in proc.stderr
    assert "Create conf/filter/my_filter.yaml with:" in proc.stderr and "    name: my_filter\n" in proc.stderr
    (cwd / "conf" / "filter" / "my_filter.yaml").write_text("name: my_filter\nversion: v1\nroot: filters\n")
    proc = _cli(["config", "compose", "filter=my_filter"], cwd)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load((cwd / "params.yaml").read_text())["filter"]["name"] == "my_filter"


def test_config_compose_with_a_key_the_option_lacks_says_how(tmp_path):
    proc = _cli(["config", "compose", "--output", str(tmp_path / "p.yaml"), "oracle.transport=aiohttp"], ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "-S oracle=openai -S oracle.transport=aiohttp" in proc.stderr
