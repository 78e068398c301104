"""A copy of the project as a fresh clone has it, in a temporary git repository, for the tests that run
the real `dvc exp run`: the committed and untracked-but-not-ignored files, without data outputs,
metrics, tests, benchmarks or the lock file; an environment whose `dvc` and `python` are this venv's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
_KEPT_DATA = ("data/raw/", "data/labels_extra/", "data/reviews/")
_LEFT_OUT = ("data/", "models/", "metrics/", "tests/", "benchmarks/", ".github/")


def sh(args: list[str], cwd: Path, env: dict, timeout: int = 600) -> str:
    """Run ``args``; stdout and stderr together, or an assertion error with their end."""
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{out[-4000:]}"
    return out


def copy_project(dst: Path) -> None:
    """The project's files into ``dst``, as a clone would have them."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in files:
        keep = rel.startswith(_KEPT_DATA) or not rel.startswith(_LEFT_OUT)
        if (ROOT / rel).is_file() and keep:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst / rel)
    (dst / "dvc.lock").unlink(missing_ok=True)


def project_env(**extra: str) -> dict[str, str]:
    """This environment with the venv first on PATH, the source importable, a git identity, no
    DISTILL_PARAMS, plus ``extra`` (an API key variable, say)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "PYTHONPATH": str(ROOT / "src"), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com", **extra}
    env.pop("DISTILL_PARAMS", None)
    return env


def git_init(repo: Path, env: dict, compose: bool = True) -> None:
    """params.yaml composed from conf/ (``compose``), then everything committed on a new branch main."""
    if compose:
        sh([sys.executable, "-m", "distill.cli", "config", "compose"], repo, env)
    sh(["git", "init", "-q", "-b", "main"], repo, env)
    sh(["git", "add", "-A"], repo, env)
    sh(["git", "commit", "-qm", "init"], repo, env)
