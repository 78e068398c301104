"""Student against oracle on the test split: MAE per dimension, tier accuracy, macro-F1, valid-JSON share.

An LLM student's answer that does not parse or validate counts against it: its tier is ``invalid``
(always wrong) and each of its dimension errors is the worst possible for that item
(``max(truth, scale_max - truth)``). ``mae_valid_only`` reports the error on the answers that did parse.
The overall score and tier of a prediction are computed by the filter, as for the oracle.

Macro-F1 is the mean F1 over the filter's tiers (all of them, so experiments share one denominator):
an invalid answer is a miss for its true tier (not a class of its own), and a tier with neither test
items nor predictions counts as 1 (nothing to get wrong).
"""

from __future__ import annotations

from typing import Any

from distill.filterspec import FilterSpec

INVALID_TIER = "invalid"


def evaluate(truth: list[dict[str, Any]], predictions: list[dict[str, Any]],
             spec: FilterSpec) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Return (metrics, per-item rows for the confusion plot, per-dimension rows for the error plot)."""
    from sklearn.metrics import f1_score

    by_id = {p["id"]: p for p in predictions}
    dims = spec.dimension_names
    top = spec.scale_max
    abs_err = {d: [] for d in dims}
    abs_err_valid = {d: [] for d in dims}
    overall_err: list[float] = []
    rows = []
    valid = 0
    for ex in truth:
        pred = by_id.get(ex["id"], {})
        scores = pred.get("scores")
        if scores is not None:
            valid += 1
            p_overall, p_tier = spec.score(scores)
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

    def mean(xs: list[float]) -> float | None:
        return round(sum(xs) / len(xs), 4) if xs else None

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
        "macro_f1": round(float(f1_score(actual, predicted, labels=spec.tier_names, average="macro",
                                         zero_division=1.0)), 4) if n else None,
    }
    per_dim = [{"dimension": d, "mae": mae[d]} for d in dims]
    return metrics, rows, per_dim


def format_table(metrics: dict[str, Any], title: str = "", dimensions: list[str] | None = None) -> str:
    """A plain-text table of the headline metrics (what the demo prints at the end).

    ``dimensions`` orders the per-dimension rows (the filter's order); the metrics file cannot carry it,
    as it is written with sorted keys. Dimensions it does not name follow in the metrics' order."""
    lines = []
    if title:
        lines.append(title)
    lines.append(f"{'metric':<28}{'value':>10}")
    lines.append("-" * 38)
    for key in ("n_test", "valid_json_share", "tier_accuracy", "macro_f1", "overall_mae", "mean_dimension_mae"):
        v = metrics.get(key)
        lines.append(f"{key:<28}{'-' if v is None else v:>10}")
    lines.append("per-dimension MAE:")
    mae = metrics.get("mae") or {}
    order = [d for d in dimensions or [] if d in mae]
    for d in [*order, *(d for d in mae if d not in order)]:
        v = mae[d]
        lines.append(f"  {d:<26}{'-' if v is None else v:>10}")
    floor = metrics.get("oracle_floor")
    if floor:  # two oracles (or one asked twice) on the same items: no student is judged below it
        lines.append("oracle vs oracle (floor):")
        for key in ("tier_agreement", "overall_mae", "mean_dimension_mae"):
            v = floor.get(key)
            lines.append(f"  {key:<26}{'-' if v is None else v:>10}")
    return "\n".join(lines)
