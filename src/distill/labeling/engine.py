"""The labelling engine: render, ask (through the cache), validate, re-ask with the error, score.

For each record the engine sends the rendered prompt, validates the answer against the filter's schema
and, when it fails, re-asks in the same conversation with the validator's message, up to
``max_attempts`` (the content budget). Transport failures (429, 408, 409, 5xx, timeouts, resets) are
retried with exponential backoff and jitter on a separate budget (``transport_retries``), honouring
``Retry-After``. Every request goes through the response cache first, so a rerun (or a run resumed after
a kill) replays finished conversations for free and only pays for what was never answered.

Records stream in; at most ``concurrency`` requests are in flight (fewer when the scheduler's adaptive
cap has backed off) and a bounded window of records is held, so memory does not grow with the corpus.
Results come out in input order, which keeps the materialised output deterministic.

Optional collaborators: a :class:`~distill.labeling.limits.Scheduler` (rate limits, adaptive
concurrency), a :class:`~distill.labeling.budget.Budget` (stop before spend passes a cap), an
:class:`~distill.labeling.events.Events` sink (append-only ``events.jsonl`` and live progress), and
several providers with weights (deterministic weighted routing per record, failover to the next
provider when one is down). :func:`distill.labeling.build.build_labeler` wires them from the config.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from distill.compress import compress
from distill.errors import DistillError
from distill.filterspec import FilterSpec
from distill.labeling.budget import Budget, request_cost
from distill.labeling.cache import ResponseCache, request_key
from distill.labeling.conversation import Conversation, schema_validator
from distill.labeling.events import Events
from distill.providers.base import ChatRequest, ChatResponse, Pricing, Provider, ProviderError
from distill.providers.prices import price_for
from distill.validate import Invalid

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class LabelStats:
    records: int = 0
    requests: int = 0  # sent to a provider and answered (paid)
    cache_hits: int = 0
    attempts: int = 0  # answers examined, cached or not
    valid: int = 0
    invalid: int = 0
    skipped: int = 0  # not labelled because the run stopped (budget)
    provider_errors: int = 0  # records that ended without an answer
    transport_retries: int = 0
    rate_limited: int = 0
    input_tokens: int = 0  # of paid requests
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cached_output_tokens: int = 0
    cost_usd: float = 0.0
    gold_checked: int = 0  # valid answers compared with the record's golden answer
    gold_agreed: int = 0
    gold_unusable: int = 0  # golden answers the task could not read (an unknown label or type, no number...)
    invalid_reasons: dict[str, int] = field(default_factory=dict)
    by_provider: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cost_usd"] = round(self.cost_usd, 6)
        return d

    def count_provider(self, name: str, **inc: float) -> None:
        """Per-provider counters: paid ``requests`` (with their tokens and cost) and ``cache_hits``,
        so the section is there, with the same keys, whether the answers were paid or replayed."""
        slot = self.by_provider.setdefault(
            name, {"requests": 0, "cache_hits": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0})
        for k, v in inc.items():
            slot[k] = round(slot.get(k, 0) + v, 6)


class TooManyProviderErrors(ProviderError):
    pass


class BudgetReached(DistillError):
    pass


# ----------------------------------------------------------------------------- streaming
async def ordered_bounded_map(
    items: Iterable[T], fn: Callable[[T], Awaitable[R]], concurrency: int, window: int | None = None
) -> AsyncIterator[R]:
    """Apply ``fn`` to a stream with at most ``concurrency`` running and ``window`` held; yield in order."""
    window = window or concurrency * 4
    sem = asyncio.Semaphore(concurrency)

    async def run(item: T) -> R:
        async with sem:
            return await fn(item)

    pending: deque[asyncio.Task[R]] = deque()
    iterator = iter(items)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < window:
                try:
                    pending.append(asyncio.ensure_future(run(next(iterator))))
                except StopIteration:
                    exhausted = True
            if not pending:
                return
            yield await pending.popleft()
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def estimate_tokens(messages: list[dict[str, str]], chars_per_token: float = 3.5) -> int:
    """A cheap, slightly pessimistic input-token estimate for reservations (trued up afterwards)."""
    return int(sum(len(m["content"]) for m in messages) / chars_per_token) + 4 * len(messages) + 8


class Labeler:
    def __init__(
        self,
        spec: FilterSpec,
        provider: Provider | list[tuple[Provider, float]],
        cache: ResponseCache,
        *,
        max_words: int,
        max_attempts: int,
        temperature: float = 0.0,
        max_tokens: int = 384,
        seed: int | None = 0,
        max_consecutive_errors: int = 20,
        transport_retries: int = 0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 60.0,
        scheduler=None,
        budget: Budget | None = None,
        events: Events | None = None,
    ):
        self.spec = spec
        self.providers = [(provider, 1.0)] if isinstance(provider, Provider) else list(provider)
        if not self.providers or any(w <= 0 for _, w in self.providers):
            raise ValueError("need at least one provider, each with a positive weight")
        self.provider = self.providers[0][0]
        self.cache = cache
        self.max_words = max_words
        self.max_attempts = max_attempts
        self.gen = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
        self.identities = {id(p): p.cache_identity() for p, _ in self.providers}
        self.stats = LabelStats()
        self.max_consecutive_errors = max_consecutive_errors
        self.transport_retries = transport_retries
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.scheduler = scheduler
        self.budget = budget or Budget(None)
        #: the price each provider is charged at; unknown prices count as free (a budget refuses them)
        self.prices = {id(p): price_for(p.cfg)[0] or Pricing() for p, _ in self.providers}
        self.events = events or Events(None)
        #: worked examples sent before each prompt (user and assistant turns; see request_prompt)
        self.examples: list[dict[str, str]] = []
        self._consecutive_errors = 0
        self._down: set[int] = set()  # providers that failed for good in this run
        self.first_error: str | None = None
        self.first_unusable_gold: str | None = None  # the id of the first record whose gold could not be read
        self.stop_reason: str | None = None

    # ------------------------------------------------------------------ helpers
    def prepare(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record as the oracle sees it: text compressed, prompt rendered."""
        compressed = {**record, "text": compress(record["text"], self.max_words)}
        compressed["messages"] = self.spec.render(compressed)
        return compressed

    def route(self, record_id: str) -> list[Provider]:
        """Providers to try for a record: a deterministic weighted pick first, the others as failover."""
        if len(self.providers) == 1:
            return [self.provider]
        total = sum(w for _, w in self.providers)
        x = int(hashlib.blake2b(record_id.encode(), digest_size=8).hexdigest(), 16) / 2**64 * total
        first = len(self.providers) - 1
        for i, (_, w) in enumerate(self.providers):
            if x < w:
                first = i
                break
            x -= w
        order = [self.providers[first][0]] + [p for i, (p, _) in enumerate(self.providers) if i != first]
        return [p for p in order if id(p) not in self._down] or order

    def price(self, provider: Provider) -> Pricing:
        return self.prices[id(provider)]

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.backoff_max_s) + random.uniform(0, 0.05)
        base = min(self.backoff_max_s, self.backoff_initial_s * 2**attempt)
        return random.uniform(base / 2, base)  # "equal jitter"

    def validator(self, item: dict[str, Any]):
        """``validate(text, finish_reason)`` for one record: its schema (the task's, or the record's
        own where the task allows one), then what the task checks beyond the schema."""
        schema = self.spec.schema_for(item)
        validate_schema = schema_validator(schema)
        spec = self.spec

        def validate(text: str | None, finish_reason: str | None):
            outcome = validate_schema(text, finish_reason)
            if isinstance(outcome, Invalid):
                return outcome
            problem = spec.check(outcome, item)
            return Invalid("task", problem) if problem else outcome

        return validate

    def conversation(self, item: dict[str, Any]) -> Conversation:
        """The record's conversation with the oracle (the engine's, the batch runner's, the estimate's)."""
        return Conversation(self.request_prompt(item["messages"]), self.validator(item), self.max_attempts,
                            schema=self.spec.schema_for(item))

    def request_prompt(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """What is sent for a record's prompt: the prompt itself, or with :attr:`examples` (worked
        examples as earlier user and assistant turns, after the system prompt: a cascade's bulk oracle
        sees a few of the strong oracle's answers). The row keeps the plain prompt: the student reads that."""
        if not self.examples:
            return messages
        head = 1 if messages and messages[0]["role"] == "system" else 0
        return [*messages[:head], *self.examples, *messages[head:]]

    def request_for(self, messages: list[dict[str, str]], schema: dict[str, Any] | None = None,
                    context: dict[str, Any] | None = None) -> ChatRequest:
        """The request for ``messages``; ``context`` is what of the record the provider reads besides them
        (``provider.cfg.request_context(item)``: None for all but the ``file`` provider)."""
        return ChatRequest(messages=messages, schema=self.spec.json_schema if schema is None else schema,
                           context=context, **self.gen)

    def key_for(self, provider: Provider, request: ChatRequest) -> str:
        return request_key(self.identities[id(provider)], request)

    # ------------------------------------------------------------------ one request
    async def _ask(self, provider: Provider, messages: list[dict[str, str]], record_id: str,
                   schema: dict[str, Any] | None = None, context: dict[str, Any] | None = None
                   ) -> tuple[ChatResponse, bool]:
        request = self.request_for(messages, schema, context)
        key = self.key_for(provider, request)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            self.stats.cached_input_tokens += cached.input_tokens
            self.stats.cached_output_tokens += cached.output_tokens
            self.stats.count_provider(provider.describe(), cache_hits=1)
            return cached, True
        if self.stop_reason:
            raise BudgetReached(self.stop_reason)
        price = self.price(provider)
        est_in, est_out = estimate_tokens(messages), request.max_tokens
        reservation = request_cost(price, est_in, est_out)
        if not await self.budget.admit(reservation):
            if not self.stop_reason:  # the first to find the cap reached says so, once
                self.stop_reason = (
                    f"budget reached: ${self.budget.spent:.4f} spent, "
                    f"${max(0.0, self.budget.reserved):.4f} in flight, cap ${self.budget.cap:.4f}"
                )
                self.events.emit("budget_reached", spent_usd=round(self.budget.spent, 6), cap_usd=self.budget.cap)
            raise BudgetReached(self.stop_reason)
        if self.stop_reason:  # stopped while this one waited for the budget
            self.budget.release(reservation)
            raise BudgetReached(self.stop_reason)
        try:
            response = await self._send(provider, request, est_in, est_out, record_id)
        except BaseException:
            self.budget.release(reservation)
            raise
        cost = request_cost(price, response.input_tokens, response.output_tokens)
        self.budget.settle(reservation, cost)
        s = self.stats  # counted before the commit below yields: paid is paid, even if the run is cancelled
        s.requests += 1
        s.input_tokens += response.input_tokens
        s.output_tokens += response.output_tokens
        s.cost_usd += cost
        s.count_provider(
            provider.describe(),
            requests=1,
            input_tokens=response.input_tokens,
            output_tokens=response.output_tokens,
            cost_usd=cost,
        )
        await self._store(key, provider, response)  # committed before the record can be reported done
        self.events.emit(
            "request_done",
            id=record_id,
            oracle=provider.describe(),
            input_tokens=response.input_tokens,
            output_tokens=response.output_tokens,
            cost_usd=round(cost, 8),
            finish_reason=response.finish_reason,
        )
        return response, False

    async def _store(self, key: str, provider: Provider, response: ChatResponse) -> None:
        put_async = getattr(self.cache, "put_async", None)
        if put_async is None:  # a cache without batched commits
            self.cache.put(key, provider.name, provider.model, response)
        else:
            await put_async(key, provider.name, provider.model, response)

    async def _send(
        self, provider: Provider, request: ChatRequest, est_in: int, est_out: int, record_id: str
    ) -> ChatResponse:
        """One request with transport retries (own budget, backoff with jitter, Retry-After honoured)."""
        attempt = 0
        while True:
            self._check_breaker()
            self._check_up(provider)
            delay = None
            if self.scheduler is None:
                try:
                    return await provider.complete(request)
                except ProviderError as e:
                    err = e
            else:
                async with self.scheduler.slot(est_in, est_out) as slot:
                    # the breaker may have tripped, or the provider been marked down, while this request
                    # waited for its turn: only requests already sent may still arrive after a trip
                    self._check_breaker()
                    self._check_up(provider)
                    try:
                        response = await provider.complete(request)
                        slot.settle(response.input_tokens, response.output_tokens)
                        return response
                    except ProviderError as e:
                        err = e
                        if e.throttled:  # pause everyone, no longer than one backoff may last
                            slot.throttled(None if e.retry_after is None else min(e.retry_after, self.backoff_max_s))
            if err.throttled:
                self.stats.rate_limited += 1
                self.events.emit(
                    "rate_limited",
                    id=record_id,
                    oracle=provider.describe(),
                    status=err.status,
                    retry_after=err.retry_after,
                )
            else:  # a circuit breaker: a dead server is not hammered with every retry of every record
                self._consecutive_errors += 1
                self.first_error = self.first_error or str(err)
                if self._consecutive_errors >= self.max_consecutive_errors:
                    raise TooManyProviderErrors(
                        f"{self._consecutive_errors} requests in a row failed; stopping. "
                        f"First error: {self.first_error}"
                    ) from None
            if not err.transient or attempt >= self.transport_retries:
                raise err
            delay = self._backoff(attempt, err.retry_after)
            attempt += 1
            self.stats.transport_retries += 1
            self.events.emit(
                "retry",
                id=record_id,
                oracle=provider.describe(),
                status=err.status,
                attempt=attempt,
                delay_s=round(delay, 3),
                error=str(err)[:200],
            )
            await asyncio.sleep(delay)

    def _check_breaker(self) -> None:
        if self._consecutive_errors >= self.max_consecutive_errors:  # tripped: nothing more is sent
            raise TooManyProviderErrors(
                f"{self._consecutive_errors} requests in a row failed; stopping. First error: {self.first_error}"
            )

    def _check_up(self, provider: Provider) -> None:
        """A provider marked down in this run gets nothing more while another is up: the record
        fails over at once."""
        if id(provider) in self._down and any(id(p) not in self._down for p, _ in self.providers):
            raise ProviderError(f"{provider.describe()} was marked down earlier in this run", transient=False)

    # ------------------------------------------------------------------ one record
    async def label(self, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Label one record: ("valid", row), ("invalid", row with every attempt) or ("skipped", record)."""
        if self.stop_reason:
            self.stats.skipped += 1
            return "skipped", {"id": record["id"]}
        item = self.prepare(record)
        self.stats.records += 1
        failures: list[dict[str, Any]] = []
        tried = self.provider
        for provider in self.route(item["id"]):
            tried = provider
            try:
                return await self._label_with(provider, item)
            except BudgetReached:
                self.stats.records -= 1
                self.stats.skipped += 1
                return "skipped", {"id": record["id"]}
            except TooManyProviderErrors:
                raise
            except ProviderError as e:
                self.first_error = self.first_error or str(e)
                failures.extend(getattr(e, "attempts", ()))  # answers it got before the failure
                failures.append({"oracle": provider.describe(), "reason": "provider_error", "detail": str(e)})
                if len(self.providers) > 1 and id(provider) not in self._down:
                    # down (or out of quota) after its retries: fail over for the rest of the run
                    self._down.add(id(provider))
                    self.events.emit("provider_down", oracle=provider.describe(), error=str(e)[:200])
        self.stats.provider_errors += 1
        return self._invalid(item, failures, "provider_error", tried)

    async def follow_up(self, item: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Continue a labelled record's conversation: ``item`` is the label row with ``messages`` extended
        by the oracle's answer and a further user turn (a reviewer's repair instruction). The new answer
        is validated, re-asked and cached like any other, from the oracle the record is routed to."""
        return await self._label_with(self.route(item["id"])[0], item)

    async def _label_with(self, provider: Provider, item: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        conversation = self.conversation(item)
        context = provider.cfg.request_context(item)
        usage = {"input_tokens": 0, "output_tokens": 0}
        while (messages := conversation.messages()) is not None:
            try:
                response, cached = await self._ask(provider, messages, item["id"], conversation.schema, context)
            except ProviderError as e:
                e.attempts = conversation.attempts  # the invalid record keeps the answers not accepted
                raise
            self._consecutive_errors = 0
            self.stats.attempts += 1
            usage["input_tokens"] += response.input_tokens
            usage["output_tokens"] += response.output_tokens
            conversation.answer(response, cached)
        if not conversation.valid:
            return self._invalid(item, conversation.attempts, conversation.reason, provider)
        self.stats.valid += 1
        row = {
            "id": item["id"],
            "title": item["title"],
            "text": item["text"],
            "metadata": item.get("metadata", {}),
            "messages": item["messages"],
            **self.spec.labelled(conversation.result, item),
            "oracle": provider.describe(),
            "attempts": conversation.answers,
            "usage": usage,
        }
        if item.get("gold") is not None and type(self.spec).gold_agrees is not FilterSpec.gold_agrees:
            # the record's golden answer checks the oracle too (for a kind that compares with gold)
            agrees = self.spec.gold_agrees(row, item["gold"])
            if agrees is not None:
                row["gold"], row["gold_agrees"] = item["gold"], agrees
                self.stats.gold_checked += 1
                self.stats.gold_agreed += int(agrees)
            else:
                self.stats.gold_unusable += 1
                self.first_unusable_gold = self.first_unusable_gold or item["id"]
        return "valid", row

    def _invalid(
        self, item: dict[str, Any], attempts: list[dict[str, Any]], reason: str, provider: Provider
    ) -> tuple[str, dict[str, Any]]:
        self.stats.invalid += 1
        self.stats.invalid_reasons[reason] = self.stats.invalid_reasons.get(reason, 0) + 1
        self.events.emit("invalid", id=item["id"], reason=reason, oracle=provider.describe())
        return "invalid", {
            "id": item["id"],
            "reason": reason,
            "oracle": provider.describe(),
            "messages": item["messages"],
            "attempts": attempts,
        }

    # ------------------------------------------------------------------ a stream of records
    def _until_stopped(self, records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for record in records:
            if self.stop_reason:
                return
            yield record

    async def run(
        self, records: Iterable[dict[str, Any]], concurrency: int
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Label a stream, at most ``concurrency`` requests in flight, output in input order.

        With a scheduler, its adaptive concurrency is what bounds requests in flight, so twice as
        many records may be in progress: one being validated or waiting for its cache commit, or
        having its next prompt rendered, does not hold a request's place (at 50 ms of latency that
        place would otherwise idle for a few ms of client work per request).
        """
        records_in_progress = concurrency * 2 if self.scheduler is not None else concurrency
        async for outcome in ordered_bounded_map(
            self._until_stopped(records), self.label, records_in_progress, window=concurrency * 4
        ):
            yield outcome
