"""`distill filters new NAME --kind KIND`: a package of every kind that `distill config check` accepts, whose
prompt renders a record and whose schema takes a right answer and refuses a wrong one; nothing overwritten."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distill import validate
from distill.filterspec import load_filter

ROOT = Path(__file__).resolve().parents[1]

RECORD = {"id": "r1", "title": "Wind farm opens", "text": "Orsted opened a wind farm near Hull, England, on Monday.",
          "metadata": {}}
# per kind: a hand-written answer the scaffold's schema must accept, one it must refuse, and what the
# rendered prompt must show besides the record's text
CASES = {
    "score": ({"relevance": 7, "evidence": 3, "reasoning": "ok"}, {"relevance": 7, "reasoning": "ok"},
              ["relevance", "evidence"]),
    "classify": ({"label": "neutral", "rationale": "plain news"}, {"label": "sports", "rationale": "x"},
                 ["positive", "negative", "neutral"]),
    "extract": ({"entities": [{"type": "organisation", "text": "Orsted"}, {"type": "place", "text": "Hull"}]},
                {"entities": [{"type": "company", "text": "Orsted"}]}, ["person", "organisation", "place"]),
    "answer": ({"reasoning": "it says so", "answer": "Hull"}, {"reasoning": "no answer"}, []),
    "translate": ({"translation": "Orsted eröffnete einen Windpark bei Hull."}, {"text": "x"},
                  ["English", "German"]),
}


def _distill(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    conf = ROOT / "conf"  # as committed: not this machine's conf/local.yaml
    shutil.copytree(conf, tmp_path / "conf", ignore=lambda d, names: ["local.yaml"] if Path(d) == conf else [])
    shutil.copytree(ROOT / "filters", tmp_path / "filters")
    return tmp_path


def test_every_kind_scaffolds_a_package_that_config_check_accepts(project):
    for kind in [*CASES, "generate"]:
        name = f"my_{kind}"
        proc = _distill(["filters", "new", name, "--kind", kind], project)
        assert proc.returncode == 0, proc.stderr
        folder = project / "filters" / name / "v1"
        expected = {"filter.yaml", "README.md"} | ({"prompt.md"} if kind != "generate" else set())
        assert {p.name for p in folder.iterdir()} == expected
        assert (project / "conf" / "filter" / f"{name}.yaml").is_file()
        student = "sklearn" if kind in ("score", "classify") else "lora"
        proc = _distill(["config", "compose", f"filter={name}", f"student={student}"], project)
        assert proc.returncode == 0, proc.stderr
        proc = _distill(["config", "check"], project)
        assert proc.returncode == 0, f"{kind}: {proc.stderr}"
        assert proc.stdout.strip() == "params.yaml: ok"
        spec = load_filter(folder)
        assert spec.kind == kind and spec.name == name
    listed = _distill(["filters", "list"], project)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert all(f"my_{kind}" in listed.stdout for kind in [*CASES, "generate"])


@pytest.mark.parametrize("kind", list(CASES))
def test_the_scaffolded_prompt_renders_and_its_schema_judges_answers(tmp_path, kind):
    from distill.scaffold import new_filter

    new_filter("t", kind, root=tmp_path / "filters", config_dir=None)
    spec = load_filter(tmp_path / "filters" / "t" / "v1")
    right, wrong, shown = CASES[kind]
    messages = spec.render(RECORD)
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert RECORD["text"] in user and not re.search(r"\{[a-z_]+\}", user), user  # every placeholder filled
    assert all(word in user for word in shown), user
    schema = spec.schema_for(RECORD)
    accepted = validate.check(json.dumps(right), schema)
    assert accepted == right and spec.check(accepted, RECORD) is None
    assert isinstance(validate.check(json.dumps(wrong), schema), validate.Invalid)


def test_nothing_is_overwritten_and_bad_names_fail_before_writing(project):
    assert _distill(["filters", "new", "mine", "--kind", "classify"], project).returncode == 0
    before = (project / "filters/mine/v1/filter.yaml").read_text()
    (project / "filters/mine/v1/filter.yaml").write_text(before + "# my edit\n")
    proc = _distill(["filters", "new", "mine", "--kind", "score"], project)
    assert proc.returncode == 2
    assert "not overwriting filters/mine/v1/filter.yaml" in proc.stderr
    assert (project / "filters/mine/v1/filter.yaml").read_text().endswith("# my edit\n")
    proc = _distill(["filters", "new", "Bad-Name", "--kind", "score"], project)
    assert proc.returncode == 2 and "use lowercase letters, digits and underscores" in proc.stderr
    assert not (project / "filters" / "Bad-Name").exists()
    proc = _distill(["filters", "new", "other", "--kind", "summarise"], project)
    assert proc.returncode == 2 and "summarise" in proc.stderr and not (project / "filters" / "other").exists()
