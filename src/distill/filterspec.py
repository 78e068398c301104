"""Filter packages on disk: loading, validation and folder checks.

A filter is a task package: ``filters/<name>/<version>/`` holds a ``filter.yaml`` (its ``kind:`` picks
the task class in :mod:`distill.tasks`: ``score`` when absent), the prompt template it names and a
``README.md``; ``conf/filter/<name>.yaml`` makes it a Hydra option (``-S filter=<name>``). Loading
validates everything a run depends on and raises :class:`FilterSpecError` with a message that says what
to fix (the kind's own rules, the template's fields, prefilter regexes that must compile).
:func:`load_filter_at` (what the pipeline and the ``distill`` commands use) also checks the folder: its
names match ``name:`` and ``version:``, and the README is there. :func:`conf_problems` finds filters
that no ``conf/filter/*.yaml`` selects.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from distill.errors import FilterSpecError, queued_copy_hint
from distill.tasks import KINDS, Task
from distill.tasks.base import KeywordRule, PrefilterRules, RegexRule, template_fields  # noqa: F401 - re-exported
from distill.tasks.score import Dimension, ScoreTask, Tier  # noqa: F401 - re-exported

#: any task kind (the name predates kinds: every filter was a rubric then)
FilterSpec = Task


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid filter definition:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        for msg in e["msg"].removeprefix("Value error, ").splitlines():
            lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def _regex_problem(pattern: str) -> str | None:
    """Why the regex engine that runs prefilter patterns (polars, Rust ``regex``) rejects ``pattern``.

    Python's ``re`` is not that engine: it accepts look-around and backreferences, which polars refuses.
    """
    import polars as pl

    try:
        pl.select(pl.lit("").str.contains(pattern))
    except pl.exceptions.PolarsError as e:
        lines = str(e).splitlines()
        return next((ln.removeprefix("error: ") for ln in lines if ln.startswith("error: ")), lines[0])
    return None


def task_class(raw: dict[str, Any], path: Path) -> type[Task]:
    """The task class ``kind:`` names (``score`` when absent)."""
    kind = raw.get("kind", "score")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise FilterSpecError(f"{path}: kind: {kind!r} is not a task kind; choose one of {', '.join(KINDS)}")
    return cls


def load_filter(path: str | Path) -> FilterSpec:
    """Load and validate ``filter.yaml`` (or the folder holding it) into its kind's task."""
    path = Path(path)
    if path.is_dir() or path.suffix not in (".yaml", ".yml"):
        path = path / "filter.yaml"
    if not path.is_file():
        raise FilterSpecError(f"filter definition not found: {path}{queued_copy_hint(f'the filter ({path.parent})')}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise FilterSpecError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise FilterSpecError(f"{path}: expected a mapping at the top level")
    cls = task_class(raw, path)
    try:
        spec = cls.model_validate({"kind": cls.KIND, **raw})
    except ValidationError as e:
        raise FilterSpecError(_format_validation_error(path, e)) from None
    own = spec.load_prompts(path.parent)  # a kind that finds its own prompts (generate: a named template)
    if own is not None:
        return own

    tpath = path.parent / spec.template
    if not tpath.is_file():
        raise FilterSpecError(f"{path}: template file {spec.template!r} not found next to it"
                              f"{queued_copy_hint(f'the filter ({path.parent})')}")
    template = tpath.read_text(encoding="utf-8")
    try:
        used = template_fields(template)
    except ValueError as e:
        raise FilterSpecError(f"{tpath}: malformed template ({e}); write literal braces as {{{{ }}}}") from None
    known = cls.template_fields()
    unknown = sorted(used - known)
    if unknown:
        raise FilterSpecError(
            f"{tpath}: template refers to unknown field(s) {', '.join('{' + u + '}' for u in unknown)}; "
            f"known fields: {', '.join(sorted(known))} (a {cls.KIND} task)"
        )
    if "text" not in used:
        raise FilterSpecError(f"{tpath}: template never uses {{text}}, so the oracle would not see the article")
    for rule in spec.prefilter.block_patterns:
        problem = _regex_problem(rule.pattern)
        if problem:
            raise FilterSpecError(
                f"{path}: prefilter pattern for reason {rule.reason!r} does not compile "
                f"(Rust regex syntax, as polars runs it): {problem}"
            )
    return spec.model_copy(update={"root": path.parent, "template_text": template})


def filter_dir(filters_root: str | Path, name: str, version: str) -> Path:
    return Path(filters_root) / name / version


def folder_problems(folder: Path) -> list[str]:
    """What is wrong with ``<name>/<version>/`` as a filter folder, beyond what :func:`load_filter`
    checks: the folder names must be the ``name:`` and ``version:`` it declares (read even when the rest
    of ``filter.yaml`` is invalid), and the README must be there."""
    folder = Path(folder)
    problems = []
    try:
        raw = yaml.safe_load((folder / "filter.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        raw = None
    declared = raw if isinstance(raw, dict) else {}
    name, version = declared.get("name"), declared.get("version")
    if isinstance(name, str) and name != folder.parent.name:
        moved = folder.parent.parent / name / folder.name
        problems.append(
            f"{folder / 'filter.yaml'} says name: {name}, but its folder is {folder.parent.name}/: "
            f"set name: {folder.parent.name}, or move the filter to {moved}/"
        )
    if isinstance(version, str) and version != folder.name:
        problems.append(
            f"{folder / 'filter.yaml'} says version: {version}, but its folder is {folder.name}/: "
            f"set version: {folder.name}, or rename the folder to {version}/"
        )
    if folder.is_dir() and not (folder / "README.md").is_file():
        problems.append(
            f"{folder / 'README.md'} is missing: a filter documents its rubric there (what each score and "
            f"tier means, with worked examples){queued_copy_hint(f'the filter ({folder})')}"
        )
    return problems


def check_filter(filters_root: str | Path, name: str, version: str) -> tuple[FilterSpec | None, list[str]]:
    """Load ``<root>/<name>/<version>/`` and collect every problem (each in full): the spec, or None
    when ``filter.yaml`` or its template does not load."""
    folder = filter_dir(filters_root, name, version)
    try:
        spec = load_filter(folder)
    except FilterSpecError as e:
        return None, [str(e), *folder_problems(folder)]
    return spec, folder_problems(folder)


def load_filter_at(filters_root: str | Path, name: str, version: str) -> FilterSpec:
    """Load the filter ``<root>/<name>/<version>/`` as the pipeline uses it: :func:`load_filter`, plus the
    folder checks of :func:`folder_problems`; one :class:`FilterSpecError` lists every problem."""
    spec, problems = check_filter(filters_root, name, version)
    if problems:
        raise FilterSpecError("\n".join(problems))
    assert spec is not None
    return spec


def list_filters(filters_root: str | Path = "filters") -> list[tuple[str, str, Path]]:
    """(name, version, path) of every ``filter.yaml`` under ``filters_root``."""
    found = []
    for p in sorted(Path(filters_root).glob("*/*/filter.yaml")):
        found.append((p.parent.parent.name, p.parent.name, p.parent))
    return found


def latest_version(filters_root: str | Path, name: str) -> str | None:
    """The highest version of filter ``name`` (v10 after v9), None when there is none."""
    versions = [v for n, v, _ in list_filters(filters_root) if n == name]
    return max(versions, key=lambda v: [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", v)],
               default=None)


def conf_file_text(name: str, version: str, filters_root: str | Path = "filters") -> str:
    """The ``conf/filter/<name>.yaml`` that makes a filter a Hydra option (``-S filter=<name>``)."""
    return (
        f"# -S filter={name} selects the filter in {Path(filters_root).as_posix()}/{name}/{version}/ "
        "(filter.yaml, its prompt template, README.md).\n"
        f"name: {name}\nversion: {version}\nroot: {Path(filters_root).as_posix()}\n"
    )


def missing_conf_message(name: str, version: str, filters_root: str | Path, config_dir: str | Path) -> str:
    conf = Path(config_dir) / "filter" / f"{name}.yaml"
    return (
        f"filter {name} has no {conf}, so `dvc exp run -S filter={name}` cannot select it "
        f"(Hydra: \"Could not find 'filter/{name}'\"). Create {conf} with:\n\n"
        + "".join(f"    {line}\n" for line in conf_file_text(name, version, filters_root).splitlines())
        + f"\nthen `dvc exp run -S filter={name}`, or make it every run's filter with `- override /filter: {name}` "
        f"under `defaults:` in {Path(config_dir) / 'project.yaml'}"
    )


def conf_problems(filters_root: str | Path = "filters", config_dir: str | Path = "conf") -> list[str]:
    """Filters under ``filters_root`` without a ``conf/filter/<name>.yaml``, each with the file to
    create, and ``conf/filter/*.yaml`` files that select a filter folder that does not exist."""
    problems = []
    group = Path(config_dir) / "filter"
    for name in sorted({n for n, _, _ in list_filters(filters_root)}):
        if not (group / f"{name}.yaml").is_file():
            problems.append(missing_conf_message(name, latest_version(filters_root, name) or "v1", filters_root,
                                                 config_dir))
    for conf in sorted(group.glob("*.yaml")):
        try:
            raw = yaml.safe_load(conf.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            problems.append(f"{conf}: not valid YAML: {e}")
            continue
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            problems.append(f"{conf}: expected name:, version: and root: (the filter folder it selects)")
            continue
        root = raw.get("root", "filters")
        if Path(root) != Path(filters_root):
            continue  # selects a filter under another root: not ours to judge here
        folder = filter_dir(root, raw["name"], str(raw.get("version", "v1")))
        if not (folder / "filter.yaml").is_file():
            problems.append(f"{conf} selects {folder}/, which has no filter.yaml: fix name:/version: there, "
                            f"or create the filter")
    return problems
