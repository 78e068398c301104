"""The batch APIs behind ``label.mode=batch``, one backend per provider.

See :mod:`distill.oracle.batch` for how they are used.

A backend turns cache keys and :class:`ChatRequest` objects into one provider batch job, polls it,
and reads its results back as :class:`ChatResponse` objects exactly as the online provider would
have read the same answer, so the cache holds the same thing either way.

- OpenAI's Batch API: a JSONL file (``{"custom_id", "method": "POST", "url":
  "/v1/chat/completions", "body"}``, the body the online provider sends) uploaded with
  ``files.create(purpose="batch")``, ``batches.create(endpoint="/v1/chat/completions",
  completion_window="24h")``, polled with ``batches.retrieve``; results in the output and error
  files (``files.content``). Limits: 50,000 requests and 200 MB per batch.
- The Gemini API's batch mode through google-genai: ``client.batches.create(model, src=[inlined
  requests], config={"display_name"})`` (POST
  ``{base_url}/{version}/models/{model}:batchGenerateContent``), polled with
  ``client.batches.get`` (GET ``{base_url}/{version}/batches/{id}``); each inlined request
  carries ``metadata={"key": cache key}`` and its response comes back inline with that metadata
  (by position when a response has none). Inlined requests are limited to 20 MB per batch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from distill.errors import ConfigError
from distill.oracle.base import ChatRequest, ChatResponse, Provider, ProviderError

log = logging.getLogger("distill")

#: job states: still running, or terminal
PENDING, COMPLETED, FAILED, EXPIRED, CANCELLED, LOST = (
    "pending",
    "completed",
    "failed",
    "expired",
    "cancelled",
    "lost",
)


def _short(text: Any, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class Item:
    key: str
    payload: Any
    nbytes: int


@dataclass
class JobStatus:
    state: str  # PENDING or a terminal state
    detail: str | None = None
    raw: Any = None  # the provider's job object
    provider_state: str | None = None  # the provider's word for it (in_progress, JOB_STATE_RUNNING)

    @property
    def done(self) -> bool:
        return self.state != PENDING


class BatchBackend:
    """One provider's batch API. ``submit`` returns (job id, input file id or None)."""

    kind = ""
    max_items = 50_000
    max_bytes = 190 * 1024 * 1024

    def __init__(self, provider: Provider, retries: int):
        self.provider = provider

    def item(self, key: str, request: ChatRequest) -> Item:
        raise NotImplementedError

    def submit(self, items: list[Item], note: str) -> tuple[str, str | None]:
        raise NotImplementedError

    def poll(self, job_id: str) -> JobStatus:
        raise NotImplementedError

    def collect(
        self, job_id: str, status: JobStatus, keys: list[str]
    ) -> tuple[dict[str, ChatResponse], dict[str, str]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def openai_body(provider: Provider, request: ChatRequest) -> dict[str, Any]:
    """The chat-completions body the online OpenAI providers send for ``request``."""
    body: dict[str, Any] = {
        "model": provider.model,
        "messages": request.messages,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
    }
    mode = provider.cfg.structured_output
    if mode == "json_schema":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "label", "schema": request.schema, "strict": True},
        }
    elif mode == "json_object":
        body["response_format"] = {"type": "json_object"}
    if request.seed is not None:
        body["seed"] = request.seed
    return body


def openai_response(provider: Provider, body: Any) -> ChatResponse:
    """A chat-completion body read as the online providers read it (ProviderError: no answer)."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        error = body.get("error") if isinstance(body, dict) else None
        raise ProviderError(
            f"{provider.describe()} answered without a completion: {_short(error or 'no choices')}"
        )
    choice = choices[0]
    message = choice.get("message")
    usage = body.get("usage") or {}
    return ChatResponse(
        text=message.get("content") if isinstance(message, dict) else None,
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        finish_reason=choice.get("finish_reason"),
        model=body.get("model") or provider.model,
    )


class OpenAIBatch(BatchBackend):
    """OpenAI's Batch API: upload a JSONL file (purpose ``batch``), create a batch on
    ``/v1/chat/completions`` with a 24 h window, poll it, read its output and error files."""

    kind = "openai"
    max_items = 50_000  # per batch
    max_bytes = 190 * 1024 * 1024  # the input file may be 200 MB
    _DONE: ClassVar[dict[str, str]] = {
        "completed": COMPLETED,
        "failed": FAILED,
        "expired": EXPIRED,
        "cancelled": CANCELLED,
    }

    def __init__(self, provider: Provider, retries: int):
        super().__init__(provider, retries)
        try:
            import openai
        except ImportError as e:
            raise ConfigError(
                "label.mode=batch with oracle.provider=openai needs the openai SDK: "
                "`pip install openai`"
            ) from e
        cfg = provider.cfg
        self._openai = openai
        self.client = openai.OpenAI(
            api_key=cfg.api_key(),
            base_url=cfg.base_url,
            timeout=cfg.request_timeout_s,
            max_retries=retries,
        )

    def _call(self, what: str, fn, *args, **kwargs):
        openai = self._openai
        try:
            return fn(*args, **kwargs)
        except openai.APIStatusError as e:
            raise ProviderError(
                f"{self.provider.describe()} batch {what}: HTTP {e.status_code}: "
                f"{_short(e.message)}",
                status=e.status_code,
            ) from None
        except openai.APIError as e:
            raise ProviderError(
                f"{self.provider.describe()} batch {what}: {type(e).__name__}: {_short(e)}"
            ) from None

    def item(self, key: str, request: ChatRequest) -> Item:
        line = {
            "custom_id": key,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": openai_body(self.provider, request),
        }
        data = (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        return Item(key, data, len(data))

    def submit(self, items: list[Item], note: str) -> tuple[str, str | None]:
        data = b"".join(i.payload for i in items)
        uploaded = self._call(
            "upload",
            self.client.files.create,
            file=(f"{note}.jsonl", data, "application/jsonl"),
            purpose="batch",
        )
        batch = self._call(
            "create",
            self.client.batches.create,
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"distill": note},
        )
        return batch.id, uploaded.id

    def poll(self, job_id: str) -> JobStatus:
        try:
            batch = self._call("poll", self.client.batches.retrieve, job_id)
        except ProviderError as e:
            if e.status == 404:
                return JobStatus(LOST, str(e), provider_state="not found")
            raise
        state = self._DONE.get(batch.status, PENDING)
        detail = None
        if batch.errors and batch.errors.data:
            detail = "; ".join(f"{err.code}: {err.message}" for err in batch.errors.data[:3])
        return JobStatus(state, detail, batch, batch.status)

    def _lines(self, file_id: str | None) -> Iterable[dict[str, Any]]:
        if not file_id:
            return
        try:
            content = self._call("download", self.client.files.content, file_id)
        except ProviderError as e:
            if e.status != 404:
                raise
            log.warning(
                "label batch: result file %s is gone (%s); its requests go into the next round",
                file_id,
                e,
            )
            return
        for line in content.text.splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:  # its request, if any, is missing from the results: resubmitted
                log.warning("label batch: unreadable line in %s: %s", file_id, _short(line, 120))
                continue
            if isinstance(row, dict):
                yield row

    def collect(
        self, job_id: str, status: JobStatus, keys: list[str]
    ) -> tuple[dict[str, ChatResponse], dict[str, str]]:
        answers: dict[str, ChatResponse] = {}
        errors: dict[str, str] = {}
        batch = status.raw
        if batch is None:
            return answers, errors
        for row in [*self._lines(batch.output_file_id), *self._lines(batch.error_file_id)]:
            key = row.get("custom_id")
            if not key:
                continue
            response = row.get("response") or {}
            code = response.get("status_code")
            if row.get("error") or code != 200:
                error = row.get("error") or (response.get("body") or {}).get("error") or {}
                errors[key] = (
                    f"HTTP {code}: {_short(error.get('message') or error)}"
                    if code
                    else f"{error.get('code')}: {_short(error.get('message'))}"
                )
                continue
            try:
                answers[key] = openai_response(self.provider, response.get("body"))
            except ProviderError as e:
                errors[key] = str(e)
        return answers, errors

    def close(self) -> None:
        self.client.close()


class GeminiBatch(BatchBackend):
    """The Gemini API's batch mode through google-genai: ``client.batches.create(model, src=[inlined
    requests])`` (POST ``{base_url}/{version}/models/{model}:batchGenerateContent``), polled with
    ``client.batches.get`` (GET ``{base_url}/{version}/batches/{id}``); responses come back inline
    in the job, each with the request's ``metadata`` (``{"key": cache key}``)."""

    kind = "gemini"
    max_items = 50_000
    max_bytes = 19 * 1024 * 1024  # inlined requests: 20 MB per batch
    _DONE: ClassVar[dict[str, str]] = {
        "JOB_STATE_SUCCEEDED": COMPLETED,
        "JOB_STATE_PARTIALLY_SUCCEEDED": COMPLETED,
        "JOB_STATE_FAILED": FAILED,
        "JOB_STATE_EXPIRED": EXPIRED,
        "JOB_STATE_CANCELLED": CANCELLED,
    }

    def __init__(self, provider: Provider, retries: int):
        super().__init__(provider, retries)
        try:
            from google import genai
            from google.genai import errors, types
        except ImportError as e:
            raise ConfigError(
                "label.mode=batch with oracle.provider=gemini needs Google's google-genai SDK: "
                "`pip install google-genai`"
            ) from e
        cfg = provider.cfg
        self._types, self._errors = types, errors
        options = types.HttpOptions(
            base_url=cfg.base_url,
            timeout=int(cfg.request_timeout_s * 1000),
            retry_options=types.HttpRetryOptions(
                attempts=retries + 1,
                initial_delay=getattr(provider, "retry_initial_delay_s", 1.0),
                max_delay=getattr(provider, "retry_max_delay_s", 60.0),
                jitter=getattr(provider, "retry_jitter_s", 1.0),
            ),
        )
        self.client = genai.Client(api_key=cfg.api_key(), vertexai=False, http_options=options)

    def _call(self, what: str, fn, *args, **kwargs):
        from distill.oracle.gemini import _transport_errors

        try:
            return fn(*args, **kwargs)
        except self._errors.APIError as e:
            raise ProviderError(
                f"{self.provider.describe()} batch {what}: HTTP {e.code}: "
                f"{_short(e.message or e.status)}",
                status=e.code,
            ) from None
        except _transport_errors() as e:
            raise ProviderError(
                f"{self.provider.describe()} batch {what}: {type(e).__name__}: {_short(e)}"
            ) from None

    def item(self, key: str, request: ChatRequest) -> Item:
        contents, config = self.provider._contents_and_config(request)
        inlined = self._types.InlinedRequest(
            contents=contents, config=config, metadata={"key": key}
        )
        return Item(key, inlined, len(inlined.model_dump_json(exclude_none=True)))

    def submit(self, items: list[Item], note: str) -> tuple[str, str | None]:
        job = self._call(
            "create",
            self.client.batches.create,
            model=self.provider.model,
            src=[i.payload for i in items],
            config={"display_name": note},
        )
        return job.name, None

    def poll(self, job_id: str) -> JobStatus:
        try:
            job = self._call("poll", self.client.batches.get, name=job_id)
        except ProviderError as e:
            if e.status == 404:
                return JobStatus(LOST, str(e), provider_state="not found")
            raise
        raw_state = str(getattr(job.state, "value", job.state))
        state = self._DONE.get(raw_state, PENDING)
        detail = f"{job.error.code}: {job.error.message}" if job.error is not None else None
        if detail is None and state not in (PENDING, COMPLETED):
            detail = raw_state
        return JobStatus(state, detail, job, raw_state)

    def collect(
        self, job_id: str, status: JobStatus, keys: list[str]
    ) -> tuple[dict[str, ChatResponse], dict[str, str]]:
        answers: dict[str, ChatResponse] = {}
        errors: dict[str, str] = {}
        job = status.raw
        responses = (
            job.dest.inlined_responses if job is not None and job.dest is not None else None
        ) or []
        for i, inlined in enumerate(responses):
            key = (inlined.metadata or {}).get("key") or (keys[i] if i < len(keys) else None)
            if not key:
                continue
            if inlined.error is not None or inlined.response is None:
                err = inlined.error
                errors[key] = f"{err.code}: {_short(err.message)}" if err else "no response"
                continue
            try:
                answers[key] = self.provider._response(inlined.response)
            except ProviderError as e:
                errors[key] = str(e)
        return answers, errors

    def close(self) -> None:
        self.client.close()


BACKENDS: dict[str, type[BatchBackend]] = {"openai": OpenAIBatch, "gemini": GeminiBatch}


def backend_for(provider: Provider, retries: int) -> BatchBackend:
    cls = BACKENDS.get(provider.name)
    if cls is None:
        raise ConfigError(
            f"label.mode=batch is not available for oracle.provider={provider.name} "
            f"(batch APIs: {', '.join(BACKENDS)}); use label.mode=online"
        )
    return cls(provider, retries)
