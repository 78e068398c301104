"""The evaluate stage: the student, its baselines and the oracle's own floor, on the same test items.

1. The student predicts the test split; the wall time of that call (loading the model included, a
   child process for a torch student) gives its items per second on this machine.
2. The baselines the train stage fitted (``<train.output_dir>/baseline/``: the sklearn student with its
   defaults, the mean or majority predictor) predict the same items.
3. :func:`distill.evaluate.compare` judges them all with the task kind's metrics, with paired
   bootstrap intervals for each predictor's headline figures and for the student's difference from
   each baseline (``student_minus_<baseline>``).
4. With ``evaluate.calibrate``, an isotonic calibration per dimension fitted on the val split's
   predictions is judged too, beside the raw figures (``calibration``).
5. The oracle's floor (``metrics/oracle_agreement.json``) is shown only when it was measured on exactly
   these test items (the SHA-256 of their sorted ids): a floor from other items, or an older run, is
   left out, with the reason in ``oracle_floor_missing``.
6. The oracle's cost per 1,000 items (its tokens in ``metrics/label.json`` at its price) against the
   student's (``cost``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from distill import jsonl
from distill.config import EvaluateConfig
from distill.errors import InputError
from distill.filterspec import FilterSpec
from distill.providers import ProviderConfig

log = logging.getLogger("distill")

STUDENT, CALIBRATED = "student", "calibrated"


def _rows(path: Path, what: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"{path} not found: {what}")
    return list(jsonl.read_jsonl(path))


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def floor_for(agreement: dict[str, Any] | None, test_ids: list[str], keys: tuple[str, ...]
              ) -> tuple[dict[str, Any] | None, str | None]:
    """(the floor figures, None) when ``agreement`` was measured on exactly ``test_ids``; else (None,
    why not), or (None, None) when there is no agreement file at all."""
    from distill.evaluate import ids_digest

    if agreement is None:
        return None, None
    if agreement.get("measured") is False:
        return None, f"not measured: {agreement.get('reason', 'see metrics/oracle_agreement.json')}"
    digest = agreement.get("ids_sha256")
    if digest is None:
        return None, ("metrics/oracle_agreement.json does not say which items it measured (an older run, or "
                      "`distill oracle-check` on a sample): rerun the oracle_check stage")
    if digest != ids_digest(test_ids):
        return None, (f"metrics/oracle_agreement.json was measured on {agreement.get('sampled')} item(s) that are not "
                      f"these {len(test_ids)} test items (stale, or written by `distill oracle-check`): rerun the "
                      "oracle_check stage")
    return {k: agreement.get(k) for k in keys}, None


def scatter_rows(spec: FilterSpec, test_rows: list[dict[str, Any]], predictions: list[dict[str, Any]]
                 ) -> list[dict[str, Any]]:
    """Predicted against oracle score, one row per valid answer and dimension (score tasks; [] else)."""
    if spec.kind != "score":
        return []
    by_id = {p["id"]: p for p in predictions}
    rows = []
    for r in test_rows:
        scores = spec.scores_of(by_id.get(r["id"], {}))
        if scores is not None:
            rows.extend({"id": r["id"], "dimension": d, "oracle": r["scores"][d], "student": scores[d]}
                        for d in spec.dimension_names)
    return rows


def cores() -> int:
    """The cores this process may run on (what a student's compute is charged for)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run(cfg: EvaluateConfig, spec: FilterSpec, split_dir: str | Path, model_dir: str | Path,
        metrics_dir: Path, oracle: ProviderConfig | None = None) -> dict[str, Any]:
    from distill.evaluate import against_gold, calibrate, compare, format_table, headline
    from distill.students import baselines, predict, read_manifest

    split_dir, metrics_dir = Path(split_dir), Path(metrics_dir)
    test_rows = _rows(split_dir / "test.jsonl", "run the split stage first")
    manifest = read_manifest(model_dir)
    t0 = time.perf_counter()
    predictions = predict(model_dir, test_rows, spec)
    predict_seconds = time.perf_counter() - t0
    predictors = {STUDENT: predictions, **baselines.predict(model_dir, test_rows, spec)}
    calibration: dict[str, Any] | None = None
    if cfg.calibrate:
        val_rows = _rows(split_dir / "val.jsonl", "run the split stage first")
        val_predictions = predict(model_dir, val_rows, spec) if val_rows else []
        calibrated, calibration = calibrate(spec, val_rows, val_predictions, predictions)
        if calibrated is not None:
            predictors[CALIBRATED] = calibrated
    comparison = compare(spec, test_rows, predictors, replicates=cfg.bootstrap_replicates, seed=cfg.bootstrap_seed,
                         level=cfg.ci_level)
    metrics, rows, per_dim = comparison.results[STUDENT]
    metrics = {"student": manifest["kind"], **metrics}
    gold = against_gold(test_rows, predictions, spec)
    if gold is not None:  # test rows with golden answers: the student against gold and oracle, side by side
        metrics["gold"] = gold
    names = [n for n in predictors if n not in (STUDENT, CALIBRATED)]
    if names:
        metrics["baselines"] = {n: headline(spec, comparison.metrics(n)) for n in names}
        for n in names:
            metrics[f"student_minus_{n}"] = comparison.diff(STUDENT, n)
    else:
        metrics["baselines_missing"] = (f"{Path(model_dir) / baselines.BASELINE_DIR} not found: set "
                                        "train.baseline=true (the default) and rerun the train stage")
    if calibration is not None:
        if CALIBRATED in predictors:
            after = comparison.metrics(CALIBRATED)
            calibration.update(after={**headline(spec, after), "mae": after.get("mae")},
                               after_minus_before=comparison.diff(CALIBRATED, STUDENT))
        metrics["calibration"] = calibration
    metrics["bootstrap"] = {"replicates": cfg.bootstrap_replicates, "seed": cfg.bootstrap_seed, "level": cfg.ci_level,
                            "paired": True}
    floor, missing = floor_for(_json(metrics_dir / "oracle_agreement.json"), [r["id"] for r in test_rows], spec.FLOOR)
    if floor is not None:  # the oracle's own noise on these items: the student's floor
        metrics["oracle_floor"] = floor
    elif missing:
        log.warning("evaluate: no oracle floor: %s", missing)
        metrics["oracle_floor_missing"] = missing
    metrics["predict_seconds"] = round(predict_seconds, 3)
    metrics["cost"] = _cost(cfg, metrics_dir, len(test_rows), predict_seconds, oracle)

    out = Path(cfg.output_dir)
    jsonl.write_json(out / "confusion.json", rows)
    jsonl.write_json(out / "per_dimension.json", per_dim)
    jsonl.write_json(out / "scatter.json", scatter_rows(spec, test_rows, predictions))
    jsonl.write_jsonl(out / "predictions.jsonl", predictions)
    jsonl.write_json(metrics_dir / "eval.json", metrics)
    print(format_table(metrics, title=f"student={manifest['kind']} vs oracle on {metrics['n_test']} test items",
                       spec=spec))
    return metrics


def _cost(cfg: EvaluateConfig, metrics_dir: Path, n: int, predict_seconds: float,
          oracle: ProviderConfig | None) -> dict[str, Any]:
    from distill.evaluate import cost_table
    from distill.providers.prices import price_for

    train = _json(metrics_dir / "train.json") or {}
    price, price_from = price_for(oracle) if oracle is not None else (None, "no oracle config given")
    if oracle is not None and oracle.mix:
        price_from += f"; a mix of {len(oracle.mix) + 1} oracles, priced at the first one's"
    return cost_table(n_items=n, predict_seconds=predict_seconds,
                      train_seconds=train.get("student_seconds", train.get("seconds")), cores=cores(),
                      cpu_hour_usd=cfg.cpu_hour_usd, label_metrics=_json(metrics_dir / "label.json"),
                      price=price.model_dump() if price is not None else None, price_from=price_from)
