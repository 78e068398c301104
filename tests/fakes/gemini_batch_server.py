"""The fake Gemini server plus the Gemini API's batch mode, for batch-mode tests.

google-genai 3.x (Gemini Developer API, ``vertexai=False``) sends, with a custom ``base_url``:

- ``client.batches.create(model=m, src=[inlined requests], config={"display_name": ...})``:
  ``POST {base_url}/{version}/models/{m}:batchGenerateContent`` with
  ``{"batch": {"displayName", "inputConfig": {"requests": {"requests": [{"request": {contents,
  systemInstruction, generationConfig}, "metadata": {...}}]}}}}``;
- ``client.batches.get(name="batches/{id}")``: ``GET {base_url}/{version}/batches/{id}``.

Both answer a long-running operation: ``{"name": "batches/{id}", "metadata": {"state":
"BATCH_STATE_...", "model", "displayName", "createTime", "updateTime", "output":
{"inlinedResponses": {"inlinedResponses": [{"response" | "error", "metadata"}]}}}, "done"}``; the
SDK reads ``name`` and ``metadata`` into a ``BatchJob`` (``state`` becomes ``JOB_STATE_...``).

A batch reports ``BATCH_STATE_RUNNING`` for its first ``polls_to_complete`` polls; the next poll
processes it (once). Each inlined request is answered by the parent's responder logic
(``responder(request)``, with ``item_faults`` keyed by the 1-based item number across all batches
overriding it) rendered as ``generateContent`` would answer it; a reply whose status is not 200, or
``fail_item(metadata, request)`` returning a message, becomes an inlined ``error``.
``job_outcomes`` maps the 1-based batch number to ``"failed"``, ``"expired"`` or ``"cancelled"``
(the first ``partial_items`` requests answered, no results for the rest). ``echo_metadata=False``
leaves the requests' metadata out of the responses (results then map back by position).

What it saw: ``submissions``, ``submitted`` (each batch's request keys), ``polls``, ``items``,
``batch_requests`` (each processed request with
its metadata), ``api_calls``, and the parent's ``count``/``requests`` for online calls only.

The knobs, the job book and polling are shared: :class:`tests.fakes._batch.BatchServer`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from tests.fakes._batch import ApiCall, BatchServer
from tests.fakes._server import lower_headers, read_body
from tests.fakes.gemini_server import FakeGemini, _error_response

CREATE_PATH = re.compile(
    r"^/(?P<version>v1[a-z0-9]*)/models/(?P<model>[^/:]+):batchGenerateContent$"
)
GET_PATH = re.compile(r"^/(?P<version>v1[a-z0-9]*)/batches/(?P<id>[^/:]+)$")

_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main."
_STATES = {
    "completed": "BATCH_STATE_SUCCEEDED",
    "failed": "BATCH_STATE_FAILED",
    "expired": "BATCH_STATE_EXPIRED",
    "cancelled": "BATCH_STATE_CANCELLED",
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class FakeGeminiBatch(BatchServer, FakeGemini):
    """``fail_item(metadata, request)``; the other knobs and counters: :class:`BatchServer`."""

    def __init__(
        self,
        responder: Callable[[dict[str, Any]], Any] | None = None,
        *,
        echo_metadata: bool = True,
        **kw: Any,
    ):
        super().__init__(responder, **kw)
        self.echo_metadata = echo_metadata
        self._inputs: dict[str, list[dict[str, Any]]] = {}

    # ------------------------------------------------------------------ what tests read
    @property
    def submitted(self) -> list[list[str | None]]:
        """The ``metadata.key`` of each request of each batch created, in creation order."""
        with self._batch_lock:
            inputs = [self._inputs[b] for b in self._batch_order]
        return [[(r.get("metadata") or {}).get("key") for r in requests] for requests in inputs]

    # ------------------------------------------------------------------ routing
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        create = CREATE_PATH.match(request.path) if request.method == "POST" else None
        get = GET_PATH.match(request.path) if request.method == "GET" else None
        if not create and not get:
            return await super()._handle(request)
        body = await read_body(request)
        headers = lower_headers(request)
        self._record_call(ApiCall(request.method, request.path, headers, body))
        if not headers.get("x-goog-api-key"):
            return _error_response(401, "API key not valid (fake)")
        if create:
            return self._batch_create(create.group("model"), body)
        return self._batch_get(get.group("id"))

    # ------------------------------------------------------------------ batches
    def _batch_create(self, model: str, body: Any) -> web.Response:
        batch = body.get("batch") if isinstance(body, dict) else None
        requests = (((batch or {}).get("inputConfig") or {}).get("requests") or {}).get("requests")
        if not isinstance(requests, list) or not requests:
            return _error_response(
                400, "batch.inputConfig.requests.requests must list the requests"
            )
        if not all(isinstance(r, dict) and isinstance(r.get("request"), dict) for r in requests):
            return _error_response(400, "every inlined request needs a 'request' object")
        batch_id = uuid.uuid4().hex[:16]
        name = f"batches/{batch_id}"
        op = {
            "name": name,
            "metadata": {
                "@type": _TYPE + "GenerateContentBatch",
                "model": f"models/{model}",
                "displayName": batch.get("displayName", ""),
                "createTime": _now(),
                "updateTime": _now(),
                "state": "BATCH_STATE_PENDING",
                "name": name,
                "batchStats": {
                    "requestCount": str(len(requests)),
                    "pendingRequestCount": str(len(requests)),
                },
            },
        }
        with self._batch_lock:
            self._inputs[batch_id] = requests
        self._add_job(batch_id, op)
        return web.json_response(op)

    def _batch_get(self, batch_id: str) -> web.Response:
        op = self._poll(batch_id)
        if op is None:
            return _error_response(404, f"Batch batches/{batch_id} not found")
        return web.json_response(op)

    def _job_finished(self, job: dict[str, Any]) -> bool:
        return bool(job.get("done"))

    def _job_running(self, job: dict[str, Any]) -> None:
        job["metadata"].update(state="BATCH_STATE_RUNNING", updateTime=_now())

    def _job_process(self, batch_id: str, op: dict[str, Any], outcome: str | None) -> None:
        meta = op["metadata"]
        with self._batch_lock:
            requests = self._inputs[batch_id]
        op["done"] = True
        meta.update(state=_STATES[outcome or "completed"], updateTime=_now(), endTime=_now())
        if outcome == "failed":
            op["error"] = {"code": 13, "message": "fake batch failure"}
            return
        keep = len(requests) if outcome is None else self.partial_items
        responses = [self._batch_answer(batch_id, meta["model"], r) for r in requests[:keep]]
        if responses:
            output = {"inlinedResponses": {"inlinedResponses": responses}}
            meta["output"] = output
            op["response"] = {
                "@type": _TYPE + "GenerateContentBatchOutput",
                **output,
            }
        ok = sum(1 for r in responses if "response" in r)
        meta["batchStats"] = {
            "requestCount": str(len(requests)),
            "successfulRequestCount": str(ok),
            "failedRequestCount": str(len(requests) - ok),
        }

    def _batch_answer(self, batch_id: str, model: str, inlined: dict[str, Any]) -> dict[str, Any]:
        body = inlined["request"]
        metadata = inlined.get("metadata") or {}
        n = self._take_item({"request": body, "metadata": metadata, "batch": f"batches/{batch_id}"})
        row: dict[str, Any] = {"metadata": metadata} if self.echo_metadata and metadata else {}
        message = self.fail_item(metadata, body) if self.fail_item else None
        if message:
            row["error"] = {"code": 13, "message": message}
            return row
        reply = self._item_reply(body, n)
        if reply.status != 200:
            row["error"] = {"code": reply.status, "message": reply.error_message}
            return row
        path = f"/v1/{model}:generateContent"  # the model name as generateContent reports it
        row["response"] = json.loads(self._render(reply, body, n, path).body)
        return row
