"""Classification: the oracle picks one label (or several, ``multi_label: true``) from the task's set,
optionally with a short rationale. The evaluation is accuracy (exact set match when multi-label),
macro-F1 over the task's labels (an invalid answer is a miss for every true label), Cohen's kappa, a
confusion matrix and a per-label report; against gold too, when records carry it.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from distill.tasks.base import Strict, Task, mean

#: the predicted class of a student's answer that did not validate (always wrong)
INVALID = "invalid"


class Label(Strict):
    name: str = Field(min_length=1)
    description: str = ""


class ClassifyTask(Task):
    KIND: ClassVar[str] = "classify"
    TEMPLATE_FIELDS: ClassVar[frozenset[str]] = frozenset({"labels", "label_names"})
    HEADLINE: ClassVar[tuple[str, ...]] = ("n_test", "valid_json_share", "accuracy", "macro_f1", "cohen_kappa")
    INTERVALS: ClassVar[dict[str, str]] = {"accuracy": "higher", "macro_f1": "higher", "cohen_kappa": "higher"}
    CONSTANT: ClassVar[str] = "majority"

    FLOOR: ClassVar[tuple[str, ...]] = ("label_agreement", "cohen_kappa")
    STRATUM: ClassVar[str] = "label"
    STRATA: ClassVar[str] = "labels"

    kind: Literal["classify"]
    labels: list[Label] = Field(min_length=2)
    multi_label: bool = False
    #: ask for a short reason with the label (kept in the answer, not scored)
    rationale: bool = True
    rationale_max_chars: int = Field(default=300, ge=20)

    @model_validator(mode="after")
    def _distinct(self) -> ClassifyTask:
        names = [label.name for label in self.labels]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate label(s): {', '.join(dupes)}")
        return self

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]

    def template_values(self, record: dict[str, Any]) -> dict[str, Any]:
        listing = "\n".join(f"- {label.name}: {label.description}" if label.description else f"- {label.name}"
                            for label in self.labels)
        return {"labels": listing, "label_names": ", ".join(self.label_names)}

    @cached_property
    def json_schema(self) -> dict[str, Any]:
        if self.multi_label:
            props: dict[str, Any] = {"labels": {"type": "array", "items": {"enum": self.label_names},
                                                "minItems": 1, "uniqueItems": True}}
        else:
            props = {"label": {"enum": self.label_names}}
        required = list(props)
        if self.rationale:
            props["rationale"] = {"type": "string", "minLength": 1, "maxLength": self.rationale_max_chars}
            required.append("rationale")
        return {"type": "object", "properties": props, "required": required, "additionalProperties": False}

    def chosen(self, answer: dict[str, Any]) -> list[str]:
        """The labels an answer picks, in the task's order."""
        picked = set(answer["labels"]) if self.multi_label else {answer["label"]}
        return [name for name in self.label_names if name in picked]

    def labelled(self, answer: dict[str, Any], record: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"label": answer, "labels": self.chosen(answer)}

    def same(self, a: dict[str, Any], b: dict[str, Any]) -> bool:
        return set(a["labels"]) == set(b["labels"])

    def strata(self) -> list[str]:
        return self.label_names

    def stratum(self, row: dict[str, Any]) -> str | None:
        return row["labels"][0] if row["labels"] else None

    def summary(self) -> str:
        kind = "multi-label" if self.multi_label else "one label"
        return f"classify ({kind}): {', '.join(self.label_names)}"

    # ----------------------------------------------------------------- gold
    def gold_labels(self, gold: Any) -> list[str] | None:
        """A golden answer as the task's label names (case-insensitive; a list, or one string that
        may list several separated by commas when multi-label); None when it names no known label."""
        values = gold if isinstance(gold, list) else (str(gold).split(",") if self.multi_label else [str(gold)])
        by_folded = {name.casefold(): name for name in self.label_names}
        names = [by_folded.get(str(v).strip().casefold()) for v in values if str(v).strip()]
        if not names or any(n is None for n in names):
            return None
        return [n for n in self.label_names if n in set(names)]

    def gold_agrees(self, row: dict[str, Any], gold: Any) -> bool | None:
        labels = self.gold_labels(gold)
        return None if labels is None else set(labels) == set(row["labels"])

    def with_gold(self, row: dict[str, Any], gold: Any) -> dict[str, Any]:
        labels = self.gold_labels(gold)
        if labels is None:
            return row
        answer = dict(row["label"])
        if self.multi_label:
            answer["labels"] = labels
        else:
            answer["label"] = labels[0]
        return {**row, **self.labelled(answer)}

    # ----------------------------------------------------------------- evaluation
    def evaluate(self, truth: list[dict[str, Any]], predictions: list[dict[str, Any]]
                 ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        """Accuracy (exact set match), per-label precision / recall / F1 / support, their macro mean,
        the micro F1 and, for one label per item, Cohen's kappa. An answer that did not validate predicts
        nothing: a miss for every true label (and, for the kappa, a class of its own that is never true).
        A label with neither true items nor predictions has F1 1 (nothing to get wrong)."""
        from distill.stats import f1_from_counts, point_sums, rounded

        columns, rows = self._items(truth, predictions)
        n = len(truth)
        sums = {k: v[0] for k, v in point_sums(columns).items()} if n else {}
        report: dict[str, dict[str, Any]] = {}
        for j, label in enumerate(self.label_names):
            tp, fp, fn = (float(sums[k][j]) if n else 0.0 for k in ("tp", "fp", "fn"))
            report[label] = {"precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
                             "recall": round(tp / (tp + fn), 4) if tp + fn else 1.0,
                             "f1": round(float(f1_from_counts(tp, fp, fn)), 4), "support": int(tp + fn)}
        headline = {k: v[0] for k, v in self.from_sums({k: v[None] for k, v in sums.items()}, n).items()} if n else {}
        totals = [float(sums[k].sum()) if n else 0.0 for k in ("tp", "fp", "fn")]
        metrics = {
            "n_test": n,
            "valid_json_share": round(float(columns["valid"].mean()), 4) if n else None,
            "accuracy": rounded(headline.get("accuracy")),
            "macro_f1": rounded(headline.get("macro_f1")),
            "micro_f1": round(float(f1_from_counts(*totals)), 4),
            "per_label": report,
        }
        if not self.multi_label:
            metrics["cohen_kappa"] = rounded(headline.get("cohen_kappa"))
        return metrics, rows, [{"name": label, "value": report[label]["f1"], "metric": "f1"}
                               for label in self.label_names]

    def _items(self, truth: list[dict[str, Any]], predictions: list[dict[str, Any]]
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Per item: valid, exact match, true / false positives and false negatives per label, and (one
        label per item) the one-hot (true label, predicted label or invalid) pair; and the rows of the
        confusion plot."""
        import numpy as np

        from distill.stats import one_hot_pairs

        by_id = {p["id"]: p for p in predictions}
        labels = self.label_names
        n, k = len(truth), len(labels)
        valid, correct = np.zeros(n), np.zeros(n)
        tp, fp, fn = np.zeros((n, k)), np.zeros((n, k)), np.zeros((n, k))
        first_true, first_pred = np.zeros(n, dtype=int), np.full(n, k)
        rows = []
        for i, ex in enumerate(truth):
            answer = by_id.get(ex["id"], {}).get("answer")
            got = self.chosen(answer) if answer is not None else None
            actual, predicted = set(ex["labels"]), set(got or ())
            valid[i], correct[i] = got is not None, got is not None and actual == predicted
            for j, label in enumerate(labels):
                tp[i, j] = label in actual and label in predicted
                fp[i, j] = label not in actual and label in predicted
                fn[i, j] = label in actual and label not in predicted
            first_true[i] = labels.index(ex["labels"][0]) if ex["labels"] else 0
            if got:
                first_pred[i] = labels.index(got[0])
            rows.append({"id": ex["id"], "actual": "+".join(ex["labels"]) or "-",
                         "predicted": "+".join(got) if got is not None else INVALID})
        columns = {"valid": valid, "correct": correct, "tp": tp, "fp": fp, "fn": fn}
        if not self.multi_label:
            columns["pairs"] = one_hot_pairs(first_true, first_pred, k + 1, k + 1)
        return columns, rows

    def item_columns(self, truth: list[dict[str, Any]], predictions: list[dict[str, Any]]) -> dict[str, Any]:
        return self._items(truth, predictions)[0]

    def from_sums(self, sums: dict[str, Any], n: int) -> dict[str, Any]:
        from distill.stats import f1_from_counts, kappa

        out = {"accuracy": sums["correct"] / n,
               "macro_f1": f1_from_counts(sums["tp"], sums["fp"], sums["fn"]).mean(axis=1)}
        if "pairs" in sums:
            k = len(self.labels) + 1
            out["cohen_kappa"] = kappa(sums["pairs"].reshape(-1, k, k))
        return out

    def constant_prediction(self, train: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The most frequent label (set) of the training rows; ties go to the label listed first."""
        from collections import Counter

        if not train:
            return None
        order = {name: i for i, name in enumerate(self.label_names)}
        counts = Counter(tuple(r["labels"]) for r in train)
        top = min(counts, key=lambda labels: (-counts[labels], [order.get(x, len(order)) for x in labels]))
        answer = {"labels": list(top)} if self.multi_label else {"label": top[0]}
        return {"answer": answer, "raw": None, "invalid_reason": None}

    def agreement(self, first: dict[str, dict[str, Any]], second: dict[str, dict[str, Any]],
                  order: list[str]) -> dict[str, Any]:
        ids = [i for i in order if i in first and i in second]
        a = [set(first[i]["labels"]) for i in ids]
        b = [set(second[i]["labels"]) for i in ids]
        n = len(ids)
        out: dict[str, Any] = {
            "n": n,
            "label_agreement": round(sum(x == y for x, y in zip(a, b)) / n, 4) if n else None,
            "mean_jaccard": mean([len(x & y) / len(x | y) if x | y else 1.0 for x, y in zip(a, b)]),
            "cohen_kappa": None,
        }
        if n and not self.multi_label:
            import warnings

            from sklearn.metrics import cohen_kappa_score

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                value = float(cohen_kappa_score([min(x) for x in a], [min(y) for y in b], labels=self.label_names))
            out["cohen_kappa"] = None if math.isnan(value) else round(value, 4)
        return out
