"""Evaluate's metrics on a fixture small enough to compute by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.filterspec import load_filter

ROOT = Path(__file__).resolve().parents[1]
SPEC = load_filter(ROOT / "filters" / "sustainability_tech_deployment" / "v1")
DIMS = SPEC.dimension_names


def item(i: int, score: int) -> dict:
    scores = dict.fromkeys(DIMS, score)
    overall, tier = SPEC.score(scores)
    return {"id": f"t{i}", "scores": scores, "overall": overall, "tier": tier}


def test_metrics_equal_the_hand_computed_values():
    # truth: deployed (8), deployed (9), piloting (5), vaporware (1); tiers from the filter's thresholds
    truth = [item(0, 8), item(1, 9), item(2, 5), item(3, 1)]
    assert [t["tier"] for t in truth] == ["deployed", "deployed", "piloting", "vaporware"]
    predictions = [
        {"id": "t0", "scores": dict.fromkeys(DIMS, 7)},  # deployed: right tier, off by 1 everywhere
        {"id": "t1", "scores": None},  # invalid answer: worst case, max(9, 10 - 9) = 9 per dimension
        {"id": "t2", "scores": dict.fromkeys(DIMS, 3)},  # announced: wrong tier, off by 2
        {"id": "t3", "scores": dict.fromkeys(DIMS, 1)},  # vaporware: exact
    ]
    metrics, rows, per_dim = SPEC.evaluate(truth, predictions)

    assert metrics["n_test"] == 4 and metrics["valid_json_share"] == 0.75
    assert metrics["mae"] == dict.fromkeys(DIMS, (1 + 9 + 2 + 0) / 4)
    assert metrics["mean_dimension_mae"] == 3.0
    assert metrics["overall_mae"] == pytest.approx((1 + 9 + 2 + 0) / 4)
    assert metrics["mae_valid_only"] == pytest.approx((1 + 2 + 0) / 3, abs=1e-4)
    assert metrics["tier_accuracy"] == 0.5
    # F1 per filter tier: deployed P=1 R=1/2 -> 2/3; piloting (its one item missed, never predicted) 0;
    # announced (predicted once, never true) 0; vaporware 1. The invalid answer is a miss for deployed,
    # not a fifth class. Mean over the 4 tiers: (2/3 + 0 + 0 + 1) / 4
    assert metrics["macro_f1"] == round((2 / 3 + 1) / 4, 4)
    assert [r["predicted"] for r in rows] == ["deployed", "invalid", "announced", "vaporware"]
    assert per_dim == [{"name": d, "value": 3.0, "metric": "mae"} for d in DIMS]


def test_a_tier_absent_from_both_truth_and_predictions_counts_as_no_error():
    truth = [item(0, 8), item(1, 1)]  # deployed, vaporware; no piloting or announced item
    predictions = [{"id": "t0", "scores": dict.fromkeys(DIMS, 8)}, {"id": "t1", "scores": dict.fromkeys(DIMS, 1)}]
    metrics, _, _ = SPEC.evaluate(truth, predictions)
    assert metrics["tier_accuracy"] == 1.0 and metrics["macro_f1"] == 1.0
