"""The labelling engine: render, ask (through the cache), validate, re-ask with the error, score.

For each record the engine sends the rendered prompt, validates the answer against the filter's schema
and, when it fails, re-asks in the same conversation with the validator's message, up to
``max_attempts``. Every request goes through the response cache first, so a rerun (or a run resumed after
a kill) replays finished conversations for free and only pays for what was never answered.

Records stream in; at most ``concurrency`` requests are in flight and at most a bounded window of
records is held, so memory does not grow with the corpus. Results come out in input order, which keeps
the materialised output deterministic.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from distill.compress import compress
from distill.filterspec import FilterSpec
from distill.oracle.base import ChatRequest, ChatResponse, Provider, ProviderError
from distill.oracle.cache import ResponseCache, request_key
from distill.validate import Invalid, check

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class LabelStats:
    records: int = 0
    requests: int = 0  # sent to the provider (paid)
    cache_hits: int = 0
    attempts: int = 0  # answers examined, cached or not
    valid: int = 0
    invalid: int = 0
    provider_errors: int = 0
    input_tokens: int = 0  # of paid requests
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cached_output_tokens: int = 0
    invalid_reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TooManyProviderErrors(ProviderError):
    pass


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


class Labeler:
    def __init__(
        self,
        spec: FilterSpec,
        provider: Provider,
        cache: ResponseCache,
        *,
        max_words: int,
        max_attempts: int,
        temperature: float = 0.0,
        max_tokens: int = 384,
        seed: int | None = 0,
        max_consecutive_errors: int = 20,
    ):
        self.spec = spec
        self.provider = provider
        self.cache = cache
        self.max_words = max_words
        self.max_attempts = max_attempts
        self.gen = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
        self.identity = provider.cache_identity()
        self.stats = LabelStats()
        self.max_consecutive_errors = max_consecutive_errors
        self._consecutive_errors = 0
        self.first_error: str | None = None

    def prepare(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record as the oracle sees it: text compressed, prompt rendered."""
        compressed = {**record, "text": compress(record["text"], self.max_words)}
        compressed["messages"] = self.spec.render(compressed)
        return compressed

    async def _ask(self, messages: list[dict[str, str]]) -> tuple[ChatResponse, bool]:
        request = ChatRequest(messages=messages, schema=self.spec.json_schema, **self.gen)
        key = request_key(self.identity, request)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            self.stats.cached_input_tokens += cached.input_tokens
            self.stats.cached_output_tokens += cached.output_tokens
            return cached, True
        response = await self.provider.complete(request)
        self.cache.put(key, self.provider.name, self.provider.model, response)
        self.stats.requests += 1
        self.stats.input_tokens += response.input_tokens
        self.stats.output_tokens += response.output_tokens
        return response, False

    async def label(self, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Label one record: ("valid", label row) or ("invalid", invalid row with every attempt)."""
        item = self.prepare(record)
        conversation = list(item["messages"])
        attempts: list[dict[str, Any]] = []
        usage = {"input_tokens": 0, "output_tokens": 0}
        self.stats.records += 1
        for n in range(1, self.max_attempts + 1):
            try:
                response, cached = await self._ask(conversation)
            except ProviderError as e:
                self.stats.provider_errors += 1
                self._consecutive_errors += 1
                self.first_error = self.first_error or str(e)
                attempts.append({"attempt": n, "reason": "provider_error", "detail": str(e)})
                if self._consecutive_errors >= self.max_consecutive_errors:
                    raise TooManyProviderErrors(
                        f"{self._consecutive_errors} requests in a row failed; stopping. First error: {self.first_error}"
                    ) from None
                return self._invalid(item, attempts, "provider_error")
            self._consecutive_errors = 0
            self.stats.attempts += 1
            usage["input_tokens"] += response.input_tokens
            usage["output_tokens"] += response.output_tokens
            result = check(response.text, self.spec.json_schema, response.finish_reason)
            if not isinstance(result, Invalid):
                self.stats.valid += 1
                label = {name: result[name] for name in [*self.spec.dimension_names, "reasoning"]}
                scores = {name: result[name] for name in self.spec.dimension_names}
                overall, tier = self.spec.score(scores)
                return "valid", {
                    "id": item["id"],
                    "title": item["title"],
                    "text": item["text"],
                    "metadata": item.get("metadata", {}),
                    "messages": item["messages"],
                    "label": label,
                    "scores": scores,
                    "overall": overall,
                    "tier": tier,
                    "oracle": self.provider.describe(),
                    "attempts": n,
                    "usage": usage,
                }
            attempts.append({
                "attempt": n, "reason": result.reason, "detail": result.detail,
                "finish_reason": response.finish_reason, "text": response.text, "cached": cached,
            })
            conversation = [
                *conversation,
                {"role": "assistant", "content": response.text or ""},
                {"role": "user", "content": result.feedback},
            ]
        return self._invalid(item, attempts, attempts[-1]["reason"])

    def _invalid(self, item: dict[str, Any], attempts: list[dict[str, Any]], reason: str) -> tuple[str, dict[str, Any]]:
        self.stats.invalid += 1
        self.stats.invalid_reasons[reason] = self.stats.invalid_reasons.get(reason, 0) + 1
        return "invalid", {
            "id": item["id"], "reason": reason, "oracle": self.provider.describe(),
            "messages": item["messages"], "attempts": attempts,
        }

    async def run(self, records: Iterable[dict[str, Any]], concurrency: int) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        async for outcome in ordered_bounded_map(records, self.label, concurrency):
            yield outcome

