"""Scoring on a rubric: the oracle scores each dimension; the project computes the overall score (the
weighted mean) and the tier from the filter's weights and thresholds, never trusting an LLM with
arithmetic. The evaluation is MAE, RMSE and Spearman per dimension, overall MAE, tier accuracy,
macro-F1 and quadratic-weighted kappa over the filter's tiers (:meth:`ScoreTask.evaluate`).
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
                                           "tier_qwk", "overall_mae", "mean_dimension_mae")
    INTERVALS: ClassVar[dict[str, str]] = {"overall_mae": "lower", "mean_dimension_mae": "lower",
                                           "tier_accuracy": "higher", "macro_f1": "higher", "tier_qwk": "higher"}
    CONSTANT: ClassVar[str] = "mean"

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
        """MAE, RMSE and Spearman per dimension, overall MAE, tier accuracy, macro-F1, quadratic-weighted
        kappa on the tiers' order, and the valid-JSON share.

        An answer that did not validate counts against the student: its tier is ``invalid`` (always
        wrong) and each of its dimension scores is the end of the scale farthest from the truth, so its
        error is the worst possible (``max(truth, scale_max - truth)``; the overall error likewise);
        ``mae_valid_only`` is the error on the answers that did. Macro-F1 is the mean F1 over the
        filter's tiers (all of them, so experiments share one denominator): an invalid answer is a miss
        for its true tier, not a class of its own, and a tier with neither test items nor predictions
        counts as 1 (nothing to get wrong). For the kappa an invalid answer is the tier farthest from
        the true one.
        """
        items = self._items(truth, predictions)
        n, dims = len(truth), self.dimension_names
        if not n:
            metrics = {"n_test": 0, "valid_json_share": None, "mae": dict.fromkeys(dims), "rmse": dict.fromkeys(dims),
                       "spearman": dict.fromkeys(dims), "mean_dimension_mae": None, "overall_mae": None,
                       "mae_valid_only": None, "tier_accuracy": None, "macro_f1": None, "tier_qwk": None}
            return metrics, [], [{"name": d, "value": None, "metric": "mae"} for d in dims]
        import numpy as np

        from distill.stats import point_sums, rounded, spearman

        columns = self.item_columns(truth, predictions, items)
        headline = {k: v[0] for k, v in self.from_sums(point_sums(columns), n).items()}
        abs_err, valid = columns["abs_err"], items["valid"]
        mae = {d: round(float(abs_err[:, j].mean()), 4) for j, d in enumerate(dims)}
        metrics = {
            "n_test": n,
            "valid_json_share": round(float(valid.mean()), 4),
            "mae": mae,
            "rmse": {d: round(float(np.sqrt(columns["sq_err"][:, j].mean())), 4) for j, d in enumerate(dims)},
            "spearman": {d: rounded(spearman(items["pred"][:, j], items["true"][:, j])) for j, d in enumerate(dims)},
            "mae_valid_only": round(float(abs_err[valid].mean()), 4) if valid.any() else None,
            **rounded(headline),
        }
        per_dim = [{"name": d, "value": mae[d], "metric": "mae"} for d in dims]
        return metrics, items["rows"], per_dim

    def _items(self, truth: list[dict[str, Any]], predictions: list[dict[str, Any]]) -> dict[str, Any]:
        """Per test item: true and predicted dimension scores (an invalid answer's: the ends of the scale
        farthest from the truth), the overall score's error, true and predicted tier positions (an
        invalid answer's: one past the last tier), and the rows of the confusion plot."""
        import numpy as np

        by_id = {p["id"]: p for p in predictions}
        dims, top, tiers = self.dimension_names, float(self.scale_max), self.tier_names
        n = len(truth)
        true = np.array([[float(ex["scores"][d]) for d in dims] for ex in truth]).reshape(n, len(dims))
        pred = np.empty_like(true)
        valid = np.zeros(n, dtype=bool)
        overall_err = np.empty(n)
        tier_true, tier_pred = np.empty(n, dtype=int), np.empty(n, dtype=int)
        rows = []
        for i, ex in enumerate(truth):
            scores = self.scores_of(by_id.get(ex["id"], {}))
            tier_true[i] = tiers.index(ex["tier"])
            if scores is not None:
                valid[i] = True
                pred[i] = [float(scores[d]) for d in dims]
                p_overall, p_tier = self.score(scores)
                overall_err[i] = abs(p_overall - ex["overall"])
                tier_pred[i] = tiers.index(p_tier)
            else:
                pred[i] = np.where(true[i] >= top - true[i], 0.0, top)
                p_overall, p_tier = None, INVALID_TIER
                overall_err[i] = max(ex["overall"], top - ex["overall"])
                tier_pred[i] = len(tiers)
            rows.append({"id": ex["id"], "actual": ex["tier"], "predicted": p_tier,
                         "actual_overall": ex["overall"], "predicted_overall": p_overall})
        return {"true": true, "pred": pred, "valid": valid, "overall_err": overall_err, "tier_true": tier_true,
                "tier_pred": tier_pred, "rows": rows}

    def item_columns(self, truth: list[dict[str, Any]], predictions: list[dict[str, Any]],
                     items: dict[str, Any] | None = None) -> dict[str, Any]:
        """Absolute and squared errors per dimension, the overall score's error, tier hits and the one-hot
        (true tier, predicted tier or invalid) pairs, per item."""
        import numpy as np

        from distill.stats import one_hot_pairs

        items = items if items is not None else self._items(truth, predictions)
        k = len(self.tiers)
        err = items["pred"] - items["true"]
        return {"abs_err": np.abs(err), "sq_err": err**2, "overall_err": items["overall_err"],
                "tier_hit": (items["tier_true"] == items["tier_pred"]).astype(float),
                "tier_pairs": one_hot_pairs(items["tier_true"], items["tier_pred"], k, k + 1)}

    def from_sums(self, sums: dict[str, Any], n: int) -> dict[str, Any]:
        import numpy as np

        from distill.stats import f1_from_counts, kappa

        k = len(self.tiers)
        pairs = sums["tier_pairs"].reshape(-1, k, k + 1)  # truth x (tiers + invalid)
        tp = np.diagonal(pairs[:, :, :k], axis1=1, axis2=2)
        fp = pairs[:, :, :k].sum(axis=1) - tp
        fn = pairs.sum(axis=2) - tp
        ordered = pairs[:, :, :k].copy()  # an invalid answer as the tier farthest from the true one
        for a in range(k):
            ordered[:, a, 0 if a >= k - 1 - a else k - 1] += pairs[:, a, k]
        return {
            "mean_dimension_mae": (sums["abs_err"] / n).mean(axis=1),
            "overall_mae": sums["overall_err"] / n,
            "tier_accuracy": sums["tier_hit"] / n,
            "macro_f1": f1_from_counts(tp, fp, fn).mean(axis=1),
            "tier_qwk": kappa(ordered, "quadratic"),
        }

    def constant_prediction(self, train: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Each dimension's mean over the training rows."""
        if not train:
            return None
        means = {d: round(sum(float(r["scores"][d]) for r in train) / len(train), 4) for d in self.dimension_names}
        return {"scores": means, "answer": means, "raw": None, "invalid_reason": None}

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
