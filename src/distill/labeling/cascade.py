"""A teacher / bulk cascade (``label.cascade``): the strong oracle labels a share of the records, a
cheaper one the rest, and the strong oracle keeps the cheap one honest.

1. The records whose id hashes below ``share`` are the strong oracle's (the same records on every run,
   so reruns hit the cache). They are labelled first.
2. The strong oracle's first ``examples`` valid answers become worked examples: user and assistant
   turns placed before each prompt the bulk oracle is sent (:meth:`Labeler.request_prompt`). The label
   rows keep the plain prompt: the student reads that, as it would read any oracle's.
3. Every other record goes to the bulk oracle, in input order. A share of them (``check_share``, by
   another hash of the id) is also put to the strong oracle: when the two disagree
   (:meth:`~distill.tasks.base.Task.same`) the record takes the strong oracle's answer.

What it cost and how often the two agreed go to ``metrics/label.json`` (``cascade``), beside what the
strong oracle alone would have cost at its measured cost per record. Both oracles share one budget and
one event stream; each keeps its own rate limits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from distill.config import CascadeConfig, LabelConfig, named_oracle
from distill.errors import ConfigError
from distill.labeling.engine import Labeler, LabelStats, ordered_bounded_map


def build_cascade(label_cfg: LabelConfig, strong: Labeler, config_dir: str = "conf") -> Cascade:
    """The cascade ``label.cascade`` describes over the configured oracle's labeler (``strong``): the bulk
    oracle's providers are built (and their keys checked) now, before any request; both share the
    strong labeler's cache, budget and events."""
    from distill.labeling.build import build_labeler, providers_for
    from distill.providers.prices import budget_problem

    cfg = label_cfg.cascade
    assert cfg is not None
    if label_cfg.mode != "online":
        raise ConfigError("label.cascade works with label.mode=online (the bulk oracle needs the strong "
                          "oracle's answers as examples first); set label.mode=online or drop label.cascade")
    bulk_cfg = named_oracle(cfg.bulk, "label.cascade.bulk", config_dir)[0] if isinstance(cfg.bulk, str) else cfg.bulk
    problem = budget_problem(bulk_cfg, label_cfg.budget_usd)
    if problem:
        raise ConfigError(problem.replace("oracle.price", "label.cascade.bulk.price"))
    bulk = build_labeler(strong.spec, bulk_cfg, label_cfg, strong.cache, providers=providers_for(bulk_cfg),
                         budget=strong.budget, events=strong.events)
    return Cascade(strong, bulk, cfg)


def in_share(record_id: str, share: float, salt: str) -> bool:
    """A stable pseudo-random draw of ``share`` of the ids (``salt`` makes draws independent)."""
    digest = hashlib.blake2b(f"{salt}:{record_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def worked_examples(rows: Iterable[dict[str, Any]], k: int) -> list[dict[str, str]]:
    """The first ``k`` valid rows as user and assistant turns (the prompt, then the answer as JSON)."""
    turns: list[dict[str, str]] = []
    for row in rows:
        if len(turns) >= 2 * k:
            break
        user = next(m["content"] for m in reversed(row["messages"]) if m["role"] == "user")
        turns += [{"role": "user", "content": user},
                  {"role": "assistant", "content": json.dumps(row["label"], ensure_ascii=False)}]
    return turns


class Cascade:
    def __init__(self, strong: Labeler, bulk: Labeler, cfg: CascadeConfig):
        self.strong = strong
        self.bulk = bulk
        self.cfg = cfg
        self.stats = {"strong_records": 0, "bulk_records": 0, "checked": 0, "agreed": 0, "relabelled": 0,
                      "check_failed": 0, "examples": 0}
        # a checked record's gold comparison is counted by both labelers; the one whose row was not
        # kept is taken back out of the combined counts
        self._gold_uncount = {"checked": 0, "agreed": 0}

    def is_strong(self, record: dict[str, Any]) -> bool:
        return in_share(str(record["id"]), self.cfg.share, "cascade-strong")

    def is_checked(self, record: dict[str, Any]) -> bool:
        return in_share(str(record["id"]), self.cfg.check_share, "cascade-check")

    async def run(self, records: Callable[[], Iterable[dict[str, Any]]], concurrency: int
                  ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Label the stream ``records()`` (read twice) and yield every outcome in input order."""
        strong_rows: dict[str, tuple[str, dict[str, Any]]] = {}
        async for kind, row in self.strong.run((r for r in records() if self.is_strong(r)), concurrency):
            strong_rows[row["id"]] = (kind, row)
        self.stats["strong_records"] = len(strong_rows)
        valid = (row for kind, row in strong_rows.values() if kind == "valid")
        self.bulk.examples = worked_examples(valid, self.cfg.examples)
        self.stats["examples"] = len(self.bulk.examples) // 2

        async def one(record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
            if record["id"] in strong_rows:
                return strong_rows[record["id"]]
            self.stats["bulk_records"] += 1
            kind, row = await self.bulk.label(record)
            if kind != "valid" or not self.is_checked(record):
                return kind, row
            self.stats["checked"] += 1
            check_kind, check_row = await self.strong.label(record)
            if check_kind != "valid":  # the strong oracle gave no answer to compare with: keep the bulk one
                self.stats["check_failed"] += 1
                return kind, {**row, "cascade_check": "no_strong_answer"}
            if self.strong.spec.same(row, check_row):
                self.stats["agreed"] += 1
                self._uncount_gold(check_row)
                return kind, {**row, "cascade_check": "agreed"}
            self.stats["relabelled"] += 1
            self._uncount_gold(row)
            return check_kind, {**check_row, "cascade_check": "relabelled", "bulk_label": row["label"]}

        async for outcome in ordered_bounded_map(records(), one, concurrency):
            yield outcome

    def _uncount_gold(self, dropped: dict[str, Any]) -> None:
        if "gold_agrees" in dropped:
            self._gold_uncount["checked"] += 1
            self._gold_uncount["agreed"] += int(dropped["gold_agrees"])

    def combined_stats(self) -> LabelStats:
        """The two labelers' counters added up, per record: a checked record counts once, with the
        outcome of the row it kept (requests, tokens and costs stay the sum: both were asked)."""
        a, b = self.strong.stats.as_dict(), self.bulk.stats.as_dict()
        total = LabelStats()
        for key, value in a.items():
            if isinstance(value, dict):
                merged = dict(value)
                for k, v in b[key].items():
                    merged[k] = merged.get(k, 0) + v if not isinstance(v, dict) else {**merged.get(k, {}), **v}
                setattr(total, key, merged)
            else:
                setattr(total, key, value + b[key])
        s = self.stats
        total.records -= s["checked"]
        total.valid -= s["checked"] - s["check_failed"]
        total.invalid -= s["check_failed"]
        total.gold_checked -= self._gold_uncount["checked"]
        total.gold_agreed -= self._gold_uncount["agreed"]
        return total

    def report(self) -> dict[str, Any]:
        """The cascade's counts and agreement; what each oracle's answers cost at list price (cached ones
        counted as if paid, so a rerun reports the same); what the strong oracle alone would have cost
        (its cost per record it labelled, for every record) and the difference."""
        s = dict(self.stats)
        judged = s["agreed"] + s["relabelled"]
        s["agreement"] = round(s["agreed"] / judged, 4) if judged else None
        strong, bulk = _list_cost(self.strong), _list_cost(self.bulk)
        s["list_cost_usd"] = {"strong": round(strong, 6), "bulk": round(bulk, 6), "total": round(strong + bulk, 6)}
        records = s["strong_records"] + s["bulk_records"]
        labelled_by_strong = self.strong.stats.valid + self.strong.stats.invalid
        if labelled_by_strong:
            alone = strong / labelled_by_strong * records
            s["strong_alone_usd"] = round(alone, 6)
            s["saved_usd"] = round(alone - strong - bulk, 6)
        else:
            s["strong_alone_usd"] = s["saved_usd"] = None
        return s


def _list_cost(labeler: Labeler) -> float:
    """What every answer the labeler used cost at its oracle's price, paid or replayed from the cache."""
    from distill.labeling.budget import request_cost

    st = labeler.stats
    price = labeler.price(labeler.provider)
    return request_cost(price, st.input_tokens + st.cached_input_tokens, st.output_tokens + st.cached_output_tokens)
