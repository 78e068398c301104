"""The student against the oracle on the test split, and the table the report prints.

The metrics are the task kind's own (:meth:`distill.tasks.base.Task.evaluate`): for a rubric, MAE per
dimension, overall MAE, tier accuracy and macro-F1 over the filter's tiers; for classification,
accuracy, macro-F1 and a per-label report; ... An answer that does not validate always counts against
the student (the worst error for a score, a miss for a label), so a student cannot look better by
answering less.
"""

from __future__ import annotations

from typing import Any

from distill.filterspec import FilterSpec
from distill.tasks.score import INVALID_TIER  # noqa: F401 - re-exported

#: the headline keys printed when the metrics do not say which kind wrote them (score tasks')
_SCORE_HEADLINE = ("n_test", "valid_json_share", "tier_accuracy", "macro_f1", "overall_mae", "mean_dimension_mae")
_CLASSIFY_HEADLINE = ("n_test", "valid_json_share", "accuracy", "macro_f1", "micro_f1")


def evaluate(truth: list[dict[str, Any]], predictions: list[dict[str, Any]],
             spec: FilterSpec) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(metrics, per-item rows for the confusion plot, per-part rows for the error plot)."""
    return spec.evaluate(truth, predictions)


def format_table(metrics: dict[str, Any], title: str = "", dimensions: list[str] | None = None,
                 spec: FilterSpec | None = None) -> str:
    """A plain-text table of the headline metrics (what the demo prints at the end).

    ``spec`` (or, without it, the metrics' own keys) decides the headline rows; ``dimensions`` orders
    the per-dimension rows of a score task (the filter's order: the metrics file cannot carry it, as it
    is written with sorted keys). Dimensions it does not name follow in the metrics' order."""
    if spec is not None:
        headline = spec.HEADLINE
        dimensions = dimensions or getattr(spec, "dimension_names", None)
        floor_keys = spec.FLOOR
    elif "per_label" in metrics:
        headline, floor_keys = _CLASSIFY_HEADLINE, ("label_agreement", "cohen_kappa")
    elif (kind := _other_kind(metrics)) is not None:  # translate, generate...: the kind whose headline it has
        headline, floor_keys = kind.HEADLINE, kind.FLOOR
    else:
        headline, floor_keys = _SCORE_HEADLINE, ("tier_agreement", "overall_mae", "mean_dimension_mae")
    lines = [title] if title else []
    lines.append(f"{'metric':<28}{'value':>10}")
    lines.append("-" * 38)
    for key in headline:
        v = metrics.get(key)
        lines.append(f"{key:<28}{'-' if v is None else v:>10}")
    if "mae" in metrics:
        lines.append("per-dimension MAE:")
        mae = metrics.get("mae") or {}
        order = [d for d in dimensions or [] if d in mae]
        for d in [*order, *(d for d in mae if d not in order)]:
            v = mae[d]
            lines.append(f"  {d:<26}{'-' if v is None else v:>10}")
    if "per_label" in metrics:
        lines.append("per-label F1 (support):")
        for label, r in metrics["per_label"].items():
            lines.append(f"  {label:<26}{r['f1']:>10} ({r['support']})")
    floor = metrics.get("oracle_floor")
    if floor:  # two oracles (or one asked twice) on the same items: no student is judged below it
        lines.append("oracle vs oracle (floor):")
        for key in floor_keys:
            v = floor.get(key)
            lines.append(f"  {key:<26}{'-' if v is None else v:>10}")
    return "\n".join(lines)


def _other_kind(metrics: dict[str, Any]):
    """The task kind (besides score and classify) whose headline metrics are all in ``metrics``, if any."""
    from distill.tasks import KINDS

    return next((cls for name, cls in KINDS.items() if name not in ("score", "classify")
                 and all(k in metrics for k in cls.HEADLINE)), None)
