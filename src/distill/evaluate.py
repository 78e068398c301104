"""The student against the oracle on the test split, and the table the report prints.

The metrics are the task kind's own (:meth:`distill.tasks.base.Task.evaluate`): for a rubric, MAE per
dimension, overall MAE, tier accuracy and macro-F1 over the filter's tiers; for classification,
accuracy, macro-F1 and a per-label report; for extraction, entity precision / recall / F1; for answers,
accuracy under the task's comparison. An answer that does not validate always counts against the
student (the worst error for a score, a miss for a label or an entity, a wrong answer), so a student
cannot look better by answering less. When test rows carry golden answers, :func:`against_gold` puts
the student against gold, the student against the oracle and the oracle against gold side by side.
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


def oracle_answer(row: dict[str, Any]) -> Any:
    """The oracle's answer of a split row (its assistant turn; split rows do not repeat ``label``)."""
    import json

    if "label" in row:
        return row["label"]
    return json.loads(next(m["content"] for m in reversed(row["messages"]) if m["role"] == "assistant"))


def against_gold(truth: list[dict[str, Any]], predictions: list[dict[str, Any]],
                 spec: FilterSpec) -> dict[str, Any] | None:
    """The student against gold and against the oracle, and the oracle against gold, side by side, each
    with the task's own metrics, on the test rows whose golden answer the task could read (``gold`` and
    ``gold_agrees`` carried from the label stage); None when no test row has one."""
    rows = [{**r, "label": oracle_answer(r)} for r in truth
            if r.get("gold") is not None and r.get("gold_agrees") is not None]
    if not rows:
        return None
    gold_rows = [spec.with_gold(r, r["gold"]) for r in rows]
    oracle = [{"id": r["id"], "answer": r["label"], "raw": None, "invalid_reason": None} for r in rows]
    return {"n": len(rows),
            "student_vs_gold": spec.evaluate(gold_rows, predictions)[0],
            "student_vs_oracle": spec.evaluate(rows, predictions)[0],
            "oracle_vs_gold": spec.evaluate(gold_rows, oracle)[0]}


_GOLD_COLUMNS = ("student_vs_gold", "student_vs_oracle", "oracle_vs_gold")


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
    elif _kind_of(metrics) is not None:
        headline, floor_keys = _kind_of(metrics).HEADLINE, _kind_of(metrics).FLOOR
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
    gold = metrics.get("gold")
    if gold:  # the same metrics against the golden answers: who is right, the student or the oracle?
        lines.append(f"on the {gold['n']} test items with gold:")
        lines.append(f"  {'metric':<26}" + "".join(f"{c.replace('_vs_', ' vs '):>20}" for c in _GOLD_COLUMNS))
        for key in headline:
            if key != "n_test":
                cells = [gold[c].get(key) for c in _GOLD_COLUMNS]
                lines.append(f"  {key:<26}" + "".join(f"{'-' if v is None else v:>20}" for v in cells))
    floor = metrics.get("oracle_floor")
    if floor:  # two oracles (or one asked twice) on the same items: no student is judged below it
        lines.append("oracle vs oracle (floor):")
        for key in floor_keys:
            v = floor.get(key)
            lines.append(f"  {key:<26}{'-' if v is None else v:>10}")
    return "\n".join(lines)


def _kind_of(metrics: dict[str, Any]):
    """The task kind whose headline metrics these are (by their keys), None when none fits."""
    from distill.tasks import KINDS

    fits = [cls for cls in KINDS.values() if set(cls.HEADLINE) <= set(metrics)]
    return max(fits, key=lambda cls: len(cls.HEADLINE), default=None)
