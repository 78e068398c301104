"""Classification: the oracle picks one label (or several, ``multi_label: true``) from the task's set,
optionally with a short rationale. The evaluation is accuracy (exact set match when multi-label),
macro-F1 over the task's labels (an invalid answer is a miss for every true label), a confusion matrix
and a per-label report; against gold too, when records carry it.
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
    HEADLINE: ClassVar[tuple[str, ...]] = ("n_test", "valid_json_share", "accuracy", "macro_f1")

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
        by_id = {p["id"]: p for p in predictions}
        actual, predicted, rows = [], [], []
        for ex in truth:
            answer = by_id.get(ex["id"], {}).get("answer")
            got = self.chosen(answer) if answer is not None else None
            actual.append(set(ex["labels"]))
            predicted.append(set(got) if got is not None else None)
            rows.append({"id": ex["id"], "actual": "+".join(ex["labels"]) or "-",
                         "predicted": "+".join(got) if got is not None else INVALID})
        metrics, per_label = _set_metrics(actual, predicted, self.label_names)
        return metrics, rows, per_label

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


def _set_metrics(actual: list[set[str]], predicted: list[set[str] | None], labels: list[str]
                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Accuracy (exact set match), per-label precision / recall / F1 / support, their macro mean and
    the micro F1. ``None`` in ``predicted`` is an answer that did not validate: it predicts nothing,
    so it is a miss for every true label. A label with neither true items nor predictions has F1 1."""
    n = len(actual)
    report: dict[str, dict[str, Any]] = {}
    total_tp = total_fp = total_fn = 0
    for label in labels:
        tp = sum(1 for a, p in zip(actual, predicted) if p is not None and label in a and label in p)
        fp = sum(1 for a, p in zip(actual, predicted) if p is not None and label not in a and label in p)
        fn = sum(1 for a, p in zip(actual, predicted) if label in a and (p is None or label not in p))
        total_tp, total_fp, total_fn = total_tp + tp, total_fp + fp, total_fn + fn
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if tp + fp + fn == 0:
            f1 = 1.0
        report[label] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                         "support": tp + fn}
    micro_p = total_tp / (total_tp + total_fp) if total_tp + total_fp else 1.0
    micro_r = total_tp / (total_tp + total_fn) if total_tp + total_fn else 1.0
    micro = 2 * micro_p * micro_r / (micro_p + micro_r) if micro_p + micro_r else 0.0
    valid = sum(p is not None for p in predicted)
    metrics = {
        "n_test": n,
        "valid_json_share": round(valid / n, 4) if n else None,
        "accuracy": round(sum(p is not None and a == p for a, p in zip(actual, predicted)) / n, 4) if n else None,
        "macro_f1": round(sum(r["f1"] for r in report.values()) / len(report), 4) if report else None,
        "micro_f1": round(micro, 4),
        "per_label": report,
    }
    return metrics, [{"name": label, "value": report[label]["f1"], "metric": "f1"} for label in labels]
