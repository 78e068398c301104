"""Filter definitions: the task a distillation run teaches.

A filter lives in ``filters/<name>/<version>/`` as a ``filter.yaml``, the prompt template it names and a
``README.md``; ``conf/filter/<name>.yaml`` makes it a Hydra option (``-S filter=<name>``). Loading
validates everything a run depends on and raises :class:`FilterSpecError` with a message that says what
to fix: dimension weights must sum to 1, tiers must be strictly ordered, the prompt template may only use
known fields, prefilter regexes must compile. :func:`load_filter_at` (what the pipeline and the
``distill`` commands use) also checks the folder: its names match ``name:`` and ``version:``, and the
README is there. :func:`conf_problems` finds filters that no ``conf/filter/*.yaml`` selects.

The oracle scores dimensions; the project computes the overall score and the tier from the weights and
thresholds here (:meth:`FilterSpec.score`), never trusting an LLM to do arithmetic.
"""

from __future__ import annotations

import itertools
import math
import re
import string
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distill.errors import FilterSpecError, queued_copy_hint

#: Fields a prompt template may reference.
TEMPLATE_FIELDS = frozenset({"id", "title", "text", "source", "published", "rubric", "dimension_names",
                             "scale_max"})

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Dimension(_Strict):
    name: str
    weight: float = Field(gt=0, le=1)
    question: str
    rubric: dict[int, str]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"dimension name {v!r} must be snake_case (a-z, 0-9, _)")
        return v

    @field_validator("rubric")
    @classmethod
    def _rubric(cls, v: dict[int, str]) -> dict[int, str]:
        return dict(sorted(v.items()))  # anchors are checked against the filter's scale_max


class Tier(_Strict):
    name: str
    min_score: float = Field(ge=0)  # at most the filter's scale_max (checked with the filter)
    description: str = ""


class KeywordRule(_Strict):
    """Block a record unless title or text matches at least one keyword (case-insensitive, whole word)."""

    reason: str = "no_topic_keyword"
    keywords: list[str] = Field(min_length=1)


class RegexRule(_Strict):
    """Block a record whose title or text matches ``pattern`` (Rust regex syntax, as polars uses)."""

    reason: str
    pattern: str
    case_sensitive: bool = False


class PrefilterRules(_Strict):
    min_words: int = Field(default=0, ge=0)
    max_words: int | None = Field(default=None, ge=1)
    require_keywords: KeywordRule | None = None
    block_patterns: list[RegexRule] = []
    #: Minimum share of common English function words (the, and, of, ...) among the words of the first 1,500
    #: characters (0 disables); below it a record is blocked as ``few_function_words``. It keeps out other
    #: languages, and also English tables of figures and bare lists, which have few function words.
    min_english_share: float = Field(default=0.0, ge=0, le=1)


class Output(_Strict):
    reasoning_max_chars: int = Field(default=400, ge=20)


class FilterSpec(_Strict):
    name: str
    version: str
    description: str
    #: every dimension is scored with an integer from 0 to scale_max
    scale_max: int = Field(default=10, ge=1)
    dimensions: list[Dimension] = Field(min_length=1)
    tiers: list[Tier] = Field(min_length=2)
    system_prompt: str
    template: str = Field(description="file name of the user prompt template, next to filter.yaml")
    prefilter: PrefilterRules = PrefilterRules()
    output: Output = Output()
    # set by the loader, not the YAML
    root: Path | None = Field(default=None, exclude=True)
    template_text: str = Field(default="", exclude=True)

    @model_validator(mode="after")
    def _check(self) -> FilterSpec:
        """Every cross-field problem at once (one per line), not only the first."""
        problems = []
        names = [d.name for d in self.dimensions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"duplicate dimension(s): {', '.join(dupes)}")
        if "reasoning" in names:
            problems.append("'reasoning' is reserved for the oracle's explanation; rename that dimension")
        top = self.scale_max
        for d in self.dimensions:
            bad = [k for k in d.rubric if not 0 <= k <= top]
            if bad:
                problems.append(f"dimension {d.name}: rubric anchors must be scores 0-{top} (scale_max), got {bad}")
        total = sum(d.weight for d in self.dimensions)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            listing = ", ".join(f"{d.name}={d.weight:g}" for d in self.dimensions)
            problems.append(
                f"dimension weights must sum to 1.0 but sum to {total:.4g} ({listing}); "
                f"adjust the weights so the overall score stays on the 0-{top} scale"
            )
        mins = [t.min_score for t in self.tiers]
        if any(a <= b for a, b in itertools.pairwise(mins)):
            listing = ", ".join(f"{t.name}>={t.min_score:g}" for t in self.tiers)
            problems.append(
                f"tiers must be listed from best to worst with strictly decreasing min_score, got {listing}"
            )
        high = [f"{t.name}>={t.min_score:g}" for t in self.tiers if t.min_score > top]
        if high:
            problems.append(f"tier thresholds must lie on the 0-{top} scale (scale_max), got {', '.join(high)}")
        if mins[-1] != 0:
            problems.append(
                f"the last tier ({self.tiers[-1].name}) must have min_score 0 so every score has a tier"
            )
        tnames = [t.name for t in self.tiers]
        if len(set(tnames)) != len(tnames):
            problems.append(f"duplicate tier names in {tnames}")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # ----------------------------------------------------------------- derived views
    @property
    def dimension_names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    @property
    def tier_names(self) -> list[str]:
        return [t.name for t in self.tiers]

    @cached_property
    def json_schema(self) -> dict[str, Any]:
        """The JSON schema every oracle answer must satisfy (and the student learns to emit)."""
        props: dict[str, Any] = {
            d.name: {"type": "integer", "minimum": 0, "maximum": self.scale_max} for d in self.dimensions
        }
        props["reasoning"] = {
            "type": "string",
            "minLength": 1,
            "maxLength": self.output.reasoning_max_chars,
        }
        return {
            "type": "object",
            "properties": props,
            "required": [*self.dimension_names, "reasoning"],
            "additionalProperties": False,
        }

    def rubric_text(self) -> str:
        lines = []
        for d in self.dimensions:
            lines.append(f"- {d.name}: {d.question}")
            for score, text in d.rubric.items():
                lines.append(f"    {score}: {text}")
        return "\n".join(lines)

    def render(self, record: dict[str, Any]) -> list[dict[str, str]]:
        """The chat messages for one record. Oracle and student both read exactly these."""
        meta = record.get("metadata") or {}
        fields = {
            "id": record.get("id", ""),
            "title": record.get("title") or "",
            "text": record["text"],
            "source": meta.get("source", ""),
            "published": meta.get("published", ""),
            "rubric": self.rubric_text(),
            "dimension_names": ", ".join(self.dimension_names),
            "scale_max": self.scale_max,
        }
        return [
            {"role": "system", "content": self.system_prompt.strip()},
            {"role": "user", "content": self.template_text.format_map(fields).strip()},
        ]

    def labelled(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The label fields of a row from a validated answer: the answer as kept (``label``), the
        dimension ``scores``, and the ``overall`` score and ``tier`` the project computes."""
        label = {name: answer[name] for name in [*self.dimension_names, "reasoning"]}
        scores = {name: answer[name] for name in self.dimension_names}
        overall, tier = self.score(scores)
        return {"label": label, "scores": scores, "overall": overall, "tier": tier}

    def score(self, scores: dict[str, float]) -> tuple[float, str]:
        """Overall weighted score (rounded to 3 decimals) and its tier."""
        overall = round(sum(d.weight * float(scores[d.name]) for d in self.dimensions), 3)
        return overall, self.tier_for(overall)

    def tier_for(self, overall: float) -> str:
        for tier in self.tiers:
            if overall >= tier.min_score:
                return tier.name
        return self.tiers[-1].name  # unreachable: the last tier starts at 0


def template_fields(template: str) -> set[str]:
    """Top-level field names a ``str.format`` template references."""
    fields = set()
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None:
            fields.add(re.split(r"[.\[]", field, maxsplit=1)[0])
    return fields


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


def load_filter(path: str | Path) -> FilterSpec:
    """Load and validate ``filter.yaml`` (or the folder holding it)."""
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
    try:
        spec = FilterSpec.model_validate(raw)
    except ValidationError as e:
        raise FilterSpecError(_format_validation_error(path, e)) from None

    tpath = path.parent / spec.template
    if not tpath.is_file():
        raise FilterSpecError(f"{path}: template file {spec.template!r} not found next to it"
                              f"{queued_copy_hint(f'the filter ({path.parent})')}")
    template = tpath.read_text(encoding="utf-8")
    try:
        used = template_fields(template)
    except ValueError as e:
        raise FilterSpecError(f"{tpath}: malformed template ({e}); write literal braces as {{{{ }}}}") from None
    unknown = sorted(used - TEMPLATE_FIELDS)
    if unknown:
        raise FilterSpecError(
            f"{tpath}: template refers to unknown field(s) {', '.join('{' + u + '}' for u in unknown)}; "
            f"known fields: {', '.join(sorted(TEMPLATE_FIELDS))}"
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
