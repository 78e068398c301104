"""Translation: the oracle writes the record's text in the task's ``target_language``
(``{"translation": "..."}``); an empty translation, or one identical to the source when the languages
differ, is fed back and asked again. The evaluation is corpus-level chrF and BLEU (sacrebleu, as
published MT results compute them) of the student against the oracle and, for records that carry a
reference translation (``gold``), against the reference; an answer that did not validate is an empty
translation (it scores nothing, so a student cannot look better by answering less). Two oracles
agree by the chrF (and BLEU) of the second against the first.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar, Literal

from pydantic import Field

from distill.tasks.base import Task

#: a source with fewer words than this may read the same in both languages (a name, a figure)
MIN_WORDS_SAME = 3
#: sentence chrF buckets of the per-item plot
_BUCKETS = ((75, "chrF 75-100"), (50, "chrF 50-75"), (25, "chrF 25-50"), (0, "chrF 0-25"))


def corpus_chrf(hypotheses: list[str], references: list[str]) -> float | None:
    """Corpus chrF (character 6-grams, beta 2, sacrebleu's defaults) on the 0-100 scale; None when empty."""
    if not hypotheses:
        return None
    from sacrebleu.metrics import CHRF

    return round(CHRF().corpus_score(hypotheses, [references]).score, 4)


def corpus_bleu(hypotheses: list[str], references: list[str], tokenize: str = "13a") -> float | None:
    """Corpus BLEU (4-grams, brevity penalty, sacrebleu's ``tokenize``) on the 0-100 scale; None when empty."""
    if not hypotheses:
        return None
    from sacrebleu.metrics import BLEU

    return round(BLEU(tokenize=tokenize).corpus_score(hypotheses, [references]).score, 4)


def sentence_chrf(hypothesis: str, reference: str) -> float:
    from sacrebleu.metrics import CHRF

    return round(CHRF().sentence_score(hypothesis, [reference]).score, 4)


class TranslateTask(Task):
    KIND: ClassVar[str] = "translate"
    TEMPLATE_FIELDS: ClassVar[frozenset[str]] = frozenset({"target_language", "source_language"})
    HEADLINE: ClassVar[tuple[str, ...]] = ("n_test", "valid_json_share", "chrf", "bleu", "chrf_gold", "bleu_gold")
    FLOOR: ClassVar[tuple[str, ...]] = ("chrf", "bleu")

    kind: Literal["translate"]
    target_language: str = Field(min_length=1)
    #: the records' language, when known (else the prompt says "its original language")
    source_language: str | None = None
    #: sacrebleu's BLEU tokenizer: 13a (Latin scripts), intl, char, zh (Chinese), none
    bleu_tokenize: Literal["13a", "intl", "char", "zh", "none"] = "13a"
    #: the oracle agrees with a record's reference translation when its sentence chrF reaches this
    gold_min_chrf: float = Field(default=60.0, ge=0, le=100)

    @property
    def same_language(self) -> bool:
        return (self.source_language or "").strip().casefold() == self.target_language.strip().casefold()

    def template_values(self, record: dict[str, Any]) -> dict[str, Any]:
        return {"target_language": self.target_language,
                "source_language": self.source_language or "its original language"}

    @cached_property
    def json_schema(self) -> dict[str, Any]:
        return {"type": "object", "properties": {"translation": {"type": "string"}},
                "required": ["translation"], "additionalProperties": False}

    def check(self, answer: dict[str, Any], record: dict[str, Any]) -> str | None:
        from distill.merge import normalise

        translation = answer["translation"]
        if not translation.strip():
            return f"the translation is empty: write the whole text in {self.target_language}"
        if self.same_language:
            return None
        title, text = (record.get("title") or "").strip(), (record.get("text") or "").strip()
        sources = {normalise(s) for s in (text, title, f"{title} {text}") if s}
        said = normalise(translation)
        if said in sources and len(said.split()) >= MIN_WORDS_SAME:
            return (f"the translation is the source text unchanged: translate it into {self.target_language} "
                    "(keep only names, numbers and units as they are)")
        return None

    def labelled(self, answer: dict[str, Any], record: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"label": {"translation": answer["translation"]}, "translation": answer["translation"]}

    def summary(self) -> str:
        return f"translate into {self.target_language} (from {self.source_language or 'any language'})"

    # ----------------------------------------------------------------- gold
    def gold_agrees(self, row: dict[str, Any], gold: Any) -> bool | None:
        if not isinstance(gold, str) or not gold.strip():
            return None
        return sentence_chrf(row["translation"], gold) >= self.gold_min_chrf

    def with_gold(self, row: dict[str, Any], gold: Any) -> dict[str, Any]:
        if not isinstance(gold, str) or not gold.strip():
            return row
        return {**row, **self.labelled({"translation": gold})}

    # ----------------------------------------------------------------- evaluation
    def evaluate(self, truth: list[dict[str, Any]], predictions: list[dict[str, Any]]
                 ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        """chrF and BLEU against the oracle (invalid answers as empty translations; ``chrf_valid_only``
        leaves them out) and, over the test rows with a reference, against the reference, with the
        oracle's own chrF and BLEU against those references beside them."""
        by_id = {p["id"]: p for p in predictions}
        hyps, oracle, rows = [], [], []
        valid: list[int] = []
        for i, ex in enumerate(truth):
            answer = by_id.get(ex["id"], {}).get("answer")
            hyps.append(answer["translation"] if answer is not None else "")
            oracle.append(ex["translation"])
            if answer is not None:
                valid.append(i)
            rows.append({"id": ex["id"], "actual": "oracle",
                         "predicted": _bucket(sentence_chrf(hyps[-1], oracle[-1])) if answer is not None
                         else "invalid"})
        gold = [i for i, ex in enumerate(truth) if isinstance(ex.get("gold"), str) and ex["gold"].strip()]
        refs = [truth[i]["gold"] for i in gold]
        n = len(truth)
        tok = self.bleu_tokenize
        metrics = {
            "n_test": n,
            "valid_json_share": round(len(valid) / n, 4) if n else None,
            "chrf": corpus_chrf(hyps, oracle),
            "bleu": corpus_bleu(hyps, oracle, tok),
            "chrf_valid_only": corpus_chrf([hyps[i] for i in valid], [oracle[i] for i in valid]),
            "n_gold": len(gold),
            "chrf_gold": corpus_chrf([hyps[i] for i in gold], refs),
            "bleu_gold": corpus_bleu([hyps[i] for i in gold], refs, tok),
            "oracle_chrf_gold": corpus_chrf([oracle[i] for i in gold], refs),
            "oracle_bleu_gold": corpus_bleu([oracle[i] for i in gold], refs, tok),
        }
        parts = [("chrF vs oracle", "chrf", "chrf"), ("BLEU vs oracle", "bleu", "bleu"),
                 ("chrF vs reference", "chrf_gold", "chrf"), ("BLEU vs reference", "bleu_gold", "bleu")]
        per_part = [{"name": name, "value": metrics[key], "metric": metric} for name, key, metric in parts
                    if metrics[key] is not None]
        return metrics, rows, per_part

    def agreement(self, first: dict[str, dict[str, Any]], second: dict[str, dict[str, Any]],
                  order: list[str]) -> dict[str, Any]:
        """chrF and BLEU of the second oracle's translations against the first's, over the ids both have."""
        ids = [i for i in order if i in first and i in second]
        hyps = [second[i]["translation"] for i in ids]
        refs = [first[i]["translation"] for i in ids]
        return {"n": len(ids), "chrf": corpus_chrf(hyps, refs), "bleu": corpus_bleu(hyps, refs, self.bleu_tokenize)}


def _bucket(score: float) -> str:
    return next(name for low, name in _BUCKETS if score >= low)
