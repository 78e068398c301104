"""The baselines the train stage fits next to the student, for evaluate to judge on the same test items.

``<train.output_dir>/baseline/`` holds the cheap student (TF-IDF + a linear model: ``student=sklearn``
with its default settings, trained on the same split) and ``constant.json``, the task kind's constant
predictor (the mean of each dimension for a rubric, the most frequent label for a classification).
Fitting them in the train stage, not in evaluate, keeps ``dvc.yaml`` honest with no extra edge: the
train stage already reads the training split and writes the model folder, so a changed split or
student reruns both, and evaluate only predicts with models it is given. They take seconds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from distill.errors import ConfigError

BASELINE_DIR = "baseline"
CONSTANT_FILE = "constant.json"
#: the cheap student's name in reports
SKLEARN = "sklearn"


def fit(task: Any, train_rows: list[dict], val_rows: list[dict], out_dir: str | Path) -> dict[str, Any]:
    """Fit the baselines of ``task`` on ``train_rows`` into ``out_dir``; what was fitted, and how long it took."""
    from distill.config import SklearnStudent
    from distill.students import train_student

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    metrics: dict[str, Any] = {}
    constant = task.constant_prediction(train_rows)
    if constant is not None:
        (out / CONSTANT_FILE).write_text(json.dumps({"kind": task.CONSTANT, "prediction": constant}, indent=2) + "\n",
                                         encoding="utf-8")
        metrics["constant"] = task.CONSTANT
    try:
        fitted = train_student(SklearnStudent(kind="sklearn"), train_rows, val_rows, task, out)
        metrics[SKLEARN] = {k: v for k, v in fitted.items() if k != "train_examples"}
    except ConfigError as e:  # a task kind the cheap student does not learn
        metrics[SKLEARN] = {"skipped": str(e)}
    metrics["seconds"] = round(time.perf_counter() - t0, 3)
    return metrics


def predict(model_dir: str | Path, rows: list[dict], task: Any) -> dict[str, list[dict[str, Any]]]:
    """Each baseline's predictions on ``rows``, by name (the constant predictor under ``task.CONSTANT``);
    empty when the train stage fitted none."""
    from distill.students import MANIFEST
    from distill.students import predict as predict_student

    folder = Path(model_dir) / BASELINE_DIR
    out: dict[str, list[dict[str, Any]]] = {}
    constant = folder / CONSTANT_FILE
    if constant.is_file():
        saved = json.loads(constant.read_text(encoding="utf-8"))
        out[saved["kind"]] = [{"id": r["id"], **saved["prediction"]} for r in rows]
    if (folder / MANIFEST).is_file():
        out[SKLEARN] = predict_student(folder, rows, task)
    return out
