"""The generate job: a topic tree, then items spread over its leaves until the target is reached.

1. **Topics.** The oracle expands the filter's domain into ``topics.breadth`` subtopics, and each of
   those again, ``topics.depth`` levels down (``topics.seeds`` replace the first level); the leaves are
   the topics items are spread over. A failed expansion leaves its topic a leaf (counted).
2. **Items.** Step ``s`` asks leaf ``s mod L`` for ``batch`` items, the items kept so far for that
   topic listed in the prompt so the oracle does not repeat itself. Each item is validated against the
   template's schema on its own (an invalid one is dropped with the validator's reason), then dropped
   when its normalised text hashes like a kept item's (:func:`distill.merge.text_hash`) or its shingle
   Jaccard similarity to one is above ``dedup.jaccard`` (:mod:`distill.neardup`); every drop names the
   item it duplicated. It stops at ``target`` kept items, when the budget stops it, or after
   ``stall_rounds`` rounds over every topic that kept nothing new (said in the metrics and the log).

Every request goes through :meth:`Labeler._ask` (response cache, budget, rate limits, transport
retries, events), a re-ask on a broken answer through :class:`Conversation`. Steps are sent in waves
of at most ``L`` (one per topic), each wave's prompts made before it is sent and its answers taken
in step order, so a step's prompt depends only on the answers of the steps before it, never on
timing or on ``target``: a rerun replays every request from the cache, and a rerun with a larger
target pays only for the steps past the first run's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from distill import jsonl
from distill.config import LabelConfig
from distill.errors import DistillError
from distill.labeling.conversation import Conversation
from distill.labeling.engine import BudgetReached, Labeler, TooManyProviderErrors, ordered_bounded_map
from distill.labeling.topics import Topic, distinct_subtopics, expansion_messages, expansion_schema
from distill.merge import answer_hash, text_hash
from distill.neardup import NearDuplicateIndex
from distill.providers.base import ProviderError
from distill.tasks.generate import GenerateTask
from distill.validate import Invalid, check

log = logging.getLogger("distill")


def _items_envelope(text: str | None, finish_reason: str | None):
    """A batch answer is accepted when it is an object with an ``items`` list; each item is judged
    on its own afterwards, so one bad item does not cost the others."""
    outcome = check(text, {"type": "object", "properties": {"items": {"type": "array"}}, "required": ["items"]},
                    finish_reason)
    if not isinstance(outcome, Invalid) and not outcome["items"]:
        return Invalid("empty", "the items list was empty")
    return outcome


# ----------------------------------------------------------------------------- the job
class Generator:
    """One generate job over a :class:`Labeler` (its cache, providers, budget, limits and stats)."""

    def __init__(self, spec: GenerateTask, labeler: Labeler, concurrency: int = 4):
        self.spec, self.labeler, self.concurrency = spec, labeler, concurrency
        self.kept: list[dict[str, Any]] = []
        self.dropped: list[dict[str, Any]] = []
        self.by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.hashes: dict[str, str] = {}
        self.index = NearDuplicateIndex(spec.dedup.shingle_size, spec.dedup.jaccard)
        self.counts: Counter[str] = Counter()
        self.item_invalid: Counter[str] = Counter()
        self.request_invalid: Counter[str] = Counter()
        self.stop_reason: str | None = None
        self.steps = 0

    async def _walk(self, request_id: str, messages: list[dict[str, str]], schema: dict[str, Any], validate
                    ) -> tuple[Conversation, str, dict[str, int]]:
        """One conversation through the engine's request path, failing over to the next provider when
        one fails for good: (conversation, oracle, usage)."""
        labeler, error = self.labeler, None
        for provider in labeler.route(request_id):
            conversation = Conversation(messages, validate, labeler.max_attempts, schema=schema)
            usage = {"input_tokens": 0, "output_tokens": 0}
            try:
                while (sent := conversation.messages()) is not None:
                    response, cached = await labeler._ask(provider, sent, request_id, schema)
                    labeler._consecutive_errors = 0
                    labeler.stats.attempts += 1
                    usage["input_tokens"] += response.input_tokens
                    usage["output_tokens"] += response.output_tokens
                    conversation.answer(response, cached)
                return conversation, provider.describe(), usage
            except TooManyProviderErrors:
                raise
            except ProviderError as e:
                error = e
                labeler.first_error = labeler.first_error or str(e)
        assert error is not None
        raise error

    # ------------------------------------------------------------------ topics
    async def topic_tree(self) -> Topic:
        spec = self.spec
        root, level = Topic(()), []
        if spec.topics.depth and spec.topics.seeds:
            root.children = [Topic((s.strip(),)) for s in spec.topics.seeds]
            level = root.children
        else:
            level = [root]
        start = 1 if spec.topics.seeds else 0
        for _ in range(start, spec.topics.depth):
            async for _ in ordered_bounded_map(level, self._expand, self.concurrency):
                pass
            level = [c for node in level for c in node.children]
        return root

    async def _expand(self, node: Topic) -> None:
        breadth = self.spec.topics.breadth
        schema = expansion_schema(breadth)
        try:
            conversation, _, _ = await self._walk(f"topics:{node.name}",
                                                  expansion_messages(self.spec.domain, node.path, breadth),
                                                  schema, distinct_subtopics(schema, breadth))
        except BudgetReached:
            node.problem = "the budget stopped the job"
            return
        except TooManyProviderErrors:
            raise
        except ProviderError as e:
            node.problem = f"no answer ({str(e)[:120]})"
            self.counts["expansions_failed"] += 1
            return
        self.counts["expansions"] += 1
        if conversation.valid:
            node.children = [Topic((*node.path, name.strip())) for name in conversation.result["subtopics"]]
        else:
            node.problem = f"{conversation.reason} after {conversation.answers} answers"
            self.counts["expansions_failed"] += 1

    # ------------------------------------------------------------------ items
    async def generate(self, leaves: list[Topic]) -> None:
        spec, n = self.spec, len(leaves)
        idle = 0
        while len(self.kept) < spec.target and not self.stop_reason:
            if idle >= spec.stall_rounds * n:
                self.stop_reason = (f"stalled: {spec.stall_rounds} rounds over the {n} topics ({idle} requests in a "
                                    "row) added no new item, all duplicates or invalid (see invalid.jsonl); widen "
                                    "topics (breadth, depth), lower batch, or raise dedup.jaccard")
                break
            wave = min(n, max(1, math.ceil((spec.target - len(self.kept)) / spec.batch)))
            steps = [(s, leaves[s % n].name) for s in range(self.steps, self.steps + wave)]
            prompts = [(s, topic, spec.oracle_messages(topic, spec.batch, self.by_topic[topic])) for s, topic in steps]
            async with contextlib.aclosing(ordered_bounded_map(prompts, self._step, self.concurrency)) as answers:
                async for s, topic, messages, outcome in answers:
                    if isinstance(outcome, BudgetReached):
                        self.stop_reason = self.labeler.stop_reason or str(outcome)
                        break
                    self.steps = s + 1
                    idle = 0 if self._take(s, topic, messages, outcome) else idle + 1
            stats = self.labeler.stats
            log.info("generate: %d of %d items after %d requests for items (%d paid, %d from the cache)",
                     len(self.kept), spec.target, self.steps, stats.requests, stats.cache_hits)

    async def _step(self, job: tuple[int, str, list[dict[str, str]]]):
        s, topic, messages = job
        try:
            outcome = await self._walk(f"items:{s}", messages, self.spec.batch_schema(self.spec.batch),
                                       _items_envelope)
        except TooManyProviderErrors:
            raise
        except (BudgetReached, ProviderError) as e:  # judged in step order by the caller
            outcome = e
        return s, topic, messages, outcome

    def _take(self, step: int, topic: str, messages: list[dict[str, str]], outcome) -> bool:
        """Judge one step's items; True when it kept at least one."""
        spec, c = self.spec, self.counts
        c["items_asked"] += spec.batch
        where = {"topic": topic, "step": step, "messages": messages}
        if isinstance(outcome, ProviderError):
            c["provider_errors"] += 1
            self.dropped.append({"id": f"step-{step}", "reason": "provider_error", "detail": str(outcome)[:300],
                                 "oracle": None, **where, "attempts": list(getattr(outcome, "attempts", ()))})
            return False
        conversation, oracle, usage = outcome
        if not conversation.valid:
            self.request_invalid[conversation.reason] += 1
            self.dropped.append({"id": f"step-{step}", "reason": conversation.reason, "oracle": oracle, **where,
                                 "attempts": conversation.attempts})
            return False
        added = False
        for j, item in enumerate(conversation.result["items"]):
            c["items_received"] += 1
            verdict = check(json.dumps(item, ensure_ascii=False), spec.json_schema)
            base = {"id": f"gen-{answer_hash(item)[:16]}", "oracle": oracle, "item": item, **where, "attempts": []}
            if isinstance(verdict, Invalid):
                self.item_invalid[verdict.reason] += 1
                self.dropped.append({**base, "reason": "invalid_item", "detail": verdict.detail, "index": j})
                continue
            c["items_valid"] += 1
            text = spec.item_text(item)
            h = text_hash(text)
            near_id, similarity = self.index.most_similar(text)
            if h in self.hashes:
                c["exact_duplicates"] += 1
                self.dropped.append({**base, "reason": "exact_duplicate", "duplicate_of": self.hashes[h],
                                     "similarity": 1.0, "index": j})
            elif near_id is not None:
                c["near_duplicates"] += 1
                self.dropped.append({**base, "reason": "near_duplicate", "duplicate_of": near_id,
                                     "similarity": round(similarity, 4), "index": j})
            elif len(self.kept) >= spec.target:
                c["beyond_target"] += 1
            else:
                row = {"id": base["id"], "title": topic, "text": text,
                       "metadata": {"topic": topic, "template": spec.template, "step": step},
                       "messages": spec.student_messages(topic), **spec.labelled(item, {"topic": topic}),
                       "oracle": oracle, "attempts": conversation.answers, "request": step, "usage": usage}
                self.kept.append(row)
                self.by_topic[topic].append(item)
                self.hashes[h] = row["id"]
                self.index.add(row["id"], text)
                added = True
        return added


# ----------------------------------------------------------------------------- the stage
def generate(label_cfg: LabelConfig, oracle_cfg, spec: GenerateTask, metrics_dir: Path,
             provider=None) -> dict[str, Any]:
    """The label stage of a generate filter: run the job, write labels.jsonl (the kept items),
    invalid.jsonl (every dropped item and failed request, with why), events.jsonl and metrics/label.json."""
    from distill.errors import ConfigError
    from distill.labeling.build import build_labeler, providers_for
    from distill.labeling.cache import ResponseCache
    from distill.labeling.events import Events
    from distill.providers.prices import budget_problem

    problem = budget_problem(oracle_cfg, label_cfg.budget_usd)
    if problem:  # before any request
        raise ConfigError(problem)
    if label_cfg.mode == "batch":
        raise ConfigError("label.mode=batch cannot run a generate job (each request depends on the answers "
                          "before it); use label.mode=online")
    providers = [(provider, oracle_cfg.weight)] if provider is not None else providers_for(oracle_cfg)
    out = Path(label_cfg.output_dir)
    cache = ResponseCache(label_cfg.cache_path)
    events = Events(out / "events.jsonl")
    labeler = build_labeler(spec, oracle_cfg, label_cfg, cache, providers=providers, events=events)
    job = Generator(spec, labeler, label_cfg.concurrency)
    names = ", ".join(p.describe() for p, _ in providers)
    log.info("generate: %d %s items on %r with %s; cache %s (%d answers)", spec.target, spec.template,
             spec.domain[:60], names, label_cfg.cache_path, len(cache))
    events.emit("run_start", kind="generate", target=spec.target, oracle=names, budget_usd=label_cfg.budget_usd)
    t0 = time.perf_counter()
    leaves: list[Topic] = []

    async def run() -> None:
        nonlocal leaves
        try:
            leaves = (await job.topic_tree()).leaves()
            events.emit("topics", leaves=len(leaves))
            if not labeler.stop_reason:
                await job.generate(leaves)
            else:
                job.stop_reason = labeler.stop_reason
        finally:
            for p, _ in providers:
                await p.aclose()

    try:
        asyncio.run(run())
    except TooManyProviderErrors as e:
        raise DistillError(f"{e}. Answers received so far are cached: rerun the stage to resume.") from e
    finally:
        cache.close()
        jsonl.write_jsonl(out / "labels.jsonl", job.kept)
        jsonl.write_jsonl(out / "invalid.jsonl", job.dropped)
        metrics = _metrics(job, labeler, spec, leaves, names, label_cfg, time.perf_counter() - t0)
        events.emit("run_end", kept=len(job.kept), stopped=job.stop_reason)
        events.close()
        jsonl.write_json(metrics_dir / "label.json", metrics)
    if labeler.stop_reason:
        raise DistillError(f"{labeler.stop_reason}: {len(job.kept)} of {spec.target} items. Raise label.budget_usd "
                           "and rerun: answers so far are cached and will not be paid again.")
    if job.counts["provider_errors"]:
        raise DistillError(f"{job.counts['provider_errors']} request(s) got no answer after retries (first error: "
                           f"{labeler.first_error}); rerun the stage: answers so far are cached.")
    if job.stop_reason:
        log.warning("generate: %s", job.stop_reason)
    return metrics


def _metrics(job: Generator, labeler: Labeler, spec: GenerateTask, leaves: list[Topic], oracle: str,
             label_cfg: LabelConfig, seconds: float) -> dict[str, Any]:
    c, s = job.counts, labeler.stats
    n = len(leaves)
    return {
        "kind": "generate", "template": spec.template, "target": spec.target, "kept": len(job.kept),
        "target_reached": len(job.kept) >= spec.target, "stopped": job.stop_reason,
        "items_asked": c["items_asked"], "items_received": c["items_received"], "items_valid": c["items_valid"],
        "items_invalid": sum(job.item_invalid.values()), "invalid_by_reason": dict(sorted(job.item_invalid.items())),
        "exact_duplicates": c["exact_duplicates"], "near_duplicates": c["near_duplicates"],
        "beyond_target": c["beyond_target"],
        "requests_invalid": sum(job.request_invalid.values()),
        "requests_invalid_by_reason": dict(sorted(job.request_invalid.items())),
        "provider_errors": c["provider_errors"],
        "steps": job.steps, "rounds": math.ceil(job.steps / n) if n else 0, "topics": n,
        "topic_tree": {"depth": spec.topics.depth, "breadth": spec.topics.breadth, "seeds": len(spec.topics.seeds),
                       "expansions": c["expansions"], "expansions_failed": c["expansions_failed"]},
        "requests": s.requests, "cache_hits": s.cache_hits, "attempts": s.attempts, "input_tokens": s.input_tokens,
        "output_tokens": s.output_tokens, "cost_usd": round(s.cost_usd, 6), "transport_retries": s.transport_retries,
        "rate_limited": s.rate_limited, "by_provider": s.by_provider, "oracle": oracle,
        "budget_usd": label_cfg.budget_usd, "seconds": round(seconds, 3),
    }


# ----------------------------------------------------------------------------- the tree, from the cache
def cached_tree(params: dict[str, Any], source: str = "params.yaml") -> tuple[GenerateTask, Topic, str]:
    """The topic tree of the generate filter ``params`` selects, walked through the response cache
    only (the requests the label stage made, keyed the same way; nothing is sent): a topic whose
    expansion is not in the cache is shown as such. Returns (filter, tree, cache path)."""
    from distill.config import section
    from distill.errors import ConfigError, InputError
    from distill.filterspec import load_filter_at
    from distill.labeling.build import build_labeler
    from distill.labeling.cache import ResponseCache
    from distill.labeling.estimate import OfflineProvider

    class CacheOnly(OfflineProvider):
        async def complete(self, request):
            raise ProviderError("not in the cache", transient=False)

    ref = section(params, "filter", source)
    spec = load_filter_at(ref.root, ref.name, ref.version)
    if not isinstance(spec, GenerateTask):
        raise ConfigError(f"filter {spec.name} is a {spec.KIND} task; the topic tree is a generate filter's: select "
                          "one (filter: in conf/project.yaml, or `distill config compose filter=NAME`)")
    oracle, label = section(params, "oracle", source), section(params, "label", source)
    if not Path(label.cache_path).is_file():
        raise InputError(f"{label.cache_path} not found: run the label stage first (`dvc exp run label`)")
    providers = [(CacheOnly(m), m.weight) for m in [oracle, *oracle.mix]]
    cache = ResponseCache(label.cache_path)
    try:
        labeler = build_labeler(spec, oracle, label.model_copy(update={"transport_retries": 0}), cache,
                                providers=providers, limits=False)
        labeler.max_consecutive_errors = 1 << 30  # every miss is expected, none is an outage
        root = asyncio.run(Generator(spec, labeler).topic_tree())
    finally:
        cache.close()
    return spec, root, label.cache_path
