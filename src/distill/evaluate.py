"""The student against the oracle on the test split, next to baselines, with intervals; the printed table.

The metrics are the task kind's own (:meth:`distill.tasks.base.Task.evaluate`): for a rubric, MAE, RMSE
and Spearman per dimension, overall MAE, tier accuracy, macro-F1 and quadratic-weighted kappa over the
filter's tiers; for classification, accuracy, macro-F1, Cohen's kappa and a per-label report; for
extraction, entity precision / recall / F1; for answers, accuracy under the task's comparison. An answer
that does not validate always counts against the student (the worst error for a score, a miss for a
label or an entity, a wrong answer), so a student cannot look better by answering less. When test rows
carry golden answers, :func:`against_gold` puts the student against gold, the student against the oracle
and the oracle against gold side by side.

:func:`compare` judges every predictor (the student, the cheap TF-IDF baseline, the constant
predictor) on the same items and adds paired bootstrap intervals (:mod:`distill.stats`) to the
headline figures of each, and to the student's difference from each baseline: item ids are resampled
once per replicate for all predictors, so a difference whose interval excludes 0 is one these test
items support. :func:`calibrate` is the optional isotonic calibration, :func:`cost_table` the oracle
against the student in dollars per 1,000 items.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from distill.filterspec import FilterSpec
from distill.tasks.score import INVALID_TIER  # noqa: F401 - re-exported

#: the headline keys printed when the metrics do not say which kind wrote them (score tasks')
_SCORE_HEADLINE = ("n_test", "valid_json_share", "tier_accuracy", "macro_f1", "tier_qwk", "overall_mae",
                   "mean_dimension_mae")
_CLASSIFY_HEADLINE = ("n_test", "valid_json_share", "accuracy", "macro_f1", "cohen_kappa", "micro_f1")
#: what a CPU-hour costs unless evaluate.cpu_hour_usd says otherwise: an on-demand c7i.large (2 vCPUs,
#: $0.08925 an hour in us-east-1, Linux) is $0.0446 per vCPU-hour
CPU_HOUR_USD = 0.045


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


def ids_digest(ids: Iterable[str]) -> str:
    """SHA-256 of the sorted ids: what an oracle check and an evaluation compare to know they are about
    the same items."""
    return hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()


def _interval(values, level: float) -> dict[str, float] | None:
    from distill.stats import percentile_interval, rounded

    found = percentile_interval(values, level)
    return None if found is None else {"lo": rounded(found[0]), "hi": rounded(found[1])}


@dataclass
class Comparison:
    """Every predictor judged on the same items: ``results[name]`` is its ``task.evaluate`` output
    (metrics with ``<figure>_ci`` added, confusion rows, part rows); :meth:`diff` the paired intervals."""

    results: dict[str, tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]]
    replicates: dict[str, dict[str, Any]] = field(default_factory=dict)
    points: dict[str, dict[str, Any]] = field(default_factory=dict)
    intervals: list[str] = field(default_factory=list)
    level: float = 0.95

    def metrics(self, name: str) -> dict[str, Any]:
        return self.results[name][0]

    def diff(self, a: str, b: str) -> dict[str, Any]:
        """``{figure: {"diff": a - b, "ci": {lo, hi}}}``, the interval over the same replicates."""
        from distill.stats import rounded

        out = {}
        for key in self.intervals:
            if key in self.replicates.get(a, {}) and key in self.replicates.get(b, {}):
                out[key] = {"diff": rounded(self.points[a][key] - self.points[b][key]),
                            "ci": _interval(self.replicates[a][key] - self.replicates[b][key], self.level)}
        return out


def compare(task: FilterSpec, truth: list[dict[str, Any]], predictors: dict[str, list[dict[str, Any]]], *,
            replicates: int = 2000, seed: int = 0, level: float = 0.95) -> Comparison:
    """Every predictor's ``task.evaluate`` on ``truth``, with a paired bootstrap interval
    (``<figure>_ci: {lo, hi}``) for each of the task's :attr:`~distill.tasks.base.Task.INTERVALS`
    figures: the item ids are resampled once per replicate (seeded) for all predictors. With fewer
    than 2 items, or a kind without item columns, there are no intervals."""
    from distill.stats import point_sums, resample_counts, weighted_sums

    out = Comparison({name: task.evaluate(truth, preds) for name, preds in predictors.items()}, level=level)
    n = len(truth)
    columns = {name: task.item_columns(truth, preds) for name, preds in predictors.items()} if n >= 2 else {}
    if not columns or any(c is None for c in columns.values()):
        return out
    weights = resample_counts(n, replicates, seed)
    out.intervals = list(task.INTERVALS)
    for name, cols in columns.items():
        out.replicates[name] = task.from_sums(weighted_sums(cols, weights), n)
        out.points[name] = {k: v[0] for k, v in task.from_sums(point_sums(cols), n).items()}
        metrics = out.metrics(name)
        for key in out.intervals:
            if key in out.replicates[name]:
                metrics[f"{key}_ci"] = _interval(out.replicates[name][key], level)
    return out


def headline(task: FilterSpec, metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures a baseline is reported with: the headline and their intervals."""
    keys = [*task.HEADLINE, *(f"{k}_ci" for k in task.INTERVALS)]
    return {k: metrics[k] for k in keys if k in metrics}


# ----------------------------------------------------------------------------- calibration
def calibrate(task: FilterSpec, val: list[dict[str, Any]], val_predictions: list[dict[str, Any]],
              test_predictions: list[dict[str, Any]]) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
    """Per-dimension isotonic regression of the truth on the student's score, fitted on the validation
    items the student answered validly, applied to its test predictions (clipped to the scale; invalid
    answers stay invalid). Returns (calibrated test predictions, or None when it cannot be fitted, and
    a note). The fit can overfit a small validation split: report it beside the raw figures."""
    if task.kind != "score":
        return None, {"skipped": f"isotonic calibration applies to score tasks, not {task.kind}"}
    from sklearn.isotonic import IsotonicRegression

    by_id = {p["id"]: p for p in val_predictions}
    pairs = [(task.scores_of(by_id.get(r["id"], {})), r["scores"]) for r in val]
    pairs = [(p, t) for p, t in pairs if p is not None]
    if len(pairs) < 2:
        return None, {"skipped": f"{len(pairs)} valid validation prediction(s): at least 2 are needed to fit"}
    models = {}
    for d in task.dimension_names:
        models[d] = IsotonicRegression(y_min=0, y_max=task.scale_max, out_of_bounds="clip").fit(
            [float(p[d]) for p, _ in pairs], [float(t[d]) for _, t in pairs])
    out = []
    for p in test_predictions:
        scores = task.scores_of(p)
        if scores is None:
            out.append(p)
            continue
        fixed = {d: round(float(models[d].predict([float(scores[d])])[0]), 3) for d in task.dimension_names}
        out.append({**p, "scores": fixed, "answer": fixed})
    return out, {"fitted_on_val_items": len(pairs)}


# ----------------------------------------------------------------------------- cost
def cost_table(*, n_items: int, predict_seconds: float, train_seconds: float | None, cores: int,
               cpu_hour_usd: float, label_metrics: dict[str, Any] | None, price: dict[str, float] | None,
               price_from: str) -> dict[str, Any]:
    """Dollars per 1,000 items: the oracle (its tokens per labelled record in ``metrics/label.json``,
    paid and cached alike, at its price; the batch discount in batch mode) against the student (the
    prediction's wall time on this machine's ``cores`` at ``cpu_hour_usd`` each), the student's one-off
    training cost, and after how many items the student, training included, is the cheaper."""
    from distill.stats import rounded

    per_s = n_items / predict_seconds if predict_seconds > 0 else None
    student_1k = 1000 / per_s / 3600 * cores * cpu_hour_usd if per_s else None
    train_usd = train_seconds / 3600 * cores * cpu_hour_usd if train_seconds else None
    student = {"items_per_s": rounded(per_s, 2), "predict_seconds": rounded(predict_seconds, 3), "cores": cores,
               "cpu_hour_usd": cpu_hour_usd, "usd_per_1k_items": rounded(student_1k, 6),
               "train_seconds": rounded(train_seconds, 3), "train_usd": rounded(train_usd, 6)}
    oracle: dict[str, Any] = {"price_from": price_from, "usd_per_1k_items": None}
    oracle_1k = None
    lm = label_metrics or {}
    records = (lm.get("valid") or 0) + (lm.get("invalid") or 0)
    if records:
        tokens_in = (lm.get("input_tokens") or 0) + (lm.get("cached_input_tokens") or 0)
        tokens_out = (lm.get("output_tokens") or 0) + (lm.get("cached_output_tokens") or 0)
        oracle.update(records=records, input_tokens_per_item=rounded(tokens_in / records, 1),
                      output_tokens_per_item=rounded(tokens_out / records, 1), mode=lm.get("mode", "online"))
        if price is not None:
            discount = price.get("batch_discount", 1.0) if lm.get("mode") == "batch" else 1.0
            per_item = (tokens_in * price["input_per_mtok"] + tokens_out * price["output_per_mtok"]) / 1e6 / records
            oracle_1k = per_item * discount * 1000
            oracle["usd_per_1k_items"] = rounded(oracle_1k, 6)
    else:
        oracle["note"] = "metrics/label.json has no labelled records: run the label stage"
    out = {"oracle": oracle, "student": student, "break_even_items": None}
    if oracle_1k is not None and student_1k is not None and train_usd is not None and oracle_1k > student_1k:
        out["break_even_items"] = math.ceil(train_usd / ((oracle_1k - student_1k) / 1000))
    return out


# ----------------------------------------------------------------------------- the table
def _show(v: Any) -> str:
    return "-" if v is None else f"{v}"


def _with_ci(metrics: dict[str, Any], key: str) -> str:
    ci = metrics.get(f"{key}_ci")
    return f"  [{ci['lo']}, {ci['hi']}]" if isinstance(ci, dict) else ""


def format_table(metrics: dict[str, Any], title: str = "", dimensions: list[str] | None = None,
                 spec: FilterSpec | None = None) -> str:
    """A plain-text table of the headline metrics (what the demo prints at the end).

    ``spec`` (or, without it, the metrics' own keys) decides the headline rows; ``dimensions`` orders
    the per-dimension rows of a score task (the filter's order: the metrics file cannot carry it, as it
    is written with sorted keys). Dimensions it does not name follow in the metrics' order. Intervals
    are the paired bootstrap's (95% unless ``bootstrap.level`` says otherwise)."""
    if spec is not None:
        headline_keys = spec.HEADLINE
        dimensions = dimensions or getattr(spec, "dimension_names", None)
        floor_keys = spec.FLOOR
    elif "per_label" in metrics:
        headline_keys, floor_keys = _CLASSIFY_HEADLINE, ("label_agreement", "cohen_kappa")
    elif _kind_of(metrics) is not None:
        headline_keys, floor_keys = _kind_of(metrics).HEADLINE, _kind_of(metrics).FLOOR
    else:
        headline_keys, floor_keys = _SCORE_HEADLINE, ("tier_agreement", "overall_mae", "mean_dimension_mae")
    lines = [title] if title else []
    lines.append(f"{'metric':<28}{'value':>10}  95% interval")
    lines.append("-" * 52)
    for key in headline_keys:
        if key in metrics or key in ("n_test", "valid_json_share"):
            lines.append(f"{key:<28}{_show(metrics.get(key)):>10}{_with_ci(metrics, key)}")
    if "mae" in metrics:
        lines.append("per-dimension MAE:")
        mae, rmse, rho = metrics.get("mae") or {}, metrics.get("rmse") or {}, metrics.get("spearman") or {}
        order = [d for d in dimensions or [] if d in mae]
        order = [*order, *(d for d in mae if d not in order)]
        for d in order:
            lines.append(f"  {d:<26}{_show(mae[d]):>10}")
        if rmse or rho:
            lines.append("per-dimension RMSE / Spearman:")
            for d in order:
                lines.append(f"  {d:<26}{_show(rmse.get(d)):>10}  {_show(rho.get(d))}")
    if "per_label" in metrics:
        lines.append("per-label F1 (support):")
        for label, r in metrics["per_label"].items():
            lines.append(f"  {label:<26}{r['f1']:>10} ({r['support']})")
    gold = metrics.get("gold")
    if gold:  # the same metrics against the golden answers: who is right, the student or the oracle?
        lines.append(f"on the {gold['n']} test items with gold:")
        lines.append(f"  {'metric':<26}" + "".join(f"{c.replace('_vs_', ' vs '):>20}" for c in _GOLD_COLUMNS))
        for key in headline_keys:
            if key != "n_test":
                cells = [gold[c].get(key) for c in _GOLD_COLUMNS]
                lines.append(f"  {key:<26}" + "".join(f"{'-' if v is None else v:>20}" for v in cells))
    for name, base in (metrics.get("baselines") or {}).items():
        lines.append(f"baseline {name}:")
        diff = metrics.get(f"student_minus_{name}") or {}
        for key in headline_keys:
            if key in base and key not in ("n_test", "valid_json_share"):
                d = diff.get(key)
                delta = f"  student - {name}: {d['diff']:+}" + (
                    f" [{d['ci']['lo']}, {d['ci']['hi']}]" if d.get("ci") else "") if d else ""
                lines.append(f"  {key:<26}{_show(base[key]):>10}{_with_ci(base, key)}{delta}")
    calibration = metrics.get("calibration") or {}
    if "after" in calibration:
        lines.append(f"isotonic calibration (fitted on {calibration['fitted_on_val_items']} val items):")
        for key in headline_keys:
            if key in calibration["after"] and key not in ("n_test", "valid_json_share"):
                lines.append(f"  {key:<26}{_show(calibration['after'][key]):>10}{_with_ci(calibration['after'], key)}"
                             f"  (before {_show(metrics.get(key))})")
    floor = metrics.get("oracle_floor")
    if floor:  # two oracles (or one asked twice) on the same items: no student is judged below it
        lines.append("oracle vs oracle (floor):")
        for key in floor_keys:
            v = floor.get(key)
            lines.append(f"  {key:<26}{'-' if v is None else v:>10}")
    elif metrics.get("oracle_floor_missing"):
        lines.append(f"oracle floor: none ({metrics['oracle_floor_missing']})")
    cost = metrics.get("cost")
    if cost:
        o, s = cost["oracle"], cost["student"]
        lines.append("cost per 1,000 items (USD):")
        lines.append(f"  {'oracle':<26}{_show(o.get('usd_per_1k_items')):>10}  ({o.get('price_from')})")
        lines.append(f"  {'student':<26}{_show(s.get('usd_per_1k_items')):>10}  ({s.get('items_per_s')} items/s on "
                     f"{s.get('cores')} cores at ${s.get('cpu_hour_usd')}/CPU-hour; "
                     f"training ${_show(s.get('train_usd'))})")
        if cost.get("break_even_items") is not None:
            lines.append(f"  the student is cheaper, training included, after {cost['break_even_items']:,} items")
    return "\n".join(lines)


def _kind_of(metrics: dict[str, Any]):
    """The task kind whose headline metrics these are (by their keys), None when none fits."""
    from distill.tasks import KINDS

    fits = [cls for cls in KINDS.values() if set(cls.HEADLINE) <= set(metrics)]
    return max(fits, key=lambda cls: len(cls.HEADLINE), default=None)
