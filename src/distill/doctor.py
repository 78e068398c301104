"""``distill doctor``: check the environment a run needs, one check at a time, and say what to fix.

It is what a user runs first when something is wrong on their machine, so every check survives the
failure it looks for: native code (llama.cpp, torch) runs in a child process, a crash there becomes a
failed check carrying :class:`~distill.isolation.RuntimeCrash`'s message, and an unexpected error in
a check is that check's failure, never a traceback.

Each :class:`Check` has a status (``ok``, ``warn`` or ``fail``), a one-line detail and, when not ok,
what to do. Warnings do not fail the command; a failure does (exit status 1). API keys are never
shown: only the variable's name and whether it is set.

Length: over 400 lines because it is a flat list of independent checks, each a short function; one
module keeps the list readable top to bottom.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OK, WARN, FAIL = "ok", "warn", "fail"

#: the packages a run depends on most, compared with their pins in constraints.txt
HEAVY_PACKAGES = ("torch", "transformers", "trl", "peft", "llama-cpp-python", "llguidance", "dvc", "polars")
MIN_PYTHON = (3, 10)

INSTALL_FIX = "`make install` installs the pinned versions (constraints.txt)"
VERSION_FIX = "make install restores the tested versions; to upgrade on purpose see `make lock`"
NATIVE_FIX = "`make install` builds it with -DGGML_NATIVE=OFF (portable across x86-64 CPUs)"

#: the embedded model's probe: a request whose answer the JSON schema bounds
DOCTOR_MODEL = "SmolLM2-135M-Instruct"
DOCTOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "integer", "minimum": 0, "maximum": 10}},
    "required": ["answer"],
    "additionalProperties": False,
}
DOCTOR_MESSAGES = [
    {"role": "system", "content": "You answer with a JSON object."},
    {"role": "user", "content": 'How many legs does a cat have? Answer as {"answer": <integer from 0 to 10>}.'},
]


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""
    #: measured values (versions, timings, the model's answer) for --json
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _split_message(message: str) -> tuple[str, str]:
    """A multi-line error message as (its first line, the rest)."""
    first, _, rest = str(message).strip().partition("\n")
    return first, rest.strip()


# ----------------------------------------------------------------------------- 1. python
def check_python(version_info: tuple[int, ...] | None = None) -> Check:
    v = tuple(version_info or sys.version_info[:3])
    shown = ".".join(str(p) for p in v[:3])
    if v[:2] >= MIN_PYTHON:
        return Check("python", OK, f"{shown} ({sys.executable})", data={"version": shown})
    need = ".".join(map(str, MIN_PYTHON))
    return Check("python", FAIL, f"{shown} is older than {need}",
                 f"install Python {need} or newer and recreate the venv: `make clean && make install PYTHON=python3.X`",
                 data={"version": shown})


# ----------------------------------------------------------------------------- 2. packages
def normalize_name(name: str) -> str:
    """PEP 503: ``llama_cpp_python`` and ``Llama-CPP.python`` are the same distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_constraints(path: str | os.PathLike) -> dict[str, str]:
    """``name==version`` lines of a constraints file, by normalised name (comments, markers and other
    specifiers are ignored)."""
    pins: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].strip()
        name, sep, version = line.partition("==")
        if sep and name.strip() and version.strip():
            pins[normalize_name(name.strip())] = version.strip()
    return pins


def _public(version: str) -> str:
    """A version without its local label: ``2.13.0+cpu`` -> ``2.13.0``."""
    return version.split("+", 1)[0]


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_packages(constraints: str | os.PathLike = "constraints.txt",
                   packages: tuple[str, ...] = HEAVY_PACKAGES,
                   installed: Callable[[str], str | None] = installed_version) -> list[Check]:
    """One check per package: missing fails, a version other than its pin warns (a local label such
    as torch's ``+cpu`` does not count as different)."""
    checks = []
    try:
        pins = read_constraints(constraints)
    except OSError as e:
        pins = {}
        checks.append(Check("constraints.txt", WARN, f"cannot read {constraints}: {e.strerror or e}; "
                            "versions are not compared", "run `distill doctor` from the project root"))
    for name in packages:
        have, pin = installed(name), pins.get(normalize_name(name))
        data = {"installed": have, "pinned": pin}
        if have is None:
            checks.append(Check(f"package {name}", FAIL, "not installed" + (f" (pinned {pin})" if pin else ""),
                                INSTALL_FIX, data))
        elif pin is None:
            checks.append(Check(f"package {name}", OK, f"{have} (not pinned in constraints.txt)", data=data))
        elif _public(have) == _public(pin):
            checks.append(Check(f"package {name}", OK, have, data=data))
        else:
            checks.append(Check(f"package {name}", WARN, f"{have} installed, constraints.txt pins {pin}",
                                VERSION_FIX, data))
    return checks


# ----------------------------------------------------------------------------- 3. llama.cpp build
#: llama.cpp's compiled-feature names -> this CPU's /proc/cpuinfo flag
GGML_FEATURE_FLAGS = {
    "AVX": "avx", "AVX2": "avx2", "F16C": "f16c", "FMA": "fma", "AVX_VNNI": "avx_vnni",
    "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi", "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16", "AMX_INT8": "amx_int8",
}
#: what a build for any x86-64 CPU with AVX2 (GGML_NATIVE=OFF) compiles in; more means a native build
_PORTABLE = {"SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2"}

_SYSTEM_INFO = "import llama_cpp; print(llama_cpp.__version__); print(llama_cpp.llama_print_system_info().decode())"


def compiled_features(system_info: str) -> list[str]:
    """The CPU features llama.cpp reports as compiled in (``AVX2 = 1``)."""
    return [m.group(1) for m in re.finditer(r"\b([A-Z][A-Z0-9_]*) = 1\b", system_info)]


def cpu_flags(summary: str | None = None) -> set[str] | None:
    """This CPU's vector flags as :func:`distill.isolation.cpu_summary` reports them (None: unknown)."""
    from distill.isolation import cpu_summary

    flags = (summary or cpu_summary()).rpartition("flags:")[2].split()
    return None if flags in ([], ["unknown"]) else set(flags)


def judge_llama_build(features: list[str], flags: set[str] | None) -> Check:
    """ok for a portable build this CPU runs; warn for features this CPU lacks or a native build."""
    from distill.isolation import _FLAGS_OF_INTEREST

    cpu_features = [f for f in features if f in GGML_FEATURE_FLAGS or f in _PORTABLE]
    shown = " ".join(cpu_features) or "none reported"
    data = {"features": features}
    missing = []
    if flags is not None:
        missing = [f for f in cpu_features
                   if GGML_FEATURE_FLAGS.get(f) in _FLAGS_OF_INTEREST and GGML_FEATURE_FLAGS[f] not in flags]
    beyond = [f for f in cpu_features if f not in _PORTABLE]
    if missing:
        return Check("llama.cpp build", WARN, f"compiled with {' '.join(missing)}, which this CPU does not have "
                     f"(compiled: {shown})", f"it may crash here (SIGILL / SIGSEGV): {NATIVE_FIX}", data)
    if beyond:
        return Check("llama.cpp build", WARN, f"built natively for one CPU kind ({' '.join(beyond)} beyond AVX2; "
                     f"compiled: {shown})", f"it may crash on another machine: {NATIVE_FIX}", data)
    return Check("llama.cpp build", OK, f"portable build: {shown}", data=data)


def check_llama_build(timeout_s: float = 60) -> Check:
    from distill.isolation import crash_message, signal_name

    try:
        proc = subprocess.run([sys.executable, "-c", _SYSTEM_INFO], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return Check("llama.cpp build", FAIL, f"importing llama_cpp did not finish within {timeout_s:g} s",
                     f"reinstall it: {INSTALL_FIX}")
    if proc.returncode != 0:
        if "No module named 'llama_cpp'" in proc.stderr:
            return Check("llama.cpp build", FAIL, "llama-cpp-python is not installed", INSTALL_FIX)
        if signal_name(proc.returncode):
            first, rest = _split_message(crash_message("llama-cpp-python", "being imported", proc.returncode,
                                                       hint=NATIVE_FIX, last_output=proc.stderr))
            return Check("llama.cpp build", FAIL, first, rest, {"returncode": proc.returncode})
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return Check("llama.cpp build", FAIL, f"importing llama_cpp failed: {last}", f"reinstall it: {INSTALL_FIX}")
    version, _, info = proc.stdout.partition("\n")
    check = judge_llama_build(compiled_features(info), cpu_flags())
    check.detail = f"llama-cpp-python {version.strip()}, {check.detail}"
    check.data["version"] = version.strip()
    return check


# ----------------------------------------------------------------------------- 4. the embedded model
async def _ask_model(provider, request) -> dict[str, Any]:
    try:
        t0 = time.perf_counter()
        # starting the worker loads the model; counting the prompt's tokens is the cheapest request
        await asyncio.to_thread(provider.worker.request, {"op": "count", "messages": request.messages},
                                "loading the model")
        t1 = time.perf_counter()
        response = await provider.complete(request)
        t2 = time.perf_counter()
    finally:
        await provider.aclose()
    return {"response": response, "load_s": t1 - t0, "answer_s": t2 - t1}


def check_model(timeout_s: float = 300) -> Check:
    """Load the embedded model in its worker process and answer one schema-constrained request."""
    from distill.errors import DistillError
    from distill.isolation import RuntimeCrash
    from distill.providers import ChatRequest, oracle_config
    from distill.providers.local import CRASH_HINT, LocalProvider
    from distill.validate import Invalid, check

    name = "embedded model"
    cfg = oracle_config(provider="local", model=DOCTOR_MODEL, max_tokens=64)
    try:
        provider = LocalProvider(cfg)
    except DistillError as e:  # the model package is missing
        first, rest = _split_message(str(e))
        return Check(name, FAIL, first, rest or INSTALL_FIX)
    request = ChatRequest(messages=DOCTOR_MESSAGES, schema=DOCTOR_SCHEMA, temperature=0.0,
                          max_tokens=cfg.max_tokens, seed=0)
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = asyncio.run(_ask_model(provider, request))
        except BaseException as e:  # noqa: BLE001 - reported as this check's failure
            box["error"] = e

    thread = threading.Thread(target=run, name="doctor-model", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():  # a hung worker: kill it, which ends the thread's wait on its pipe
        proc = provider.worker.proc
        if proc is not None:
            proc.kill()
        thread.join(30)
        return Check(name, FAIL, f"{DOCTOR_MODEL} gave no answer within {timeout_s:g} s",
                     f"{CRASH_HINT}; then rerun `distill doctor`")
    error = box.get("error")
    if isinstance(error, RuntimeCrash):
        first, rest = _split_message(str(error))
        return Check(name, FAIL, first, rest, {"signal": error.signal_name, "returncode": error.returncode})
    if error is not None:
        first, rest = _split_message(str(error))
        return Check(name, FAIL, f"{DOCTOR_MODEL} could not answer: {type(error).__name__}: {first}",
                     rest or f"reinstall the runtime: {INSTALL_FIX}")
    result = box["result"]
    response = result["response"]
    answer = check(response.text, DOCTOR_SCHEMA, response.finish_reason)
    tokens_per_s = response.output_tokens / result["answer_s"] if result["answer_s"] > 0 else 0.0
    data = {"model": DOCTOR_MODEL, "file": provider.model_path.name, "load_s": round(result["load_s"], 3),
            "answer_s": round(result["answer_s"], 3), "output_tokens": response.output_tokens,
            "tokens_per_s": round(tokens_per_s, 2), "text": response.text,
            "answer": None if isinstance(answer, Invalid) else answer,
            "n_threads": provider.worker.load_request["n_threads"]}
    timing = (f"loaded in {result['load_s']:.1f} s, answered in {result['answer_s']:.1f} s "
              f"({response.output_tokens} output tokens, {tokens_per_s:.1f} tokens/s)")
    if isinstance(answer, Invalid):
        return Check(name, FAIL, f"{DOCTOR_MODEL} {timing}, but the answer does not match the schema: "
                     f"{answer.reason}: {answer.detail}",
                     "schema-constrained decoding is broken: reinstall llguidance and llama-cpp-python "
                     f"({INSTALL_FIX})",
                     data)
    return Check(name, OK, f"{DOCTOR_MODEL} {timing}: {response.text.strip()}", data=data)


# ----------------------------------------------------------------------------- 5. torch
def torch_probe() -> dict[str, Any]:
    """A tiny model's forward pass (run in a child process by :func:`check_torch`)."""
    t0 = time.perf_counter()
    import torch

    t1 = time.perf_counter()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(64, 32),
                                torch.nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64,
                                                                 batch_first=True),
                                torch.nn.Linear(32, 4)).eval()
    with torch.no_grad():
        out = model(torch.randint(0, 64, (2, 16)))
    t2 = time.perf_counter()
    return {"version": torch.__version__, "threads": torch.get_num_threads(), "shape": list(out.shape),
            "finite": bool(torch.isfinite(out).all()), "import_s": round(t1 - t0, 3), "forward_s": round(t2 - t1, 3)}


def check_torch(probe: Callable[[], dict[str, Any]] = torch_probe) -> Check:
    from distill.errors import DistillError
    from distill.isolation import RuntimeCrash, call_isolated

    name = "torch"
    version = installed_version("torch")
    if version is None:
        return Check(name, FAIL, "torch is not installed", INSTALL_FIX)
    try:
        r = call_isolated(probe, runtime=f"torch {version}", doing="running a tiny model's forward pass",
                          hint="`make install` restores the tested CPU build of torch; or try OMP_NUM_THREADS=1")
    except RuntimeCrash as e:
        first, rest = _split_message(str(e))
        return Check(name, FAIL, first, rest, {"signal": e.signal_name, "returncode": e.returncode})
    except DistillError as e:
        first, rest = _split_message(str(e))
        return Check(name, FAIL, first, f"reinstall it: {INSTALL_FIX}", {"traceback": rest})
    detail = (f"torch {r['version']}, {r['threads']} threads: forward pass of a tiny transformer in "
              f"{r['forward_s']:.2f} s (import {r['import_s']:.1f} s)")
    if not r["finite"]:
        return Check(name, FAIL, detail + ", but its output is not finite",
                     f"reinstall torch: {INSTALL_FIX}", r)
    return Check(name, OK, detail, data=r)


# ----------------------------------------------------------------------------- 6. the oracle
def _problem(message: str) -> tuple[str, str]:
    """A `config check` problem as (what is wrong, on one line; the advice lines that follow it)."""
    lines = [line.strip().removeprefix("- ") for line in message.splitlines() if line.strip()]
    advice = [line for line in lines if line.startswith(("fix it", "run `"))]
    return " ".join(line for line in lines if line not in advice), " ".join(advice)


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def key_values(params: dict[str, Any] | None) -> list[str]:
    """The values of every key variable the configured oracle names (to keep them out of the output)."""
    from distill.config import section
    from distill.providers.base import KeyedConfig

    try:
        oracle = section(params or {}, "oracle")
    except Exception:  # noqa: BLE001 - an invalid oracle section names no variable we can trust
        return []
    values = [os.environ.get(m.api_key_env, "") for m in [oracle, *oracle.mix] if isinstance(m, KeyedConfig)]
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def check_oracle(params: dict[str, Any]) -> list[Check]:
    """Keys of the configured oracle (and its mix), the budget's price, then the rest of `config check`."""
    from distill.config import check_all, section
    from distill.errors import ConfigError
    from distill.providers.base import KeyedConfig
    from distill.providers.prices import budget_problem, price_for

    checks: list[Check] = []
    reported: set[str] = set()  # check_all's problems already shown by a check above it
    try:
        oracle = section(params, "oracle")
    except ConfigError as e:
        first, rest = _split_message(str(e))
        oracle = None
        checks.append(Check("oracle", FAIL, first, rest or "fix the oracle section in conf/ and recompose"))
        reported.add(str(e))
    if oracle is not None:
        members, missing, problems = [oracle, *oracle.mix], [], []
        parts = []
        for m in members:
            if isinstance(m, KeyedConfig):
                state = "set" if os.environ.get(m.api_key_env) else "missing"
                parts.append(f"{m.provider}:{m.model} key {m.api_key_env} {state}")
                if state == "missing":
                    missing.append(m.api_key_env)
                    try:
                        m.api_key()  # raises: the variable is unset
                    except ConfigError as e:
                        problems.append(str(e))
            else:
                parts.append(f"{m.provider}:{m.model} (no key needed)")
        reported.update(problems)
        if missing:
            names = ", ".join(dict.fromkeys(missing))
            checks.append(Check("oracle", FAIL, "; ".join(parts),
                                f"set the environment variable {names} (or put {names.split(', ')[0]}=... in a "
                                ".env file at the project root)", {"missing": list(dict.fromkeys(missing))}))
        else:
            checks.append(Check("oracle", OK, "; ".join(parts)))

        budget = None
        try:
            budget = section(params, "label").budget_usd
        except ConfigError:
            pass  # reported by the config check below
        problem = budget_problem(oracle, budget)
        if budget is None:
            checks.append(Check("budget", OK, "label.budget_usd not set (no cap on spend)"))
        elif problem:
            reported.add(problem)
            first, _, fix = problem.partition(". ")
            checks.append(Check("budget", FAIL, first, fix[:1].lower() + fix[1:]))
        else:
            prices = "; ".join(f"{m.provider}:{m.model} {price_for(m)[1]}" for m in members)
            checks.append(Check("budget", OK, f"label.budget_usd={budget:g}, priced: {prices}"))

    others = [p for p in check_all(params) if p not in reported]
    if others:
        problems = [_problem(p) for p in others]
        more = f" (and {len(others) - 1} more)" if len(others) > 1 else ""
        fixes = [f"also: {what}" for what, _ in problems[1:]]
        hints = list(dict.fromkeys(how for _, how in problems if how))
        checks.append(Check("config", FAIL, problems[0][0] + more,
                            "\n".join([*fixes, *hints]) or "`distill config check` shows the problem",
                            {"problems": others}))
    else:
        checks.append(Check("config", OK, "every section, the filter and the oracle validate (`distill config check`)"))
    return checks


# ----------------------------------------------------------------------------- 7. git and dvc
def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=False, timeout=60)


def check_git_dvc(params_path: str | os.PathLike = "params.yaml", conf_dir: str | os.PathLike = "conf",
                  params: dict[str, Any] | None = None) -> list[Check]:
    checks = []
    in_git = False
    try:
        top = _git("rev-parse", "--show-toplevel")
        if top.returncode == 0:
            in_git = True
            head = _git("rev-parse", "--short", "HEAD")
            commit = head.stdout.strip() if head.returncode == 0 else "no commit yet"
            checks.append(Check("git", OK, f"work tree {top.stdout.strip()} at {commit}"))
        else:
            checks.append(Check("git", FAIL, "not inside a git work tree",
                                "run from a clone of the project: `dvc exp run` keeps experiments in git"))
    except FileNotFoundError:
        checks.append(Check("git", FAIL, "git is not installed", "install git: `dvc exp run` keeps experiments in git"))

    dvc_version = installed_version("dvc")
    try:
        importlib.import_module("dvc")
        importable = dvc_version is not None
    except Exception:  # noqa: BLE001 - a broken install is reported as such
        importable = False
    if not importable:
        checks.append(Check("dvc", FAIL, "dvc is not importable", INSTALL_FIX))
    elif not Path(".dvc").is_dir():
        checks.append(Check("dvc", FAIL, f"dvc {dvc_version}, but there is no .dvc/ here",
                            "run from the project root (where dvc.yaml and .dvc/ are)"))
    else:
        checks.append(Check("dvc", OK, f"dvc {dvc_version}, .dvc/ present", data={"version": dvc_version}))

    name = "params"
    if params is None:
        checks.append(Check(name, FAIL, f"{params_path} not found or unreadable",
                            "run from the project root, or `distill config compose`"))
    elif not Path(conf_dir).is_dir():
        checks.append(Check(name, WARN, f"no {conf_dir}/ here to compare {params_path} with",
                            "run from the project root"))
    else:
        from distill.params import compose

        try:
            composed = compose(Path(conf_dir))
        except Exception as e:  # noqa: BLE001 - Hydra's errors: a broken conf/
            first, _ = _split_message(str(e))
            checks.append(Check(name, FAIL, f"{conf_dir}/ does not compose: {type(e).__name__}: {first}",
                                f"fix {conf_dir}/ (`distill config compose` shows the full error)"))
        else:
            differ = sorted(k for k in set(composed) | set(params) if composed.get(k) != params.get(k))
            if differ:
                checks.append(Check(name, WARN, f"{params_path} differs from what {conf_dir}/ composes in: "
                                    f"{', '.join(differ)}",
                                    "run `distill config compose` or `dvc exp run` (which composes conf/ first)",
                                    {"sections": differ}))
            else:
                checks.append(Check(name, OK, f"{params_path} is what {conf_dir}/ composes"))

    if in_git:
        status = _git("status", "--porcelain", "--untracked-files=all", "--", "conf", "filters")
        changed = [line[3:] for line in status.stdout.splitlines() if line.strip()]
        if status.returncode != 0:
            checks.append(Check("uncommitted", WARN, f"git status failed: {status.stderr.strip()}", ""))
        elif changed:
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            checks.append(Check("uncommitted", WARN, f"uncommitted changes under conf/ or filters/: {shown}",
                                "commit them before `dvc exp run --queue`: queued experiments copy only "
                                "committed files", {"paths": changed}))
        else:
            checks.append(Check("uncommitted", OK, "conf/ and filters/ are committed"))
    return checks


# ----------------------------------------------------------------------------- all of them
def _guarded(name: str, fn: Callable[[], Check | list[Check]]) -> list[Check]:
    """Run one check; an unexpected error is that check's failure, not a traceback."""
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - the doctor reports, it does not crash
        first, _ = _split_message(str(e))
        return [Check(name, FAIL, f"the check itself failed: {type(e).__name__}: {first}",
                      "report this with the output of `distill doctor --json`")]
    return result if isinstance(result, list) else [result]


def iter_checks(params_path: str | os.PathLike = "params.yaml", *, skip_model: bool = False,
                constraints: str | os.PathLike = "constraints.txt", conf_dir: str | os.PathLike = "conf",
                ) -> Iterator[Check]:
    """Every check, in order, as it finishes (keys of the configured oracle redacted from the text)."""
    from distill.config import load_dotenv, read_params

    load_dotenv()
    params, params_error = None, None
    try:
        params = read_params(params_path)
    except Exception as e:  # noqa: BLE001 - reported by the checks that need it
        params_error = e
    secrets = key_values(params)

    def oracle_checks() -> list[Check]:
        if params is None:
            first, rest = _split_message(str(params_error))
            return [Check("oracle", FAIL, first, rest or "run from the project root, or `distill config compose`")]
        return check_oracle(params)

    steps: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("python", check_python),
        ("packages", lambda: check_packages(constraints)),
        ("llama.cpp build", check_llama_build),
    ]
    if not skip_model:
        steps += [("embedded model", check_model), ("torch", check_torch)]
    steps += [("oracle", oracle_checks), ("git", lambda: check_git_dvc(params_path, conf_dir, params))]
    for name, fn in steps:
        for c in _guarded(name, fn):
            c.detail, c.fix = _redact(c.detail, secrets), _redact(c.fix, secrets)
            yield c


def run_checks(params_path: str | os.PathLike = "params.yaml", **kwargs: Any) -> list[Check]:
    return list(iter_checks(params_path, **kwargs))


def failed(checks: list[Check]) -> bool:
    return any(c.status == FAIL for c in checks)


NAME_WIDTH = 26


def format_row(c: Check) -> str:
    return f"{c.name:<{NAME_WIDTH}}{c.status:<7}{c.detail}"


def format_header() -> str:
    return f"{'check':<{NAME_WIDTH}}{'status':<7}detail"


def format_fixes(checks: list[Check], skipped_model: bool = False) -> str:
    lines = []
    if skipped_model:
        lines.append("\nskipped (--skip-model): embedded model, torch")
    todo = [c for c in checks if c.status != OK and c.fix]
    if todo:
        lines.append("\nto fix:")
        for c in todo:
            fix = c.fix.replace("\n", "\n    ")
            lines.append(f"  {c.name} ({c.status}): {fix}")
    fails, warns = sum(c.status == FAIL for c in checks), sum(c.status == WARN for c in checks)
    lines.append(f"\n{len(checks)} checks: {len(checks) - fails - warns} ok, {warns} warn, {fails} fail")
    return "\n".join(lines)
