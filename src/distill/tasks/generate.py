"""Generation: a synthetic training set from a template, with no corpus to label.

The oracle expands ``domain`` into a topic tree (``topics: {depth, breadth}``), then writes items of
the template's shape (:mod:`distill.tasks.gen_templates`) spread round-robin over the leaf topics,
``batch`` at a time, until ``target`` valid, distinct items exist (the job itself is
:mod:`distill.labeling.generate`, run by the label stage). Each item becomes a row whose prompt asks
for ONE item of its topic: that is what the student learns to answer. Rows of one topic share that
prompt, so the split keeps a topic's rows together (:meth:`GenerateTask.group`) and the student is
tested on topics it never saw.

The evaluation is of the student's items on the test topics' prompts (the student samples, at
``student_temperature``): schema validity, the share of distinct items (exact: normalised text; and
after near duplicates, as the generation job would keep them), and diversity: distinct word 1- and
2-grams over all items and the mean pairwise Jaccard distance of their word sets; the oracle's own
test items get the same diversity figures beside them.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from distill.tasks.base import Strict, Task
from distill.tasks.gen_templates import GenerationTemplate, find_template, search_path


class TopicSpec(Strict):
    #: levels of subtopics under the domain (0: the domain itself is the only topic)
    depth: int = Field(default=1, ge=0, le=4)
    #: subtopics asked for per topic
    breadth: int = Field(default=5, ge=1, le=50)
    #: the first level's topics, given instead of asked (deeper levels are still asked)
    seeds: list[str] = Field(default_factory=list)


class DedupSpec(Strict):
    #: words per shingle
    shingle_size: int = Field(default=3, ge=1, le=10)
    #: an item whose shingle-set Jaccard similarity with a kept item is above this is a near duplicate
    jaccard: float = Field(default=0.7, gt=0, le=1)


class GenerateTask(Task):
    KIND: ClassVar[str] = "generate"
    HEADLINE: ClassVar[tuple[str, ...]] = ("n_test", "valid_json_share", "distinct_share", "near_distinct_share",
                                           "distinct_2", "mean_jaccard_distance")
    READS_CORPUS: ClassVar[bool] = False

    kind: Literal["generate"]
    template: str = Field(description="name of the generation template (distill templates list)")
    #: a folder of custom templates, relative to the filter folder (searched before it and the built-ins)
    template_dir: str | None = None
    #: replaces the template's system prompt when given
    system_prompt: str = ""
    domain: str = Field(min_length=3)
    #: valid, distinct items to reach
    target: int = Field(ge=1, le=1_000_000)
    topics: TopicSpec = TopicSpec()
    dedup: DedupSpec = DedupSpec()
    #: items asked for per request
    batch: int = Field(default=5, ge=1, le=100)
    #: stop after this many rounds over every topic in a row that add no new item
    stall_rounds: int = Field(default=3, ge=1)
    #: the student samples its items at this temperature (0: greedy, the same item for one prompt)
    student_temperature: float = Field(default=0.8, ge=0, le=2)
    # set by the loader
    generation: GenerationTemplate | None = Field(default=None, exclude=True)

    def load_prompts(self, folder: Path) -> GenerateTask:
        found = find_template(self.template, search_path(folder, self.template_dir))
        return self.model_copy(update={"root": folder, "generation": found})

    @property
    def tmpl(self) -> GenerationTemplate:
        if self.generation is None:
            raise RuntimeError("a generate task's template is loaded by distill.filterspec.load_filter")
        return self.generation

    @property
    def system(self) -> str:
        return (self.system_prompt or self.tmpl.system_prompt).strip()

    # ----------------------------------------------------------------- prompts and schemas
    def oracle_messages(self, topic: str, count: int, so_far: list[dict[str, Any]]) -> list[dict[str, str]]:
        """What the oracle is sent for ``count`` items of ``topic``, the topic's items so far listed."""
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": self.tmpl.render(self.domain, topic, count, so_far)}]

    def student_messages(self, topic: str) -> list[dict[str, str]]:
        """What the student is asked: one item of ``topic``."""
        return self.oracle_messages(topic, 1, [])

    def render(self, record: dict[str, Any]) -> list[dict[str, str]]:
        return self.student_messages(record["topic"])

    @cached_property
    def json_schema(self) -> dict[str, Any]:
        """One item (what the student writes)."""
        return self.tmpl.item_schema

    def batch_schema(self, count: int) -> dict[str, Any]:
        """What a request for ``count`` items is asked to satisfy (each item is validated on its own)."""
        return {"type": "object", "properties": {"items": {"type": "array", "items": self.json_schema,
                                                           "minItems": 1, "maxItems": count}},
                "required": ["items"], "additionalProperties": False}

    def item_text(self, item: dict[str, Any]) -> str:
        return self.tmpl.item_text(item)

    def labelled(self, answer: dict[str, Any], record: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"label": answer, "topic": (record or {}).get("topic")}

    def group(self, row: dict[str, Any]) -> str | None:
        return row.get("topic")

    def summary(self) -> str:
        t = self.topics
        return (f"generate {self.target} {self.template} items on {self.domain[:40]!r} "
                f"(topics {t.breadth}^{t.depth}, batch {self.batch})")

    # ----------------------------------------------------------------- evaluation
    def evaluate(self, truth: list[dict[str, Any]], predictions: list[dict[str, Any]]
                 ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        """Validity, distinct shares and diversity of the student's items (one per test row, on that row's
        topic prompt); an invalid answer counts in ``n_test`` but in no diversity figure."""
        from distill.merge import text_hash
        from distill.neardup import NearDuplicateIndex, distinct_ngrams, mean_pairwise_jaccard_distance

        by_id = {p["id"]: p for p in predictions}
        index = NearDuplicateIndex(self.dedup.shingle_size, self.dedup.jaccard)
        hashes: set[str] = set()
        texts, rows = [], []
        kept = 0
        for ex in truth:
            answer = by_id.get(ex["id"], {}).get("answer")
            if answer is None:
                outcome = "invalid"
            else:
                text = self.item_text(answer)
                texts.append(text)
                h = text_hash(text)
                near, _ = index.most_similar(text)
                if h in hashes:
                    outcome = "exact_duplicate"
                elif near is not None:
                    outcome = "near_duplicate"
                else:
                    outcome = "distinct"
                    kept += 1
                    index.add(ex["id"], text)
                hashes.add(h)
            rows.append({"id": ex["id"], "actual": ex.get("topic") or "-", "predicted": outcome})
        oracle_texts = [self.item_text(ex["label"]) if "label" in ex else _assistant_text(ex, self) for ex in truth]
        n, valid = len(truth), len(texts)
        metrics = {
            "n_test": n,
            "valid_json_share": round(valid / n, 4) if n else None,
            "distinct_share": round(len({text_hash(t) for t in texts}) / valid, 4) if valid else None,
            "near_distinct_share": round(kept / valid, 4) if valid else None,
            "distinct_1": distinct_ngrams(texts, 1),
            "distinct_2": distinct_ngrams(texts, 2),
            "mean_jaccard_distance": mean_pairwise_jaccard_distance(texts),
            "oracle_distinct_2": distinct_ngrams(oracle_texts, 2),
            "oracle_mean_jaccard_distance": mean_pairwise_jaccard_distance(oracle_texts),
            "test_topics": len({ex.get("topic") for ex in truth}),
        }
        parts = [("distinct share", "distinct_share", "share"), ("near-distinct share", "near_distinct_share", "share"),
                 ("distinct-1", "distinct_1", "share"), ("distinct-2", "distinct_2", "share"),
                 ("mean Jaccard distance", "mean_jaccard_distance", "distance")]
        per_part = [{"name": name, "value": metrics[key], "metric": metric} for name, key, metric in parts
                    if metrics[key] is not None]
        return metrics, rows, per_part

    def agreement(self, first: dict[str, dict[str, Any]], second: dict[str, dict[str, Any]],
                  order: list[str]) -> dict[str, Any]:
        raise NotImplementedError("a generate task has no records two oracles could both answer")


def _assistant_text(example: dict[str, Any], task: GenerateTask) -> str:
    """The oracle's item of a split row (its assistant turn)."""
    import json

    content = next(m["content"] for m in reversed(example["messages"]) if m["role"] == "assistant")
    return task.item_text(json.loads(content))
