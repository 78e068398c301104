"""The statistics the evaluation shares: the paired bootstrap, F1 and kappa from counts, rank correlation.

Every headline figure of a task is a function of sums of per-item columns (an absolute error, a hit,
one-hot (true, predicted) class pairs, true and false positives per label), so the figure on any
resample of the test items is the same function of the resample's sums. A bootstrap replicate is a
vector of counts, how often each item was drawn (:func:`resample_counts`); the sums of every
replicate are one matrix product (:func:`weighted_sums`), and the figure is computed for all
replicates at once. The counts are drawn once and shared by every predictor (the student, the
baselines): the bootstrap is paired, so the interval of a difference between two predictors reflects
the items they were both judged on rather than two independent samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: replicates and the interval's coverage unless evaluate says otherwise
REPLICATES = 2000
LEVEL = 0.95


def resample_counts(n: int, replicates: int, seed: int) -> np.ndarray:
    """(replicates, n) counts: how often each of ``n`` items is drawn when ``n`` are drawn with
    replacement, per replicate (seeded: the same seed gives the same replicates)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(replicates, n))
    flat = draws + (np.arange(replicates) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=replicates * n).reshape(replicates, n).astype(np.float64)


def weighted_sums(columns: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Each column (items first: (n,) or (n, ...)) summed over the items with every row of
    ``weights`` ((B, n)): arrays of shape (B,) or (B, ...)."""
    out = {}
    for name, col in columns.items():
        col = np.asarray(col, dtype=np.float64)
        flat = col.reshape(col.shape[0], -1)
        out[name] = (weights @ flat).reshape((weights.shape[0], *col.shape[1:]))
    return out


def point_sums(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The plain sums (every item once), shaped like one replicate of :func:`weighted_sums`."""
    n = len(next(iter(columns.values())))
    return weighted_sums(columns, np.ones((1, n)))


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> list[float] | None:
    """The percentile interval of bootstrap replicates (replicates where the figure is undefined,
    NaN, are left out; None when more than half are)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0 or finite.size < values.size / 2:
        return None
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return [float(lo), float(hi)]


def f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """F1 per class, 2 TP / (2 TP + FP + FN), from (..., K) counts; 1 for a class with neither true
    items nor predictions (nothing to get wrong), as scikit-learn's ``zero_division=1``."""
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 1.0)


def kappa(confusion: np.ndarray, weighting: str = "none") -> np.ndarray:
    """Cohen's kappa of (..., K, K) confusion counts (rows: truth, columns: prediction), unweighted
    or ``quadratic`` (disagreement weighted by the squared distance between class positions, for
    ordered classes). NaN where it is undefined (both raters used one and the same class only)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    k = confusion.shape[-1]
    total = confusion.sum(axis=(-2, -1), keepdims=True)
    observed = confusion / np.where(total > 0, total, 1)
    expected = observed.sum(axis=-1)[..., :, None] * observed.sum(axis=-2)[..., None, :]
    i, j = np.indices((k, k))
    if weighting == "quadratic":
        w = (i - j) ** 2 / max(1, (k - 1) ** 2)
    else:
        w = (i != j).astype(np.float64)
    num = (w * observed).sum(axis=(-2, -1))
    den = (w * expected).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 1 - num / np.where(den > 0, den, 1), np.nan)


def one_hot_pairs(actual: np.ndarray, predicted: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(n, rows * cols) one-hot of each item's (actual, predicted) cell: summed, a confusion matrix."""
    out = np.zeros((len(actual), rows * cols))
    out[np.arange(len(actual)), np.asarray(actual) * cols + np.asarray(predicted)] = 1.0
    return out


def spearman(x: list[float] | np.ndarray, y: list[float] | np.ndarray) -> float | None:
    """Spearman's rank correlation (ties get their mean rank); None when either side is constant
    or there are fewer than 3 items."""
    from scipy.stats import rankdata

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(rankdata(x), rankdata(y))[0, 1])


def rounded(value: Any, digits: int = 4) -> Any:
    """A figure as it goes into a metrics file: a float rounded, None for NaN or missing; lists and
    dicts element-wise."""
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    if value is None:
        return None
    value = float(value)
    return None if not np.isfinite(value) else round(value, digits) + 0.0  # + 0.0: never -0.0
