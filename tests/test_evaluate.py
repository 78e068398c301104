"""Evaluate's metrics on fixtures small enough to compute by hand; the intervals' coverage on simulated data."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from distill.evaluate import calibrate, compare, cost_table, ids_digest
from distill.evaluation import floor_for
from distill.filterspec import load_filter
from distill.stats import percentile_interval, resample_counts, weighted_sums

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


def test_rmse_spearman_and_quadratic_kappa_equal_the_hand_computed_values():
    truth = [item(0, 8), item(1, 9), item(2, 5), item(3, 1)]
    predictions = [
        {"id": "t0", "scores": dict.fromkeys(DIMS, 7)},
        {"id": "t1", "scores": None},  # invalid: scored as the scale's far end from 9, i.e. 0
        {"id": "t2", "scores": dict.fromkeys(DIMS, 3)},
        {"id": "t3", "scores": dict.fromkeys(DIMS, 1)},
    ]
    metrics, _, _ = SPEC.evaluate(truth, predictions)
    # errors 1, 9, 2, 0 per dimension
    assert metrics["rmse"] == dict.fromkeys(DIMS, round(math.sqrt((1 + 81 + 4 + 0) / 4), 4))
    # truth 8, 9, 5, 1 ranks 3, 4, 2, 1; predictions 7, 0, 3, 1 rank 4, 1, 3, 2: deviations from 2.5 multiply
    # to 0.75 - 2.25 - 0.25 + 0.75 = -1 over a variance sum of 5 each
    assert metrics["spearman"] == dict.fromkeys(DIMS, -0.2)
    # tiers (0 deployed .. 3 vaporware): true 0, 0, 1, 3; predicted 0, (invalid: the farthest tier from 0) 3,
    # 2, 3. Quadratic weights (i-j)^2/9: observed disagreement (0 + 1 + 1/9 + 0) / 4 = 10/36; expected from the
    # marginals (rows .5 .25 0 .25, columns .25 0 .25 .5) = 4/9; kappa = 1 - (10/36) / (4/9) = 0.375
    assert metrics["tier_qwk"] == 0.375


BBC = load_filter(ROOT / "filters" / "bbc_topic" / "v1")


def label_row(i: int, label: str) -> dict:
    return {"id": f"c{i}", "labels": [label]}


def test_classification_metrics_equal_the_hand_computed_values():
    truth = [label_row(i, x) for i, x in enumerate(["sport", "sport", "tech", "business", "politics", "tech"])]
    answers = ["sport", "tech", "tech", None, "politics", "business"]
    predictions = [{"id": f"c{i}", "answer": None if a is None else {"label": a}} for i, a in enumerate(answers)]
    metrics, rows, per_label = BBC.evaluate(truth, predictions)
    assert metrics["accuracy"] == 0.5 and metrics["valid_json_share"] == round(5 / 6, 4)
    # F1: business 0 (missed, and predicted once wrongly), entertainment 1 (absent from both), politics 1,
    # sport 2/(2+1), tech 2/(2+1+1)
    assert {k: v["f1"] for k, v in metrics["per_label"].items()} == {
        "business": 0.0, "entertainment": 1.0, "politics": 1.0, "sport": 0.6667, "tech": 0.5}
    assert metrics["macro_f1"] == round((0 + 1 + 1 + 2 / 3 + 0.5) / 5, 4)
    # kappa: p_o = 1/2; p_e from truth (2 sport, 2 tech, 1 business, 1 politics of 6) and predictions (1, 2, 1, 1,
    # and one invalid) = (2 + 4 + 1 + 1) / 36; (1/2 - 8/36) / (1 - 8/36) = 10/28
    assert metrics["cohen_kappa"] == round(10 / 28, 4)
    assert rows[3]["predicted"] == "invalid" and per_label[0] == {"name": "business", "value": 0.0, "metric": "f1"}


def test_constant_predictors_are_the_training_mean_and_majority():
    train = [item(0, 8), item(1, 9), item(2, 5), item(3, 1)]
    assert SPEC.constant_prediction(train)["scores"] == dict.fromkeys(DIMS, 5.75)
    rows = [label_row(i, x) for i, x in enumerate(["tech", "sport", "tech", "sport", "politics"])]
    # tech and sport tie at 2: the label listed first in the filter (sport) wins
    assert BBC.constant_prediction(rows)["answer"] == {"label": "sport"}
    assert BBC.constant_prediction(rows[:3])["answer"] == {"label": "tech"}


def test_compare_adds_paired_intervals_and_differences():
    rng = random.Random(3)
    labels = BBC.label_names
    truth = [label_row(i, rng.choice(labels)) for i in range(80)]
    good = [{"id": t["id"], "answer": {"label": t["labels"][0] if rng.random() < 0.9 else "tech"}} for t in truth]
    majority = [{"id": t["id"], "answer": {"label": "sport"}} for t in truth]
    result = compare(BBC, truth, {"student": good, "majority": majority, "same": good}, replicates=500, seed=1)
    student, base = result.metrics("student"), result.metrics("majority")
    lo, hi = student["accuracy_ci"]["lo"], student["accuracy_ci"]["hi"]
    assert lo < student["accuracy"] < hi and hi - lo < 0.2
    diff = result.diff("student", "majority")["accuracy"]
    assert diff["diff"] == round(student["accuracy"] - base["accuracy"], 4) and diff["ci"]["lo"] > 0
    # the same predictions on the same resamples differ by exactly 0 in every replicate
    assert result.diff("student", "same")["macro_f1"] == {"diff": 0.0, "ci": {"lo": 0.0, "hi": 0.0}}
    # seeded: the same intervals again
    again = compare(BBC, truth, {"student": good, "majority": majority}, replicates=500, seed=1)
    assert again.metrics("student")["accuracy_ci"] == student["accuracy_ci"]


def test_intervals_cover_the_true_value_about_95_percent_of_the_time():
    """Simulated test sets from a known population: a student right with probability 0.8, a baseline right
    with probability 0.6 (independently), on 80 items. The 95% intervals of the student's accuracy and of the
    paired difference must cover 0.8 and 0.2 in roughly 95% of 200 simulated test sets (binomial SD 1.5%)."""
    rng = np.random.default_rng(7)
    labels = BBC.label_names
    covered = {"accuracy": 0, "difference": 0}
    sims, n = 200, 80
    for s in range(sims):
        true = rng.integers(0, len(labels), n)
        truth = [label_row(i, labels[t]) for i, t in enumerate(true)]

        def guess(p: float, true: np.ndarray = true) -> list[dict]:
            hit = rng.random(n) < p
            wrong = (true + rng.integers(1, len(labels), n)) % len(labels)
            return [{"id": f"c{i}", "answer": {"label": labels[true[i] if hit[i] else wrong[i]]}} for i in range(n)]

        result = compare(BBC, truth, {"student": guess(0.8), "baseline": guess(0.6)}, replicates=500, seed=s)
        ci = result.metrics("student")["accuracy_ci"]
        covered["accuracy"] += ci["lo"] <= 0.8 <= ci["hi"]
        ci = result.diff("student", "baseline")["accuracy"]["ci"]
        covered["difference"] += ci["lo"] <= 0.2 <= ci["hi"]
    for what, k in covered.items():
        assert 0.90 <= k / sims <= 0.985, (what, k / sims)


def test_mae_intervals_cover_the_population_mean_error():
    """The bootstrap machinery on a skewed error: absolute errors ~ Exponential(1) (mean 1) on 60 items."""
    rng = np.random.default_rng(11)
    sims, n, hits = 400, 60, 0
    for s in range(sims):
        errors = rng.exponential(1.0, n)
        weights = resample_counts(n, 1000, seed=s)
        ci = percentile_interval(weighted_sums({"e": errors}, weights)["e"] / n)
        hits += ci[0] <= 1.0 <= ci[1]
    assert 0.90 <= hits / sims <= 0.985, hits / sims


def test_isotonic_calibration_removes_a_bias_learned_on_val():
    def shifted(rows: list[dict], by: int) -> list[dict]:
        return [{"id": r["id"], "scores": {d: min(10, r["scores"][d] + by) for d in DIMS}} for r in rows]

    val = [item(i, s) for i, s in enumerate([0, 2, 4, 6, 8])]
    test = [item(10 + i, s) for i, s in enumerate([2, 6, 4])]
    calibrated, note = calibrate(SPEC, val, shifted(val, 2), shifted(test, 2))
    assert note == {"fitted_on_val_items": 5}
    # the student says truth + 2 on val; the isotonic map sends 4 -> 2, 8 -> 6, 6 -> 4 on test: exact
    assert [p["scores"][DIMS[0]] for p in calibrated] == [2.0, 6.0, 4.0]
    before, _, _ = SPEC.evaluate(test, shifted(test, 2))
    after, _, _ = SPEC.evaluate(test, calibrated)
    assert before["mean_dimension_mae"] == 2.0 and after["mean_dimension_mae"] == 0.0
    assert calibrate(BBC, [], [], [])[0] is None  # classification: nothing to calibrate


def test_cost_table_equals_the_hand_computed_dollars():
    label = {"valid": 9, "invalid": 1, "input_tokens": 6000, "cached_input_tokens": 4000, "output_tokens": 1000,
             "cached_output_tokens": 1000, "mode": "online"}
    price = {"input_per_mtok": 0.15, "output_per_mtok": 0.6, "batch_discount": 0.5}
    cost = cost_table(n_items=100, predict_seconds=4.0, train_seconds=360.0, cores=2, cpu_hour_usd=0.045,
                      label_metrics=label, price=price, price_from="test")
    # the oracle: 1,000 input and 200 output tokens per record: (1000 * 0.15 + 200 * 0.6) / 1e6 per item
    assert cost["oracle"]["usd_per_1k_items"] == 0.27
    # the student: 25 items/s on 2 cores at $0.045 each per hour: 40 s per 1,000 items = $0.001
    assert cost["student"]["items_per_s"] == 25.0 and cost["student"]["usd_per_1k_items"] == 0.001
    # training: 0.1 h x 2 cores x $0.045 = $0.009, paid back at $0.269 saved per 1,000 items after 34 items
    assert cost["student"]["train_usd"] == 0.009 and cost["break_even_items"] == 34
    batch = cost_table(n_items=100, predict_seconds=4.0, train_seconds=None, cores=2, cpu_hour_usd=0.045,
                       label_metrics={**label, "mode": "batch"}, price=price, price_from="test")
    assert batch["oracle"]["usd_per_1k_items"] == 0.135 and batch["break_even_items"] is None


def test_the_floor_is_used_only_when_measured_on_exactly_the_test_items():
    keys = SPEC.FLOOR
    agreement = {"measured": True, "sampled": 3, "ids_sha256": ids_digest(["b", "a", "c"]),
                 "mean_dimension_mae": 0.5, "overall_mae": 0.4, "tier_agreement": 0.9}
    assert floor_for(agreement, ["a", "b", "c"], keys) == (
        {"mean_dimension_mae": 0.5, "overall_mae": 0.4, "tier_agreement": 0.9}, None)
    floor, why = floor_for(agreement, ["a", "b", "d"], keys)
    assert floor is None and "not these 3 test items" in why
    floor, why = floor_for({k: v for k, v in agreement.items() if k != "ids_sha256"}, ["a", "b", "c"], keys)
    assert floor is None and "does not say which items" in why
    assert floor_for({"measured": False, "reason": "a file"}, ["a"], keys) == (None, "not measured: a file")
    assert floor_for(None, ["a"], keys) == (None, None)


def test_the_stage_judges_the_student_and_the_baselines_the_train_stage_fitted(tmp_path, monkeypatch):
    from distill import jsonl, pipeline
    from distill.config import EvaluateConfig, SklearnStudent, TrainConfig
    from distill.split import to_chat

    monkeypatch.chdir(tmp_path)
    rows = []
    for i in range(30):  # the words say the score: a learnable split
        score = [1, 5, 9][i % 3]
        record = {"id": f"r{i}", "title": f"Story {i}", "text": f"{['idea', 'pilot', 'plant'][i % 3]} news " * 20}
        scores = dict.fromkeys(DIMS, score)
        overall, tier = SPEC.score(scores)
        rows.append(to_chat({"id": record["id"], "messages": SPEC.render(record), "label": {**scores, "reasoning": "x"},
                             "scores": scores, "overall": overall, "tier": tier}))
    train, val, test = rows[:18], rows[18:24], rows[24:]
    for name, part in (("train", train), ("val", val), ("test", test)):
        jsonl.write_jsonl(f"split/{name}.jsonl", part)
    trained = pipeline.train(TrainConfig(output_dir="model"), SklearnStudent(kind="sklearn"), SPEC, "split",
                             metrics_dir=Path("metrics"))
    assert trained["baseline"]["constant"] == "mean" and "val_mae" in trained["baseline"]["sklearn"]
    assert sorted(p.name for p in Path("model/baseline").iterdir()) == [
        "constant.json", "ridge.npz", "student.json", "vectorizer.json"]

    metrics = pipeline.evaluate(EvaluateConfig(output_dir="eval", calibrate=True, bootstrap_replicates=200),
                                SPEC, "split", "model", metrics_dir=Path("metrics"))
    # the mean predictor says (1 + 5 + 9) / 3 = 5 on every dimension (6 training rows of each score); the test
    # items are 1, 5, 9, 1, 5, 9: errors 4, 0, 4 on every dimension and the overall score
    mean = metrics["baselines"]["mean"]
    assert mean["mean_dimension_mae"] == round(8 / 3, 4) and mean["overall_mae"] == round(8 / 3, 4)
    diff = metrics["student_minus_mean"]["overall_mae"]
    assert diff["diff"] == pytest.approx(metrics["overall_mae"] - 8 / 3, abs=1e-4)
    assert diff["ci"]["hi"] < 0  # the student is better, and the interval shows it
    # the baseline sklearn has the student's settings here: the same predictions, a difference of exactly 0
    assert metrics["student_minus_sklearn"]["overall_mae"] == {"diff": 0.0, "ci": {"lo": 0.0, "hi": 0.0}}
    assert metrics["calibration"]["fitted_on_val_items"] == 6 and "overall_mae" in metrics["calibration"]["after"]
    assert metrics["bootstrap"] == {"replicates": 200, "seed": 0, "level": 0.95, "paired": True}
    assert metrics["cost"]["student"]["train_seconds"] == trained["student_seconds"]
    scatter = json.loads(Path("eval/scatter.json").read_text())
    assert len(scatter) == len(test) * len(DIMS) and scatter[0].keys() == {"id", "dimension", "oracle", "student"}
    assert json.loads(Path("metrics/eval.json").read_text())["baselines"] == metrics["baselines"]
