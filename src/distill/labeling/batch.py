"""Batch mode (``label.mode=batch``): fill the response cache through a provider's batch API.

Batch APIs answer within hours at a discount (``oracle.price.batch_discount``, half price at OpenAI
and Google). This module does not write labels: it puts every answer into the response cache under
exactly the key the online engine uses (:meth:`Labeler.key_for` of :meth:`Labeler.request_for`), so
the online pass that :func:`distill.pipeline.label` runs afterwards materialises ``labels.jsonl``
from the cache without a single request, byte for byte what an online run writes.

It works in rounds. Each round streams the input, replays every record's conversation from the
cache exactly as :meth:`Labeler._label_with` would (first request; when the cached answer fails
validation and attempts remain, the conversation plus that answer plus the validator's feedback),
and collects the requests that are not cached yet: round 1 holds every first request, round 2 the
re-asks that carry the validation error, and so on. Requests go out in chunks
(``label.batch_chunk_size``, and the provider's size limit) with the cache key as the request id.

A job ledger (SQLite, ``<cache_path>.batches.sqlite``, outside the DVC outputs like the cache) keeps
every submitted job and its request ids. A rerun first polls the jobs still pending instead of
resubmitting their requests; requests whose job failed, expired or was cancelled, that came back in
the error file or were missing from the output, are not cached and so are submitted again in the
next round (only those), up to ``label.batch_max_resubmits`` times per run. After
``label.batch_timeout_s`` the run stops waiting and raises, leaving the jobs in the ledger for the
next run to poll.

Backends (each provider module's ``Batch``, found through :mod:`distill.providers.registry`): OpenAI's
Batch API (``/v1/files`` + ``/v1/batches``, JSONL with ``custom_id``) and the Gemini API's batch mode
(``models/{model}:batchGenerateContent`` with inlined requests whose ``metadata.key`` carries the
id; results come back inline).

Length: over 400 lines because :class:`BatchRun` is one state machine (rounds, budget, submission,
polling, collection share its in-flight bookkeeping); the ledger lives in :mod:`distill.labeling.ledger`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill import jsonl
from distill.config import LabelConfig
from distill.errors import DistillError
from distill.filterspec import FilterSpec
from distill.labeling.budget import Budget, request_cost
from distill.labeling.build import build_labeler, providers_for
from distill.labeling.cache import ResponseCache
from distill.labeling.engine import estimate_tokens
from distill.labeling.events import Events
from distill.labeling.ledger import Job, Ledger, ledger_path
from distill.providers import ChatRequest, Pricing, Provider, ProviderConfig, ProviderError
from distill.providers.base import PENDING, BatchBackend, BatchItem, JobStatus, short
from distill.providers.registry import batch_backend

log = logging.getLogger("distill")


# ----------------------------------------------------------------------------- the run
@dataclass
class _Chunk:
    items: list[BatchItem] = field(default_factory=list)
    nbytes: int = 0
    reserved: float = 0.0


class BatchRun:
    def __init__(
        self,
        label_cfg: LabelConfig,
        spec: FilterSpec,
        input_path: Path,
        providers: list[tuple[Provider, float]],
        backends: dict[str, BatchBackend],
        cache: ResponseCache,
        ledger: Ledger,
        events: Events,
    ):
        self.chunk_size = label_cfg.batch_chunk_size
        self.poll_s = label_cfg.batch_poll_s
        self.timeout_s = label_cfg.batch_timeout_s
        self.max_resubmits = label_cfg.batch_max_resubmits
        self.spec = spec
        self.input_path = input_path
        self.providers = {p.describe(): p for p, _ in providers}
        self.backends = backends
        self.cache = cache
        self.ledger = ledger
        self.events = events
        # the requests (and so the cache keys) of the online engine for the main oracle's settings
        self.labeler = build_labeler(spec, providers[0][0].cfg, label_cfg, cache, providers=providers,
                                     limits=False)
        self.budget = Budget(label_cfg.budget_usd)
        self.stop_reason: str | None = None
        self.inflight: dict[str, Job] = {}
        # a key may sit in two jobs (an earlier run's and a resubmission)
        self.inflight_keys: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()  # failed batch items per key, this run
        self.first_error: str | None = None
        self.round = ledger.max_round()
        self.t0 = time.monotonic()
        self.stats: dict[str, Any] = {
            "rounds": 0,
            "jobs_submitted": 0,
            "jobs_resumed": 0,
            "jobs_completed": 0,
            "jobs_failed": 0,
            "jobs_expired": 0,
            "jobs_cancelled": 0,
            "jobs_lost": 0,
            "requests_submitted": 0,
            "answers": 0,
            "items_failed": 0,
            "polls": 0,
            "poll_errors": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": 0.0,
            "full_price_usd": 0.0,
            "saved_usd": 0.0,
            "by_provider": {},
        }

    # ------------------------------------------------------------------ pricing
    def _price(self, provider: Provider) -> Pricing:
        return self.labeler.price(provider)

    def _reservation(self, provider: Provider, request: ChatRequest) -> float:
        price = self._price(provider)
        return request_cost(
            price, estimate_tokens(request.messages), request.max_tokens, price.batch_discount
        )

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict[str, Any]:
        for job in self.ledger.open_jobs():
            if job.oracle not in self.providers or job.backend not in (
                b.kind for b in self.backends.values()
            ):
                log.warning(
                    "label batch: job %s (%s) is pending but %s is not configured now; not polled",
                    job.job_id,
                    job.backend,
                    job.oracle,
                )
                continue
            self._track(job)
            self.budget.reserved += job.reserved_usd
            self.stats["jobs_resumed"] += 1
            self.events.emit(
                "batch_resumed",
                job=job.job_id,
                oracle=job.oracle,
                round=job.round,
                items=len(job.keys),
            )
        if self.inflight:
            log.info(
                "label batch: %d job(s) from an earlier run still pending (%d requests): "
                "polling them",
                len(self.inflight),
                len(self.inflight_keys),
            )
        while True:
            summary = self._scan_and_submit()
            if not self.inflight:
                break
            self._wait_all()
        summary.pop("records_waiting", None)  # nothing waits once the loop ends
        self.stats.update(summary)
        if summary["records_given_up"]:
            raise self._error(
                f"{summary['records_given_up']} record(s) still have no answer after "
                f"{self.max_resubmits + 1} batch submissions (first error: {self.first_error}). "
                "Answers so far are cached: rerun the stage to submit only those again, or set "
                "label.mode=online."
            )
        s = self.stats
        if s["jobs_submitted"] or s["jobs_resumed"]:
            log.info(
                "label batch: %d answer(s) from %d job(s) (%d resumed), %d in / %d out tokens, "
                "$%.4f at the batch discount (saved $%.4f)",
                s["answers"],
                s["jobs_submitted"] + s["jobs_resumed"],
                s["jobs_resumed"],
                s["input_tokens"],
                s["output_tokens"],
                s["cost_usd"],
                s["saved_usd"],
            )
        if self.stop_reason:
            raise self._error(
                f"{self.stop_reason}. {summary['records_pending']} record(s) not submitted. Raise "
                "label.budget_usd and rerun: answers so far are cached and will not be paid again."
            )
        return self.result()

    def _error(self, message: str) -> DistillError:
        err = DistillError(message)
        err.batch_metrics = self.result()  # type: ignore[attr-defined]
        return err

    def result(self) -> dict[str, Any]:
        out = dict(self.stats)
        for k in ("cost_usd", "full_price_usd", "saved_usd"):
            out[k] = round(out[k], 6)
        out["pending_jobs"] = len(self.inflight)
        out["ledger"] = str(self.ledger.path)
        out["seconds"] = round(time.monotonic() - self.t0, 3)
        return out

    # ------------------------------------------------------------------ one round
    def _scan_and_submit(self) -> dict[str, int]:
        """Replay every record from the cache; submit what is neither cached nor in flight."""
        labeler = self.labeler
        chunks: dict[str, _Chunk] = {}
        queued: set[str] = set()
        counts = Counter(
            records=0,
            records_valid=0,
            records_invalid=0,
            records_waiting=0,
            records_pending=0,
            records_given_up=0,
        )
        submitted_before = self.stats["requests_submitted"]
        self.round += 1
        for record in jsonl.read_jsonl(self.input_path):
            counts["records"] += 1
            item = labeler.prepare(record)
            provider = labeler.route(item["id"])[0]
            conversation = labeler.conversation(item)
            while (messages := conversation.messages()) is not None:
                request = labeler.request_for(messages, conversation.schema, provider.cfg.request_context(item))
                key = labeler.key_for(provider, request)
                cached = self.cache.get(key)
                if cached is None:
                    counts[self._enqueue(provider, key, request, chunks, queued)] += 1
                    break
                conversation.answer(cached, cached=True)
            if conversation.done:
                counts["records_valid" if conversation.valid else "records_invalid"] += 1
        for oracle, chunk in chunks.items():
            if chunk.items:
                self._submit(self.providers[oracle], chunk)
        submitted = self.stats["requests_submitted"] - submitted_before
        if submitted:
            self.stats["rounds"] += 1
            log.info(
                "label batch: round %d: %d request(s) submitted; %d of %d records done",
                self.round,
                submitted,
                counts["records_valid"] + counts["records_invalid"],
                counts["records"],
            )
        else:
            self.round -= 1
        return dict(counts)

    def _enqueue(
        self,
        provider: Provider,
        key: str,
        request: ChatRequest,
        chunks: dict[str, _Chunk],
        queued: set[str],
    ) -> str:
        if key in self.inflight_keys or key in queued:
            return "records_waiting"
        if self.failures[key] > self.max_resubmits:
            return "records_given_up"
        if self.stop_reason:
            return "records_pending"
        reservation = self._reservation(provider, request)
        if not self.budget.reserve(reservation):
            self.stop_reason = (
                f"budget reached: ${self.budget.spent:.4f} spent, ${max(0.0, self.budget.reserved):.4f} "
                f"in submitted batches, cap ${self.budget.cap:.4f}"
            )
            self.events.emit(
                "budget_reached", spent_usd=round(self.budget.spent, 6), cap_usd=self.budget.cap
            )
            log.warning("label batch: %s; no more requests are submitted", self.stop_reason)
            return "records_pending"
        backend = self.backends[provider.describe()]
        entry = backend.item(key, request)
        chunk = chunks.setdefault(provider.describe(), _Chunk())
        if chunk.items and (
            len(chunk.items) >= min(self.chunk_size, backend.max_items)
            or chunk.nbytes + entry.nbytes > backend.max_bytes
        ):
            self._submit(provider, chunk)
            chunk = chunks[provider.describe()] = _Chunk()
        chunk.items.append(entry)
        chunk.nbytes += entry.nbytes
        chunk.reserved += reservation
        queued.add(key)
        return "records_waiting"

    def _submit(self, provider: Provider, chunk: _Chunk) -> None:
        backend = self.backends[provider.describe()]
        note = f"distill-round{self.round}-{int(time.time())}"
        try:
            job_id, input_file = backend.submit(chunk.items, note)
        except ProviderError as e:
            self.budget.release(chunk.reserved)
            pending = (
                f" {len(self.inflight)} job(s) already submitted are kept in {self.ledger.path}; "
                "a rerun polls them."
                if self.inflight
                else ""
            )
            raise DistillError(
                f"submitting a batch of {len(chunk.items)} requests failed: {e}.{pending}"
            ) from None
        job = Job(
            job_id,
            backend.kind,
            provider.describe(),
            self.round,
            [i.key for i in chunk.items],
            chunk.reserved,
        )
        self.ledger.add(job, input_file)
        self._track(job)
        self.stats["jobs_submitted"] += 1
        self.stats["requests_submitted"] += len(job.keys)
        self.events.emit(
            "batch_submitted", job=job_id, oracle=job.oracle, round=self.round, items=len(job.keys)
        )
        log.info(
            "label batch: submitted %s (%s, round %d, %d requests)",
            job_id,
            job.oracle,
            self.round,
            len(job.keys),
        )

    def _track(self, job: Job) -> None:
        self.inflight[job.job_id] = job
        self.inflight_keys.update(job.keys)

    def _untrack(self, job: Job) -> None:
        del self.inflight[job.job_id]
        self.inflight_keys.subtract(job.keys)
        for key in job.keys:
            if self.inflight_keys[key] <= 0:
                del self.inflight_keys[key]

    # ------------------------------------------------------------------ waiting
    def _wait_all(self) -> None:
        while True:
            for job in list(self.inflight.values()):
                backend = self.backends[job.oracle]
                self.stats["polls"] += 1
                try:
                    status = backend.poll(job.job_id)
                    if status.done:
                        self._collect(job, backend, status)
                    elif status.provider_state != job.provider_state:
                        job.provider_state = status.provider_state
                        self.ledger.set_state(job.job_id, PENDING, status.provider_state)
                except ProviderError as e:
                    self.stats["poll_errors"] += 1
                    if not e.transient:
                        raise self._error(
                            f"polling batch job {job.job_id} failed: {e}. The job is kept in "
                            f"{self.ledger.path}: fix the cause and rerun the stage to poll it "
                            "again."
                        ) from None
                    # the control plane hiccupped: try again at the next poll
                    log.warning("label batch: polling %s failed (%s); retrying", job.job_id, e)
            if not self.inflight:
                return
            elapsed = time.monotonic() - self.t0
            if self.timeout_s is not None and elapsed >= self.timeout_s:
                ids = ", ".join(sorted(self.inflight)[:5]) + (
                    " ..." if len(self.inflight) > 5 else ""
                )
                raise self._error(
                    f"{len(self.inflight)} batch job(s) still pending after {elapsed:.0f}s "
                    f"(label.batch_timeout_s={self.timeout_s:g}): {ids}. They are kept in "
                    f"{self.ledger.path}: rerun the stage to poll them (nothing is submitted "
                    "twice)."
                )
            wait = self.poll_s
            if self.timeout_s is not None:
                wait = min(wait, max(0.0, self.timeout_s - elapsed))
            time.sleep(wait)

    def _collect(self, job: Job, backend: BatchBackend, status: JobStatus) -> None:
        answers, errors = backend.collect(job.job_id, status, job.keys)
        provider = self.providers[job.oracle]
        price = self._price(provider)
        spent = 0.0
        stats = self.stats
        slot = stats["by_provider"].setdefault(
            job.oracle, {"requests": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
        )
        wanted = set(job.keys)
        for key, response in answers.items():
            if key not in wanted:
                continue
            self.cache.put(key, provider.name, provider.model, response)
            cost = request_cost(
                price, response.input_tokens, response.output_tokens, price.batch_discount
            )
            full = request_cost(price, response.input_tokens, response.output_tokens)
            spent += cost
            stats["answers"] += 1
            stats["input_tokens"] += response.input_tokens
            stats["output_tokens"] += response.output_tokens
            stats["cost_usd"] += cost
            stats["full_price_usd"] += full
            stats["saved_usd"] += full - cost
            slot["requests"] += 1
            slot["input_tokens"] += response.input_tokens
            slot["output_tokens"] += response.output_tokens
            slot["cost_usd"] = round(slot["cost_usd"] + cost, 6)
        failed = [k for k in job.keys if k not in answers]
        for key in failed:
            self.failures[key] += 1
        if failed:
            reason = (
                next((errors[k] for k in failed if k in errors), None)
                or status.detail
                or f"job {status.state}, no result"
            )
            self.first_error = self.first_error or reason
            stats["items_failed"] += len(failed)
            log.warning(
                "label batch: %s ended %s: %d of %d requests without an answer (%s); they go "
                "into the next round",
                job.job_id,
                status.state,
                len(failed),
                len(job.keys),
                short(reason, 160),
            )
        stats[f"jobs_{status.state}"] += 1
        self.budget.settle(job.reserved_usd, spent)
        self.ledger.close_job(
            job.job_id, status.state, len(job.keys) - len(failed), len(failed), status.detail
        )
        self.events.emit(
            "batch_done",
            job=job.job_id,
            oracle=job.oracle,
            state=status.state,
            answered=len(job.keys) - len(failed),
            failed=len(failed),
            cost_usd=round(spent, 8),
        )
        self._untrack(job)


def run_batch(
    label_cfg: LabelConfig,
    oracle_cfg: ProviderConfig,
    spec: FilterSpec,
    input_path: str | Path,
) -> dict[str, Any]:
    """Answer every request of ``input_path``'s conversations through the batch API into the cache.

    Returns counters (jobs, requests, answers, tokens, discounted cost, savings). Raises
    DistillError when jobs are still pending at ``label.batch_timeout_s`` (a rerun polls them),
    when requests failed in every batch they were sent in, or when the budget stopped
    submissions; the error's ``batch_metrics`` attribute holds the counters so far.
    """
    # every provider is built (and its key checked) before any upload
    providers = providers_for(oracle_cfg)
    retries = label_cfg.transport_retries
    backends: dict[str, BatchBackend] = {}
    try:
        for provider, _ in providers:
            backends[provider.describe()] = batch_backend(provider, retries)
        cache = ResponseCache(label_cfg.cache_path)
        ledger = Ledger(ledger_path(label_cfg.cache_path))
        events = Events(Path(label_cfg.output_dir) / "events.jsonl")
        try:
            run = BatchRun(
                label_cfg, spec, Path(input_path), providers, backends, cache, ledger, events
            )
            return run.run()
        finally:
            events.close()
            ledger.close()
            cache.close()
    finally:
        for backend in backends.values():
            backend.close()
