"""The fake OpenAI server plus the Files and Batches APIs, for batch-mode tests.

    with FakeOpenAIBatch(polls_to_complete=1) as srv:
        ...  # the SDK uploads a JSONL file, creates a batch, polls it, downloads the results

Routes added to :class:`~tests.fakes.openai_server.FakeOpenAI` (which still answers
``POST /v1/chat/completions`` for the online pass):

- ``POST /v1/files`` (multipart: ``file``, ``purpose``) and ``GET /v1/files/{id}/content``;
- ``POST /v1/batches`` (``input_file_id``, ``endpoint``, ``completion_window``, ``metadata``) and
  ``GET /v1/batches/{id}``.

A batch reports ``in_progress`` for its first ``polls_to_complete`` polls; the next poll processes
it (once) and reports its final state. Each line's ``body`` is answered by the parent's responder
logic (``responder(body)``, with ``item_faults`` keyed by the 1-based item number across all batches
overriding it), and the rendered chat completion goes into the output file; a reply whose status is
not 200 goes into the error file with that status, and ``fail_item(custom_id, body)`` returning an
error code puts the line into the error file without a response (as OpenAI reports a request it
could not run). ``job_outcomes`` maps the 1-based batch number to ``"failed"`` (nothing processed,
``errors`` set), ``"expired"`` or ``"cancelled"`` (the first ``partial_items`` lines answered, the
rest in the error file with code ``batch_expired`` / ``batch_cancelled``).

Invalid input (a line without a unique ``custom_id``, a method other than POST, a url other than the
batch's endpoint, a body that is not an object) fails the batch at validation, as OpenAI does.

What it saw: ``uploads`` (bytes of each uploaded file), ``submissions`` (batches created),
``polls``, ``submitted`` (the custom_ids of each batch), ``items`` (batch lines processed),
``batch_requests`` (each processed line's custom_id
and body), ``api_calls`` (every Files/Batches request) and ``count``/``requests`` of the parent for
online chat completions only.

The knobs, the job book and polling are shared: :class:`tests.fakes._batch.BatchServer`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from aiohttp import web

from tests.fakes._batch import ApiCall, BatchServer
from tests.fakes._server import lower_headers
from tests.fakes.openai_server import FakeOpenAI, _error_response

FILES_PATH = "/v1/files"
FILE_CONTENT = re.compile(r"^/v1/files/(?P<id>[^/]+)/content$")
BATCHES_PATH = "/v1/batches"
BATCH_PATH = re.compile(r"^/v1/batches/(?P<id>[^/]+)$")


def _invalid(status: int, message: str) -> web.Response:
    return _error_response(status, message, "invalid_request_error")


class FakeOpenAIBatch(BatchServer, FakeOpenAI):
    """``fail_item(custom_id, body)``; the other knobs and counters: :class:`BatchServer`."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.files: dict[str, dict[str, Any]] = {}
        self._uploads: list[bytes] = []

    # ------------------------------------------------------------------ what tests read
    @property
    def uploads(self) -> list[bytes]:
        with self._batch_lock:
            return list(self._uploads)

    @property
    def submitted(self) -> list[list[str]]:
        """The custom_ids of each batch created, in creation order (processed or not)."""
        with self._batch_lock:
            files = [
                self.files[self.batches[b]["input_file_id"]]["data"] for b in self._batch_order
            ]
        out = []
        for data in files:
            ids = []
            for raw in data.decode("utf-8", "replace").splitlines():
                try:
                    ids.append(json.loads(raw).get("custom_id"))
                except (ValueError, AttributeError):
                    ids.append(None)
            out.append(ids)
        return out

    def batch_status(self, batch_id: str) -> str:
        with self._batch_lock:
            return self.batches[batch_id]["status"]

    # ------------------------------------------------------------------ routing
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/")
        is_api = (
            path in (FILES_PATH, BATCHES_PATH) or FILE_CONTENT.match(path) or BATCH_PATH.match(path)
        )
        if not is_api:
            return await super()._handle(request)
        headers = lower_headers(request)
        self._record_call(ApiCall(request.method, path, headers))
        if not headers.get("authorization", "").startswith("Bearer "):
            return _invalid(401, "missing API key")
        if request.method == "POST" and path == FILES_PATH:
            return await self._batch_upload(request)
        if request.method == "GET" and (m := FILE_CONTENT.match(path)):
            return self._batch_content(m.group("id"))
        if request.method == "POST" and path == BATCHES_PATH:
            return await self._batch_create(request)
        if request.method == "GET" and (m := BATCH_PATH.match(path)):
            return self._batch_retrieve(m.group("id"))
        return _invalid(404, f"Unknown request URL: {request.method} {path}")

    # ------------------------------------------------------------------ files
    def _batch_store(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        obj = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        with self._batch_lock:
            self.files[file_id] = {**obj, "data": data}
        return obj

    async def _batch_upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        purpose = form.get("purpose")
        if upload is None or not hasattr(upload, "file"):
            return _invalid(400, "'file' is a required multipart field")
        if purpose != "batch":
            return _invalid(400, f"purpose must be 'batch' here, got {purpose!r}")
        data = upload.file.read()
        with self._batch_lock:
            self._uploads.append(data)
        return web.json_response(
            self._batch_store(data, upload.filename or "upload.jsonl", "batch")
        )

    def _batch_content(self, file_id: str) -> web.Response:
        with self._batch_lock:
            stored = self.files.get(file_id)
        if stored is None:
            return _invalid(404, f"No such File object: {file_id}")
        return web.Response(body=stored["data"], content_type="application/octet-stream")

    # ------------------------------------------------------------------ batches
    async def _batch_create(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _invalid(400, "body is not JSON")
        input_file_id = body.get("input_file_id")
        with self._batch_lock:
            stored = self.files.get(input_file_id)
        if stored is None:
            return _invalid(404, f"No such File object: {input_file_id}")
        if body.get("completion_window") != "24h" or body.get("endpoint") != "/v1/chat/completions":
            return _invalid(400, "endpoint must be /v1/chat/completions and completion_window 24h")
        batch_id = f"batch_{uuid.uuid4().hex[:24]}"
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body["endpoint"],
            "errors": None,
            "input_file_id": input_file_id,
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(time.time()),
            "in_progress_at": None,
            "expires_at": int(time.time()) + 86400,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        self._add_job(batch_id, batch)
        return web.json_response(batch)

    def _batch_retrieve(self, batch_id: str) -> web.Response:
        batch = self._poll(batch_id)
        if batch is None:
            return _invalid(404, f"No such batch: {batch_id}")
        return web.json_response(batch)

    def _job_finished(self, job: dict[str, Any]) -> bool:
        return job["status"] not in ("validating", "in_progress")

    def _job_running(self, job: dict[str, Any]) -> None:
        job["status"] = "in_progress"
        job["in_progress_at"] = job["in_progress_at"] or int(time.time())

    def _batch_validate(self, lines: list[Any]) -> str | None:
        seen: set[str] = set()
        for i, line in enumerate(lines, 1):
            if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
                return f"line {i}: custom_id is required"
            if line["custom_id"] in seen:
                return f"line {i}: duplicate custom_id {line['custom_id']}"
            seen.add(line["custom_id"])
            if line.get("method") != "POST" or line.get("url") != "/v1/chat/completions":
                return f"line {i}: method must be POST and url /v1/chat/completions"
            if not isinstance(line.get("body"), dict):
                return f"line {i}: body must be an object"
        return None

    def _job_process(self, batch_id: str, batch: dict[str, Any], outcome: str | None) -> None:
        now = int(time.time())
        with self._batch_lock:
            data = self.files[batch["input_file_id"]]["data"]
        try:
            lines = [json.loads(raw) for raw in data.decode("utf-8").splitlines() if raw.strip()]
            problem = self._batch_validate(lines)
        except ValueError as e:
            lines, problem = [], f"input file is not JSONL: {e}"
        if problem or outcome == "failed":
            message = problem or "Enqueued token limit reached (fake)"
            batch.update(
                status="failed",
                failed_at=now,
                errors={
                    "object": "list",
                    "data": [
                        {
                            "code": "invalid_request" if problem else "token_limit_exceeded",
                            "message": message,
                            "param": None,
                            "line": None,
                        }
                    ],
                },
            )
            return
        out, err = [], []
        for i, line in enumerate(lines):
            if outcome in ("expired", "cancelled") and i >= self.partial_items:
                code = "batch_expired" if outcome == "expired" else "batch_cancelled"
                err.append(
                    {
                        "id": f"batch_req_{uuid.uuid4().hex[:16]}",
                        "custom_id": line["custom_id"],
                        "response": None,
                        "error": {"code": code, "message": f"fake {code}"},
                    }
                )
                continue
            row = self._batch_answer(batch["id"], line)
            (out if row["response"] and row["response"]["status_code"] == 200 else err).append(row)
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}
        if out:
            batch["output_file_id"] = self._batch_store(
                _jsonl(out), "batch_output.jsonl", "batch_output"
            )["id"]
        if err:
            batch["error_file_id"] = self._batch_store(
                _jsonl(err), "batch_errors.jsonl", "batch_output"
            )["id"]
        state = outcome or "completed"
        batch.update(status=state, **{f"{state}_at": now})

    def _batch_answer(self, batch_id: str, line: dict[str, Any]) -> dict[str, Any]:
        body = line["body"]
        n = self._take_item({"custom_id": line["custom_id"], "body": body, "batch": batch_id})
        row: dict[str, Any] = {
            "id": f"batch_req_{uuid.uuid4().hex[:16]}",
            "custom_id": line["custom_id"],
            "response": None,
            "error": None,
        }
        code = self.fail_item(line["custom_id"], body) if self.fail_item else None
        if code:
            row["error"] = {"code": code, "message": f"fake item failure: {code}"}
            return row
        rendered = self._render(self._item_reply(body, n), body, n, "/v1/chat/completions")
        try:
            payload = json.loads(rendered.body)
        except (TypeError, ValueError):
            payload = {"error": {"message": "unreadable body"}}
        row["response"] = {
            "status_code": rendered.status,
            "request_id": f"req_{n}",
            "body": payload,
        }
        return row


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
