"""Filter definitions: the task a distillation run teaches.

A filter lives in ``filters/<name>/<version>/`` as a ``filter.yaml`` plus the prompt template it names.
Loading validates everything a run depends on and raises :class:`FilterSpecError` with a message that
says what to fix: dimension weights must sum to 1, tiers must be strictly ordered, the prompt template
may only use known fields, prefilter regexes must compile.

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

from distill.errors import FilterSpecError

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
        names = [d.name for d in self.dimensions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate dimension(s): {', '.join(dupes)}")
        if "reasoning" in names:
            raise ValueError("'reasoning' is reserved for the oracle's explanation; rename that dimension")
        top = self.scale_max
        for d in self.dimensions:
            bad = [k for k in d.rubric if not 0 <= k <= top]
            if bad:
                raise ValueError(f"dimension {d.name}: rubric anchors must be scores 0-{top} (scale_max), got {bad}")
        total = sum(d.weight for d in self.dimensions)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            listing = ", ".join(f"{d.name}={d.weight:g}" for d in self.dimensions)
            raise ValueError(
                f"dimension weights must sum to 1.0 but sum to {total:.4g} ({listing}); "
                f"adjust the weights so the overall score stays on the 0-{top} scale"
            )
        mins = [t.min_score for t in self.tiers]
        if any(a <= b for a, b in itertools.pairwise(mins)):
            listing = ", ".join(f"{t.name}>={t.min_score:g}" for t in self.tiers)
            raise ValueError(
                f"tiers must be listed from best to worst with strictly decreasing min_score, got {listing}"
            )
        high = [f"{t.name}>={t.min_score:g}" for t in self.tiers if t.min_score > top]
        if high:
            raise ValueError(f"tier thresholds must lie on the 0-{top} scale (scale_max), got {', '.join(high)}")
        if mins[-1] != 0:
            raise ValueError(
                f"the last tier ({self.tiers[-1].name}) must have min_score 0 so every score has a tier"
            )
        tnames = [t.name for t in self.tiers]
        if len(set(tnames)) != len(tnames):
            raise ValueError(f"duplicate tier names in {tnames}")
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
        msg = e["msg"].removeprefix("Value error, ")
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
    if path.is_dir():
        path = path / "filter.yaml"
    if not path.is_file():
        raise FilterSpecError(f"filter definition not found: {path}")
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
        raise FilterSpecError(f"{path}: template file {spec.template!r} not found next to it")
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


def list_filters(filters_root: str | Path = "filters") -> list[tuple[str, str, Path]]:
    """(name, version, path) of every ``filter.yaml`` under ``filters_root``."""
    found = []
    for p in sorted(Path(filters_root).glob("*/*/filter.yaml")):
        found.append((p.parent.parent.name, p.parent.name, p.parent))
    return found
