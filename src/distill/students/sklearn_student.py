"""A classical baseline: TF-IDF over the prompt the oracle read, one ridge regressor per dimension.

Trains in seconds on a CPU and sets the bar an LLM student has to clear. The fitted model is saved as
JSON (vocabulary, idf and settings) and an ``.npz`` of ridge weights: no pickle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from distill.students import save_manifest, user_text


def _vectorizer(cfg_or_params: dict[str, Any]):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        lowercase=True,
        sublinear_tf=True,
        ngram_range=(1, cfg_or_params["ngram_max"]),
        max_features=cfg_or_params["max_features"],
        min_df=cfg_or_params["min_df"],
        dtype=np.float64,
    )


def train(cfg, train_rows: list[dict], val_rows: list[dict], dimensions: list[str], out_dir: str | Path,
          scale_max: int = 10) -> dict[str, Any]:
    from sklearn.linear_model import Ridge

    params = {"ngram_max": cfg.ngram_max, "max_features": cfg.max_features, "min_df": min(cfg.min_df, len(train_rows))}
    vec = _vectorizer(params)
    x = vec.fit_transform([user_text(r) for r in train_rows])
    y = np.array([[r["scores"][d] for d in dimensions] for r in train_rows], dtype=np.float64)
    ridge = Ridge(alpha=cfg.alpha)
    ridge.fit(x, y)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = {term: int(i) for term, i in vec.vocabulary_.items()}
    (out / "vectorizer.json").write_text(
        json.dumps({"params": params, "vocabulary": vocab, "idf": vec.idf_.tolist()}, sort_keys=True), encoding="utf-8"
    )
    np.savez(out / "ridge.npz", coef=np.atleast_2d(ridge.coef_), intercept=np.atleast_1d(ridge.intercept_))
    save_manifest(out, "sklearn", cfg.model_dump(), dimensions, scale_max)

    metrics: dict[str, Any] = {"train_examples": len(train_rows), "features": len(vocab)}
    if val_rows:
        pred = _predict_matrix(out, [user_text(r) for r in val_rows], scale_max)
        truth = np.array([[r["scores"][d] for d in dimensions] for r in val_rows], dtype=np.float64)
        metrics["val_mae"] = round(float(np.abs(pred - truth).mean()), 4)
    return metrics


def _predict_matrix(model_dir: Path, texts: list[str], scale_max: int) -> np.ndarray:
    saved = json.loads((model_dir / "vectorizer.json").read_text(encoding="utf-8"))
    vec = _vectorizer(saved["params"])
    vec.vocabulary_ = saved["vocabulary"]
    vec.idf_ = np.asarray(saved["idf"], dtype=np.float64)
    weights = np.load(model_dir / "ridge.npz")
    x = vec.transform(texts)
    pred = x @ weights["coef"].T + weights["intercept"]
    return np.clip(np.asarray(pred), 0, scale_max)


def predict(model_dir: str | Path, examples: list[dict], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    dims = manifest["dimensions"]
    pred = _predict_matrix(Path(model_dir), [user_text(e) for e in examples], manifest.get("scale_max", 10))
    return [
        {"id": e["id"], "scores": {d: round(float(v), 3) for d, v in zip(dims, row)}, "raw": None}
        for e, row in zip(examples, pred)
    ]
