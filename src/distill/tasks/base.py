"""What every task kind shares, and the interface the pipeline uses.

A task (a "filter" on disk: ``filters/<name>/<version>/filter.yaml``) decides how a record is put to
the oracle and what comes back: :meth:`Task.render` (the one prompt the oracle and the student both
read), :meth:`Task.schema_for` (the JSON schema the answer must satisfy), :meth:`Task.check` (what the
schema cannot say, fed back to the oracle on a re-ask), :meth:`Task.labelled` (the row's label
fields, computed by the project from the validated answer), :meth:`Task.stratum` (what the split
stratifies on), :meth:`Task.gold_agrees` (the oracle against a record's golden answer),
:meth:`Task.evaluate` (the student against the oracle and gold) and :meth:`Task.agreement` (one
oracle against another). Each kind (``score``, ``classify``, ...) is a subclass in its own module,
registered in :mod:`distill.tasks`.
"""

from __future__ import annotations

import string
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

#: record fields every template may use (metadata columns are reachable as {metadata[column]})
BASE_TEMPLATE_FIELDS = frozenset({"id", "title", "text", "source", "published", "metadata"})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeywordRule(Strict):
    """Block a record unless title or text matches at least one keyword (case-insensitive, whole word)."""

    reason: str = "no_topic_keyword"
    keywords: list[str] = Field(min_length=1)


class RegexRule(Strict):
    """Block a record whose title or text matches ``pattern`` (Rust regex syntax, as polars uses)."""

    reason: str
    pattern: str
    case_sensitive: bool = False


class PrefilterRules(Strict):
    min_words: int = Field(default=0, ge=0)
    max_words: int | None = Field(default=None, ge=1)
    require_keywords: KeywordRule | None = None
    block_patterns: list[RegexRule] = []
    #: Minimum share of common English function words (the, and, of, ...) among the words of the first 1,500
    #: characters (0 disables); below it a record is blocked as ``few_function_words``. It keeps out other
    #: languages, and also English tables of figures and bare lists, which have few function words.
    min_english_share: float = Field(default=0.0, ge=0, le=1)


class Task(Strict):
    """A task package. Subclasses set :attr:`KIND` and implement the abstract methods."""

    KIND: ClassVar[str] = ""
    #: template fields this kind adds to :data:`BASE_TEMPLATE_FIELDS`
    TEMPLATE_FIELDS: ClassVar[frozenset[str]] = frozenset()
    #: metrics the report prints first, in this order (the rest follow)
    HEADLINE: ClassVar[tuple[str, ...]] = ("n_test", "valid_json_share")
    #: the oracle-vs-oracle figures evaluate shows beside the student's (the floor)
    FLOOR: ClassVar[tuple[str, ...]] = ()
    #: what one stratum is called in reports (a tier, a label) and the metrics key of their counts
    STRATUM: ClassVar[str] = "stratum"
    STRATA: ClassVar[str] = "strata"
    #: headline figures that get a paired bootstrap interval (:meth:`item_columns`), each with the
    #: direction that is better ("lower" for an error, "higher" for an accuracy)
    INTERVALS: ClassVar[dict[str, str]] = {}
    #: the name of the kind's constant predictor (:meth:`constant_prediction`): "mean", "majority"
    CONSTANT: ClassVar[str] = ""
    #: False for a kind that labels no corpus (generate: the label stage writes the data itself)
    READS_CORPUS: ClassVar[bool] = True

    kind: str
    name: str
    version: str
    description: str
    system_prompt: str
    template: str = Field(description="file name of the user prompt template, next to filter.yaml")
    prefilter: PrefilterRules = PrefilterRules()
    # set by the loader, not the YAML
    root: Path | None = Field(default=None, exclude=True)
    template_text: str = Field(default="", exclude=True)

    @classmethod
    def template_fields(cls) -> frozenset[str]:
        return BASE_TEMPLATE_FIELDS | cls.TEMPLATE_FIELDS

    def load_prompts(self, folder: Path) -> Task | None:
        """The task with its prompts loaded from ``folder`` (the filter's), for a kind whose prompts are
        not a template file next to ``filter.yaml``; None (the default): the loader reads ``template``."""
        return None

    # ----------------------------------------------------------------- the prompt
    def template_values(self, record: dict[str, Any]) -> dict[str, Any]:
        """The kind's own template fields for ``record`` (rubric, label list, target language...)."""
        return {}

    def render(self, record: dict[str, Any]) -> list[dict[str, str]]:
        """The chat messages for one record. Oracle and student both read exactly these."""
        meta = record.get("metadata") or {}
        fields = {
            "id": record.get("id", ""),
            "title": record.get("title") or "",
            "text": record["text"],
            "source": meta.get("source", ""),
            "published": meta.get("published", ""),
            "metadata": _Missing(meta),
            **self.template_values(record),
        }
        return [
            {"role": "system", "content": self.system_prompt.strip()},
            {"role": "user", "content": self.template_text.format_map(fields).strip()},
        ]

    # ----------------------------------------------------------------- the answer
    @cached_property
    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of an answer (the student learns to write it too)."""
        raise NotImplementedError

    def schema_for(self, record: dict[str, Any]) -> dict[str, Any]:
        """The schema this record's answer must satisfy (a kind may let a record bring its own)."""
        return self.json_schema

    def check(self, answer: Any, record: dict[str, Any]) -> str | None:
        """What is wrong with a schema-valid answer that the schema cannot express (None: nothing);
        the text is fed back to the oracle when it is asked again."""
        return None

    def labelled(self, answer: Any, record: dict[str, Any] | None = None) -> dict[str, Any]:
        """The label fields of a row from a validated answer: at least ``label``, the answer as kept
        (and as the student learns it), plus what the project computes from it."""
        raise NotImplementedError

    def same(self, a: dict[str, Any], b: dict[str, Any]) -> bool:
        """Whether two oracles' labelled rows for one record agree (a cascade's check compares the bulk
        oracle's row with the strong oracle's): the same answer, by default."""
        return a["label"] == b["label"]

    def strata(self) -> list[str]:
        """The values :meth:`stratum` can take, in report order ([] for a kind that is not stratified)."""
        return []

    def stratum(self, row: dict[str, Any]) -> str | None:
        """What the split stratifies ``row`` on (None: no strata)."""
        return None

    def group(self, row: dict[str, Any]) -> str | None:
        """Rows of one group go to the same split (generate: a topic, whose rows share one prompt);
        None: each row on its own."""
        return None

    # ----------------------------------------------------------------- gold and evaluation
    def gold_agrees(self, row: dict[str, Any], gold: Any) -> bool | None:
        """Whether the oracle's labelled row agrees with a record's golden answer (None: this kind
        does not compare with gold)."""
        return None

    def with_gold(self, row: dict[str, Any], gold: Any) -> dict[str, Any]:
        """``row`` with the golden answer in place of the oracle's (``label.on_gold_mismatch: keep_gold``)."""
        raise NotImplementedError(f"{self.KIND} tasks cannot put a golden answer in the oracle's place")

    def evaluate(self, truth: list[dict[str, Any]], predictions: list[dict[str, Any]]
                 ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        """(metrics, rows for the confusion plot (``id``, ``actual``, ``predicted``), rows for the
        per-part plot (``name``, ``value``, ``metric``: MAE per dimension, F1 per label...)) of a
        student's ``predictions`` (``{"id", "answer" or None, "raw", "invalid_reason"}``) on the test rows."""
        raise NotImplementedError

    def item_columns(self, truth: list[dict[str, Any]], predictions: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Per-item columns (numpy arrays, items first) whose sums over any resample of the test items
        give the :attr:`INTERVALS` figures through :meth:`from_sums`: the paired bootstrap's input
        (:mod:`distill.stats`). None: this kind reports no intervals."""
        return None

    def from_sums(self, sums: dict[str, Any], n: int) -> dict[str, Any]:
        """The :attr:`INTERVALS` figures from the sums of :meth:`item_columns` over ``n`` items, one
        value per replicate (arrays of shape (B,))."""
        raise NotImplementedError

    def constant_prediction(self, train: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The prediction a constant predictor fitted on the training rows makes for every item (the
        mean of each dimension, the most frequent label...), as a student's prediction without its
        ``id``; None when this kind has none."""
        return None

    def agreement(self, first: dict[str, dict[str, Any]], second: dict[str, dict[str, Any]],
                  order: list[str]) -> dict[str, Any]:
        """How two oracles' labelled rows (by id) agree, over the ids both have, in ``order``."""
        raise NotImplementedError

    def summary(self) -> str:
        """One line for ``distill filters list``."""
        return self.description.split("\n")[0][:80]


class _Missing(dict):
    """Metadata as a template sees it: a column a record lacks renders as an empty string."""

    def __missing__(self, key: str) -> str:
        return ""


def template_fields(template: str) -> set[str]:
    """Top-level field names a ``str.format`` template references."""
    import re

    fields = set()
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None:
            fields.add(re.split(r"[.\[]", field, maxsplit=1)[0])
    return fields


def answer_of(prediction: dict[str, Any]) -> Any:
    """A student's parsed answer (None when it did not validate)."""
    return prediction.get("answer")


def mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def share(count: int, n: int) -> float | None:
    """``count / n`` rounded as every metric is (None when there is nothing to count)."""
    return round(count / n, 4) if n else None


#: typographic characters an oracle may write in their plain form (or the other way round)
_TYPOGRAPHIC = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
                              "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
                              "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
                              "\u00a0": " "})


def normalise_text(text: str, ends: bool = True) -> str:
    """Text as answers are compared: Unicode NFKC, typographic quotes and dashes made plain,
    case-folded, runs of whitespace made one space; with ``ends``, punctuation and symbols at either
    end stripped too (``"Paris."`` and ``" paris"`` are the same answer)."""
    import unicodedata

    text = " ".join(unicodedata.normalize("NFKC", text).translate(_TYPOGRAPHIC).casefold().split())
    if not ends:
        return text
    start, end = 0, len(text)
    while start < end and _edge(text[start]):
        start += 1
    while end > start and _edge(text[end - 1]):
        end -= 1
    return text[start:end]


def _edge(ch: str) -> bool:
    import unicodedata

    return ch.isspace() or unicodedata.category(ch)[0] in "PS"
