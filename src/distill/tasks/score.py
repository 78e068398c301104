"""Scoring on a rubric: the oracle scores each dimension; the project computes the overall score (the
weighted mean) and the tier from the filter's weights and thresholds, never trusting an LLM with
arithmetic. The evaluation is MAE per dimension, tier accuracy and macro-F1 over the filter's tiers.
"""

from __future__ import annotations

import itertools
import math
import re
from functools import cached_property
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from distill.tasks.base import Strict, Task, mean

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
#: the tier of a student's answer that did not validate (always wrong)
INVALID_TIER = "invalid"


class Dimension(Strict):
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


class Tier(Strict):
    name: str
    min_score: float = Field(ge=0)  # at most the filter's scale_max (checked with the filter)
    description: str = ""



class Output(Strict):
    reasoning_max_chars: int = Field(default=400, ge=20)



class ScoreTask(Task):
    KIND: ClassVar[str] = "score"
    TEMPLATE_FIELDS: ClassVar[frozenset[str]] = frozenset({"rubric", "dimension_names", "scale_max"})
    HEADLINE: ClassVar[tuple[str, ...]] = ("n_test", "valid_json_share", "tier_accuracy", "macro_f1",
                                           "overall_mae", "mean_dimension_mae")

    FLOOR: ClassVar[tuple[str, ...]] = ("mean_dimension_mae", "overall_mae", "tier_agreement")
    STRATUM: ClassVar[str] = "tier"
    STRATA: ClassVar[str] = "tiers"

    kind: Literal["score"] = "score"
    #: every dimension is scored with an integer from 0 to scale_max
    scale_max: int = Field(default=10, ge=1)
    dimensions: list[Dimension] = Field(min_length=1)
    tiers: list[Tier] = Field(min_length=2)
    output: Output = Output()

    @model_validator(mode="after")
    def _check(self) -> ScoreTask:
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

    def template_values(self, record: dict[str, Any]) -> dict[str, Any]:
        return {"rubric": self.rubric_text(), "dimension_names": ", ".join(self.dimension_names),
                "scale_max": self.scale_max}

    def labelled(self, answer: dict[str, Any], record: dict[str, Any] | None = None) -> dict[str, Any]:
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

    def same(self, a: dict[str, Any], b: dict[str, Any]) -> bool:
        """The same tier: what the student is judged on (dimension scores differ by a point or two
        between two runs of one oracle)."""
        return a["tier"] == b["tier"]

    def strata(self) -> list[str]:
        return self.tier_names

    def stratum(self, row: dict[str, Any]) -> str | None:
        return row["tier"]

    def summary(self) -> str:
        return f"score: {len(self.dimensions)} dimensions, tiers: {', '.join(self.tier_names)}"

    # ----------------------------------------------------------------- evaluation
    def scores_of(self, prediction: dict[str, Any]) -> dict[str, float] | None:
        """A prediction's dimension scores (a regression student writes them directly; a generative
        one writes the answer, None when it did not validate)."""
        if prediction.get("scores") is not None:
            return prediction["scores"]
        answer = prediction.get("answer")
        return None if answer is None else {d: answer[d] for d in self.dimension_names}

    def evaluate(self, truth: list[dict[str, Any]], predictions: list[dict[str, Any]]
                 ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        """MAE per dimension, overall MAE, tier accuracy, macro-F1 and the valid-JSON share.

        An answer that did not validate counts against the student: its tier is ``invalid`` (always
        wrong) and each of its dimension errors is the worst possible for that item
        (``max(truth, scale_max - truth)``); ``mae_valid_only`` is the error on the answers that did.
        Macro-F1 is the mean F1 over the filter's tiers (all of them, so experiments share one
        denominator): an invalid answer is a miss for its true tier, not a class of its own, and a tier
        with neither test items nor predictions counts as 1 (nothing to get wrong).
        """
        from sklearn.metrics import f1_score

        by_id = {p["id"]: p for p in predictions}
        dims = self.dimension_names
        top = self.scale_max
        abs_err: dict[str, list[float]] = {d: [] for d in dims}
        abs_err_valid: dict[str, list[float]] = {d: [] for d in dims}
        overall_err: list[float] = []
        rows = []
        valid = 0
        for ex in truth:
            scores = self.scores_of(by_id.get(ex["id"], {}))
            if scores is not None:
                valid += 1
                p_overall, p_tier = self.score(scores)
                for d in dims:
                    e = abs(float(scores[d]) - ex["scores"][d])
                    abs_err[d].append(e)
                    abs_err_valid[d].append(e)
                overall_err.append(abs(p_overall - ex["overall"]))
            else:
                p_overall, p_tier = None, INVALID_TIER
                for d in dims:
                    abs_err[d].append(float(max(ex["scores"][d], top - ex["scores"][d])))
                overall_err.append(max(ex["overall"], top - ex["overall"]))
            rows.append({"id": ex["id"], "actual": ex["tier"], "predicted": p_tier,
                         "actual_overall": ex["overall"], "predicted_overall": p_overall})
        n = len(truth)
        mae = {d: mean(abs_err[d]) for d in dims}
        actual = [r["actual"] for r in rows]
        predicted = [r["predicted"] for r in rows]
        metrics = {
            "n_test": n,
            "valid_json_share": round(valid / n, 4) if n else None,
            "mae": mae,
            "mean_dimension_mae": mean([v for v in mae.values() if v is not None]),
            "overall_mae": mean(overall_err),
            "mae_valid_only": mean([e for d in dims for e in abs_err_valid[d]]),
            "tier_accuracy": round(sum(a == p for a, p in zip(actual, predicted)) / n, 4) if n else None,
            "macro_f1": round(float(f1_score(actual, predicted, labels=self.tier_names, average="macro",
                                             zero_division=1.0)), 4) if n else None,
        }
        per_dim = [{"name": d, "value": mae[d], "metric": "mae"} for d in dims]
        return metrics, rows, per_dim

    def agreement(self, first: dict[str, dict[str, Any]], second: dict[str, dict[str, Any]],
                  order: list[str]) -> dict[str, Any]:
        """MAE per dimension and overall, tier agreement and Cohen's kappa on tiers."""
        import warnings

        from sklearn.metrics import cohen_kappa_score

        ids = [i for i in order if i in first and i in second]
        n = len(ids)
        mae = {d: mean([abs(float(first[i]["scores"][d]) - float(second[i]["scores"][d])) for i in ids])
               for d in self.dimension_names}
        tiers_a = [first[i]["tier"] for i in ids]
        tiers_b = [second[i]["tier"] for i in ids]
        kappa = None
        if n:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                value = float(cohen_kappa_score(tiers_a, tiers_b, labels=self.tier_names))
            kappa = None if math.isnan(value) else round(value, 4)  # undefined when both use one tier only
        return {
            "n": n,
            "mae": mae,
            "mean_dimension_mae": mean([v for v in mae.values() if v is not None]),
            "overall_mae": mean([abs(float(first[i]["overall"]) - float(second[i]["overall"])) for i in ids]),
            "tier_agreement": round(sum(a == b for a, b in zip(tiers_a, tiers_b)) / n, 4) if n else None,
            "cohen_kappa": kappa,
            "tiers": {"first": {t: tiers_a.count(t) for t in self.tier_names},
                      "second": {t: tiers_b.count(t) for t in self.tier_names}},
        }
