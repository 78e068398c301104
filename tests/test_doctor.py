"""`distill doctor`: the real command in a temporary git copy of the project, and its comparisons.

A healthy project passes every check (the embedded model answers a schema-constrained request, torch
runs a forward pass); a missing key, an unpriced budget and a stale params.yaml are each named with
their fix; an API key is never printed; a crash in native code is a failed check, not a dead doctor.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from distill.doctor import (
    DOCTOR_SCHEMA,
    NAME_WIDTH,
    VERSION_FIX,
    check_packages,
    check_python,
    check_torch,
    compiled_features,
    judge_llama_build,
)
from distill.params import compose
from distill.validate import Invalid, check

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEY_VAR = "DISTILL_DOCTOR_TEST_KEY"

PACKAGES = ["package torch", "package transformers", "package trl", "package peft", "package llama-cpp-python",
            "package llguidance", "package dvc", "package polars"]
MODEL_CHECKS = ["embedded model", "torch"]
OTHER_CHECKS = ["python", *PACKAGES, "llama.cpp build", "oracle", "budget", "config", "git", "dvc", "params",
                "uncommitted"]
ROW = re.compile(rf"^(?P<name>.{{{NAME_WIDTH}}})(?P<status>ok|warn|fail) +(?P<detail>.*)$")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != KEY_VAR}
    env.update({"PATH": f"{BIN}{os.pathsep}{env['PATH']}", "DVC_NO_ANALYTICS": "1",
                "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"})
    env.pop("DISTILL_PARAMS", None)
    env.update(extra)
    return env


def make_project(dst: Path) -> Path:
    """A fresh git repo holding the project's files (as a clone would), params.yaml composed from conf/."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in files:
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("data/", "models/", "metrics/")) or rel.startswith("data/raw/"):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    env = _env()
    for args in (["distill", "config", "compose"], ["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                 ["git", "commit", "-qm", "init"]):
        subprocess.run(args, cwd=dst, env=env, capture_output=True, text=True, check=True)
    return dst


def doctor(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill.cli", "doctor", *args], cwd=cwd, env=env or _env(),
                          capture_output=True, text=True, timeout=600, check=False)


def rows(stdout: str) -> dict[str, tuple[str, str]]:
    """The table: check name -> (status, detail)."""
    found = {}
    for line in stdout.splitlines():
        m = ROW.match(line)
        if m:
            found[m.group("name").strip()] = (m.group("status"), m.group("detail"))
    return found


def by_name(stdout: str) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(stdout)}


def write_params(path: Path, overrides: list[str]) -> Path:
    path.write_text(yaml.safe_dump(compose(ROOT / "conf", overrides)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("doctor") / "project")


# ----------------------------------------------------------------------------- a healthy project
@pytest.fixture(scope="module")
def healthy_text(project):
    return doctor(project)


@pytest.fixture(scope="module")
def healthy_json(project):
    return doctor(project, "--json")


@pytest.mark.slow
def test_healthy_project_passes_every_check_and_lists_them_all(healthy_text):
    assert healthy_text.returncode == 0, healthy_text.stdout + healthy_text.stderr
    assert "Traceback" not in healthy_text.stderr
    table = rows(healthy_text.stdout)
    assert list(table) == ["python", *PACKAGES, "llama.cpp build", *MODEL_CHECKS, "oracle", "budget", "config",
                           "git", "dvc", "params", "uncommitted"]
    assert not [n for n, (status, _) in table.items() if status == "fail"]
    # what the project itself decides is ok; versions and the llama.cpp build depend on the install
    for name in ("python", "embedded model", "torch", "oracle", "budget", "config", "git", "dvc", "params",
                 "uncommitted"):
        assert table[name][0] == "ok", (name, table[name])
    assert "local:SmolLM2-135M-Instruct (no key needed)" in table["oracle"][1]
    assert re.search(r"\d+ checks: \d+ ok, \d+ warn, 0 fail", healthy_text.stdout)


@pytest.mark.slow
def test_embedded_model_answers_with_valid_json_and_a_measured_speed(healthy_json):
    model = by_name(healthy_json.stdout)["embedded model"]
    assert model["status"] == "ok"
    data = model["data"]
    assert data["output_tokens"] > 0 and data["tokens_per_s"] > 0 and data["load_s"] > 0 and data["answer_s"] > 0
    answer = check(data["text"], DOCTOR_SCHEMA)
    assert not isinstance(answer, Invalid), answer
    assert answer == data["answer"] and 0 <= answer["answer"] <= 10
    assert re.search(r"loaded in [\d.]+ s, answered in [\d.]+ s \(\d+ output tokens, [\d.]+ tokens/s\)",
                     model["detail"])


@pytest.mark.slow
def test_torch_runs_a_forward_pass_in_a_child_and_reports_version_and_threads(healthy_json):
    import torch

    t = by_name(healthy_json.stdout)["torch"]
    assert t["status"] == "ok", t
    assert t["data"]["version"] == torch.__version__ and t["data"]["threads"] >= 1
    assert t["data"]["shape"] == [2, 16, 4] and t["data"]["finite"]
    assert f"torch {torch.__version__}, {t['data']['threads']} threads" in t["detail"]


@pytest.mark.slow
def test_json_holds_the_same_checks_as_the_table(healthy_text, healthy_json):
    assert healthy_json.returncode == 0
    checks = json.loads(healthy_json.stdout)
    assert all(set(c) == {"name", "status", "detail", "fix", "data"} for c in checks)
    table = rows(healthy_text.stdout)
    assert [c["name"] for c in checks] == list(table)
    # the model's timings differ between the two runs; everything else says the same
    assert {c["name"]: c["status"] for c in checks} == {n: s for n, (s, _) in table.items()}
    assert {c["name"]: c["detail"] for c in checks if c["name"] not in MODEL_CHECKS} == \
        {n: d for n, (_, d) in table.items() if n not in MODEL_CHECKS}


# ----------------------------------------------------------------------------- the oracle's key
@pytest.mark.parametrize("where", ["environment", ".env"])
def test_key_that_is_set_is_reported_set_and_never_printed(project, tmp_path, where):
    params = write_params(tmp_path / "params.yaml", ["oracle=openai", f"oracle.api_key_env={KEY_VAR}"])
    secret = f"sk-doctor-{uuid.uuid4().hex}"
    dotenv = project / ".env"
    env = _env(**{KEY_VAR: secret}) if where == "environment" else _env()
    if where == ".env":
        dotenv.write_text(f"{KEY_VAR}={secret}\n", encoding="utf-8")
    try:
        text = doctor(project, "--skip-model", "--params", str(params), env=env)
        as_json = doctor(project, "--skip-model", "--json", "--params", str(params), env=env)
    finally:
        dotenv.unlink(missing_ok=True)
    for proc in (text, as_json):
        out = proc.stdout + proc.stderr
        assert secret not in out and secret[-12:] not in out
        assert proc.returncode == 0, out
    status, detail = rows(text.stdout)["oracle"]
    assert status == "ok" and f"openai:gpt-4o-mini key {KEY_VAR} set" in detail
    checks = by_name(as_json.stdout)
    assert checks["oracle"]["status"] == "ok" and checks["config"]["status"] == "ok"


def test_missing_key_fails_and_names_the_variable(project, tmp_path):
    params = write_params(tmp_path / "params.yaml", ["oracle=openai", f"oracle.api_key_env={KEY_VAR}"])
    proc = doctor(project, "--skip-model", "--params", str(params))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    status, detail = rows(proc.stdout)["oracle"]
    assert status == "fail" and f"{KEY_VAR} missing" in detail
    assert f"oracle (fail): set the environment variable {KEY_VAR}" in proc.stdout
    # reported once, by the oracle check, not again by the config check
    assert rows(proc.stdout)["config"][0] == "ok"


def test_missing_key_of_a_mix_member_fails_too(project, tmp_path):
    params = compose(ROOT / "conf")
    member = compose(ROOT / "conf", ["oracle=openai", f"oracle.api_key_env={KEY_VAR}"])["oracle"]
    params["oracle"]["mix"] = [member]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    proc = doctor(project, "--skip-model", "--json", "--params", str(path))
    assert proc.returncode == 1
    oracle = by_name(proc.stdout)["oracle"]
    assert oracle["status"] == "fail" and oracle["data"]["missing"] == [KEY_VAR]
    assert "local:SmolLM2-135M-Instruct (no key needed)" in oracle["detail"]


# ----------------------------------------------------------------------------- the budget
def test_budget_with_an_unpriced_model_fails_and_says_how_to_price_it(project, tmp_path):
    params = write_params(tmp_path / "params.yaml", ["oracle=openai", "oracle.model=my-model",
                                                     f"oracle.api_key_env={KEY_VAR}", "label.budget_usd=5"])
    proc = doctor(project, "--skip-model", "--json", "--params", str(params), env=_env(**{KEY_VAR: "sk-x-1234"}))
    assert proc.returncode == 1
    budget = by_name(proc.stdout)["budget"]
    assert budget["status"] == "fail" and "openai:my-model" in budget["detail"]
    assert "oracle.price.input_per_mtok" in budget["fix"] and "oracle.price.output_per_mtok" in budget["fix"]
    assert by_name(proc.stdout)["config"]["status"] == "ok"  # not reported twice


def test_budget_with_a_published_price_is_ok(project, tmp_path):
    params = write_params(tmp_path / "params.yaml", ["oracle=openai", "oracle.model=gpt-4o-mini",
                                                     f"oracle.api_key_env={KEY_VAR}", "label.budget_usd=5"])
    proc = doctor(project, "--skip-model", "--json", "--params", str(params), env=_env(**{KEY_VAR: "sk-x-1234"}))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    budget = by_name(proc.stdout)["budget"]
    assert budget["status"] == "ok" and "label.budget_usd=5" in budget["detail"]
    assert "published price of gpt-4o-mini" in budget["detail"]


def test_other_config_problems_fail_the_config_check(project, tmp_path):
    params = write_params(tmp_path / "params.yaml", ["split.train=0.9"])
    proc = doctor(project, "--skip-model", "--json", "--params", str(params))
    assert proc.returncode == 1
    config = by_name(proc.stdout)["config"]
    assert config["status"] == "fail" and any("must be 1.0" in p for p in config["data"]["problems"])


# ----------------------------------------------------------------------------- params, git, dvc
def test_params_out_of_date_with_conf_warns_and_uncommitted_conf_is_named(tmp_path):
    project = make_project(tmp_path / "project")
    before = by_name(doctor(project, "--skip-model", "--json").stdout)
    assert before["params"]["status"] == "ok" and before["uncommitted"]["status"] == "ok"

    conf = project / "conf" / "config.yaml"
    conf.write_text(conf.read_text().replace("  seed: 42", "  seed: 7"), encoding="utf-8")
    proc = doctor(project, "--skip-model")
    assert proc.returncode == 0, proc.stdout  # warnings do not fail
    table = rows(proc.stdout)
    assert table["params"][0] == "warn" and "split" in table["params"][1]
    assert "run `distill config compose` or `dvc exp run`" in proc.stdout
    assert table["uncommitted"][0] == "warn" and "conf/config.yaml" in table["uncommitted"][1]
    assert "queued experiments copy only committed files" in proc.stdout

    subprocess.run(["distill", "config", "compose"], cwd=project, env=_env(), check=True, capture_output=True)
    after = by_name(doctor(project, "--skip-model", "--json").stdout)
    assert after["params"]["status"] == "ok" and after["uncommitted"]["status"] == "warn"


def test_outside_a_project_it_says_where_to_run_from(tmp_path):
    env = _env(GIT_CEILING_DIRECTORIES=str(tmp_path.parent))
    proc = doctor(tmp_path, "--skip-model", "--json", env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    checks = by_name(proc.stdout)
    assert checks["git"]["status"] == "fail" and "not inside a git work tree" in checks["git"]["detail"]
    assert checks["dvc"]["status"] == "fail" and "project root" in checks["dvc"]["fix"]
    assert checks["params"]["status"] == "fail" and checks["oracle"]["status"] == "fail"
    assert checks["python"]["status"] == "ok"


# ----------------------------------------------------------------------------- the comparisons
def test_package_versions_are_compared_with_the_pins(tmp_path):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("# pins\npolars==0.0.1\nLlama_CPP.Python==0.3.36\ntorch==2.13.0\n"
                           "trl==1.14.2+cpu\npeft==0.21.2 ; python_version >= '3.10'\n", encoding="utf-8")
    installed = {"polars": "2.1.0", "llama-cpp-python": "0.3.36", "torch": "2.13.0+cpu", "trl": "1.14.2",
                 "peft": "0.21.2", "transformers": "5.17.0"}
    checks = {c.name: c for c in check_packages(constraints, ("polars", "llama-cpp-python", "torch", "trl", "peft",
                                                              "transformers", "llguidance"), installed.get)}
    assert checks["package polars"].status == "warn"
    assert checks["package polars"].detail == "2.1.0 installed, constraints.txt pins 0.0.1"
    assert checks["package polars"].fix == VERSION_FIX and "make lock" in VERSION_FIX
    assert checks["package llama-cpp-python"].status == "ok"  # names compared normalised
    assert checks["package torch"].status == "ok"  # the +cpu local label is not a difference
    assert checks["package trl"].status == "ok"
    assert checks["package peft"].status == "ok"  # an environment marker after the pin
    assert checks["package transformers"].status == "ok" and "not pinned" in checks["package transformers"].detail
    assert checks["package llguidance"].status == "fail" and "make install" in checks["package llguidance"].fix


def test_package_versions_read_what_is_installed(tmp_path):
    import polars

    constraints = tmp_path / "constraints.txt"
    constraints.write_text(f"polars=={polars.__version__}\ndvc==0.0.1\n", encoding="utf-8")
    checks = {c.name: c for c in check_packages(constraints, ("polars", "dvc", "no-such-package-distill"))}
    assert checks["package polars"].status == "ok" and checks["package polars"].detail == polars.__version__
    assert checks["package dvc"].status == "warn"
    assert checks["package no-such-package-distill"].status == "fail"


def test_python_version():
    assert check_python((3, 10, 0)).status == "ok"
    old = check_python((3, 9, 18))
    assert old.status == "fail" and "3.9.18" in old.detail and "3.10" in old.fix


SYSTEM_INFO_PORTABLE = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
                        "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")
SYSTEM_INFO_NATIVE = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | "
                      "BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | "
                      "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")
EPYC_AVX2 = {"sse4_2", "avx", "avx2", "fma", "f16c"}
XEON_AMX = EPYC_AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512vbmi", "avx512_vnni", "avx512_bf16", "avx_vnni",
                        "amx_tile", "amx_int8", "amx_bf16"}


def test_llama_build_compiled_features_are_read_from_system_info():
    assert compiled_features(SYSTEM_INFO_PORTABLE)[:7] == ["SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2"]
    assert "AMX_INT8" in compiled_features(SYSTEM_INFO_NATIVE)
    assert "AVX512" not in compiled_features(SYSTEM_INFO_PORTABLE.replace("AVX2 = 1", "AVX2 = 1 | AVX512 = 0"))


def test_portable_llama_build_is_ok_on_both_cpu_kinds():
    for flags in (EPYC_AVX2, XEON_AMX):
        c = judge_llama_build(compiled_features(SYSTEM_INFO_PORTABLE), flags)
        assert c.status == "ok" and "portable build" in c.detail


def test_native_llama_build_warns_and_names_what_this_cpu_lacks():
    c = judge_llama_build(compiled_features(SYSTEM_INFO_NATIVE), EPYC_AVX2)
    assert c.status == "warn"
    assert "AVX512" in c.detail and "AMX_INT8" in c.detail and "this CPU does not have" in c.detail
    assert "-DGGML_NATIVE=OFF" in c.fix and "make install" in c.fix


def test_native_llama_build_warns_even_on_the_cpu_it_was_built_for():
    c = judge_llama_build(compiled_features(SYSTEM_INFO_NATIVE), XEON_AMX)
    assert c.status == "warn" and "built natively" in c.detail and "-DGGML_NATIVE=OFF" in c.fix


def _segfault() -> dict:
    os.kill(os.getpid(), signal.SIGSEGV)
    return {}


def test_a_crash_in_the_torch_probe_is_a_failed_check_with_the_crash_message():
    c = check_torch(_segfault)
    assert c.status == "fail"
    assert "killed by SIGSEGV while running a tiny model's forward pass" in c.detail
    assert "CPU:" in c.fix and "Try:" in c.fix and "OMP_NUM_THREADS=1" in c.fix
    assert c.data["signal"] == "SIGSEGV"
