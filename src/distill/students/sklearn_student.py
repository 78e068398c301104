"""A classical baseline: TF-IDF over the prompt the oracle read, then a linear model per task kind.

- ``score``: one ridge regressor per dimension, predictions clipped to the filter's 0..scale_max;
- ``classify``: logistic regression over the labels (one-vs-rest when multi-label: every label whose
  probability passes 0.5, and the most likely one when none does).

Trains in seconds on a CPU and sets the bar an LLM student has to clear. The fitted model is saved as
JSON (vocabulary, idf and settings) and an ``.npz`` of weights: no pickle.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import ConfigError
from distill.students import save_manifest, user_text

KINDS = ("score", "classify")


def _vectorizer(cfg_or_params: dict[str, Any]):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        lowercase=True,
        sublinear_tf=True,
        ngram_range=(1, cfg_or_params["ngram_max"]),
        max_features=cfg_or_params["max_features"],
        min_df=cfg_or_params["min_df"],
        max_df=cfg_or_params.get("max_df", 1.0),
        dtype=np.float64,
    )


def train(cfg, train_rows: list[dict], val_rows: list[dict], task: dict[str, Any], out_dir: str | Path
          ) -> dict[str, Any]:
    if task["kind"] not in KINDS:
        raise ConfigError(f"student=sklearn learns {' and '.join(KINDS)} tasks; this filter is a {task['kind']} "
                          "task: use student=lora")
    params = {"ngram_max": cfg.ngram_max, "max_features": cfg.max_features, "min_df": min(cfg.min_df, len(train_rows)),
              "max_df": cfg.max_df if len(train_rows) >= 10 else 1.0}
    vec = _vectorizer(params)
    x = vec.fit_transform([user_text(r) for r in train_rows])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if task["kind"] == "score":
        from sklearn.linear_model import Ridge

        y = np.array([[r["scores"][d] for d in task["dimensions"]] for r in train_rows], dtype=np.float64)
        model = Ridge(alpha=cfg.alpha).fit(x, y)
        coef, intercept = np.atleast_2d(model.coef_), np.atleast_1d(model.intercept_)
    else:
        coef, intercept = _fit_labels(x, train_rows, task, cfg.c)
    vocab = {term: int(i) for term, i in vec.vocabulary_.items()}
    (out / "vectorizer.json").write_text(
        json.dumps({"params": params, "vocabulary": vocab, "idf": vec.idf_.tolist()}, sort_keys=True), encoding="utf-8"
    )
    np.savez(out / "ridge.npz", coef=coef, intercept=intercept)
    save_manifest(out, "sklearn", cfg.model_dump(), task)

    metrics: dict[str, Any] = {"train_examples": len(train_rows), "features": len(vocab)}
    if val_rows and task["kind"] == "score":
        pred = _scores_matrix(out, [user_text(r) for r in val_rows], task["scale_max"])
        truth = np.array([[r["scores"][d] for d in task["dimensions"]] for r in val_rows], dtype=np.float64)
        metrics["val_mae"] = round(float(np.abs(pred - truth).mean()), 4)
    elif val_rows:
        picked = _labels(out, [user_text(r) for r in val_rows], task)
        metrics["val_accuracy"] = round(float(np.mean([set(p) == set(r["labels"]) for p, r in zip(picked, val_rows)])),
                                        4)
    return metrics


def _fit_labels(x, rows: list[dict], task: dict[str, Any], c: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights (labels x features) and intercepts of a logistic regression per label (one-vs-rest),
    or a multinomial one for single-label tasks. A label absent from the training data gets a large
    negative intercept: it is never predicted."""
    from sklearn.linear_model import LogisticRegression

    labels = task["labels"]
    coef = np.zeros((len(labels), x.shape[1]))
    intercept = np.full(len(labels), -30.0)
    if not task.get("multi_label"):
        y = [r["labels"][0] for r in rows]
        present = sorted(set(y), key=labels.index)
        if len(present) == 1:
            intercept[labels.index(present[0])] = 30.0
            return coef, intercept
        model = LogisticRegression(C=c, max_iter=1000).fit(x, y)
        weights = model.coef_ if len(present) > 2 else np.vstack([-model.coef_[0], model.coef_[0]])
        bias = model.intercept_ if len(present) > 2 else np.array([-model.intercept_[0], model.intercept_[0]])
        for k, label in enumerate(model.classes_):
            coef[labels.index(label)], intercept[labels.index(label)] = weights[k], bias[k]
        return coef, intercept
    for k, label in enumerate(labels):
        y = [label in r["labels"] for r in rows]
        if all(y) or not any(y):
            intercept[k] = 30.0 if all(y) else -30.0
            continue
        model = LogisticRegression(C=c, max_iter=1000).fit(x, y)
        coef[k], intercept[k] = model.coef_[0], model.intercept_[0]
    return coef, intercept


def _linear(model_dir: Path, texts: list[str]) -> np.ndarray:
    files = (model_dir / "vectorizer.json", model_dir / "ridge.npz")
    vec, coef, intercept = _load(str(model_dir), tuple(f.stat().st_mtime_ns for f in files))
    return np.asarray(vec.transform(texts) @ coef.T + intercept)


@functools.lru_cache(maxsize=4)
def _load(model_dir: str, stamp: tuple[int, ...]):
    """The fitted vectorizer and weights, loaded once per process and model files (``stamp``: their
    mtimes): rebuilding the vectorizer takes seconds, which ``distill infer`` would pay per batch."""
    saved = json.loads((Path(model_dir) / "vectorizer.json").read_text(encoding="utf-8"))
    vec = _vectorizer(saved["params"])
    vec.vocabulary_ = saved["vocabulary"]
    vec.idf_ = np.asarray(saved["idf"], dtype=np.float64)
    weights = np.load(Path(model_dir) / "ridge.npz")
    return vec, weights["coef"], weights["intercept"]


def _scores_matrix(model_dir: Path, texts: list[str], scale_max: int) -> np.ndarray:
    return np.clip(_linear(model_dir, texts), 0, scale_max)


def _labels(model_dir: Path, texts: list[str], task: dict[str, Any]) -> list[list[str]]:
    logits = _linear(model_dir, texts)
    labels = task["labels"]
    if not task.get("multi_label"):
        return [[labels[int(np.argmax(row))]] for row in logits]
    out = []
    for row in logits:
        chosen = [label for label, z in zip(labels, row) if z > 0]  # probability above 0.5
        out.append(chosen or [labels[int(np.argmax(row))]])
    return out


def predict(model_dir: str | Path, examples: list[dict], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    task = manifest.get("task") or {"kind": "score", "dimensions": manifest["dimensions"],
                                    "scale_max": manifest.get("scale_max") or 10}
    texts = [user_text(e) for e in examples]
    if task["kind"] == "score":
        dims = task["dimensions"]
        pred = _scores_matrix(Path(model_dir), texts, task["scale_max"])
        out = []
        for e, row in zip(examples, pred):
            scores = {d: round(float(v), 3) for d, v in zip(dims, row)}
            out.append({"id": e["id"], "scores": scores, "answer": scores, "raw": None, "invalid_reason": None})
        return out
    out = []
    for e, labels in zip(examples, _labels(Path(model_dir), texts, task)):
        answer = {"labels": labels} if task.get("multi_label") else {"label": labels[0]}
        out.append({"id": e["id"], "answer": answer, "raw": None, "invalid_reason": None})
    return out
