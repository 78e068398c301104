"""What the fake batch servers share: their knobs, the book of jobs and items, and polling.

:class:`BatchServer` goes before a provider's fake in the bases
(``class FakeOpenAIBatch(BatchServer, FakeOpenAI)``) and adds:

- the knobs ``polls_to_complete`` (a job reports running for that many polls; the next poll
  processes it, once), ``item_faults`` (the 1-based item number across all jobs -> a reply that
  overrides the responder), ``fail_item`` (a per-provider callback: a line that fails without a
  response), ``job_outcomes`` (the 1-based job number -> ``"failed"``, ``"expired"`` or
  ``"cancelled"``) and ``partial_items`` (how many lines an expired or cancelled job answered);
- what it saw: ``submissions``, ``polls``, ``items``, ``batch_requests`` and ``api_calls``.

A subclass routes the batch API's requests and defines what a job looks like:
:meth:`_job_finished`, :meth:`_job_running` and :meth:`_job_process`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.fakes._server import BaseReply, FakeServer


@dataclass(frozen=True)
class ApiCall:
    """One request to the batch API (files, jobs) as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any = None

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


class BatchServer(FakeServer):
    def __init__(
        self,
        responder: Callable[[dict[str, Any]], Any] | None = None,
        *,
        polls_to_complete: int = 1,
        item_faults: dict[int, BaseReply] | None = None,
        fail_item: Callable[[Any, dict[str, Any]], str | None] | None = None,
        job_outcomes: dict[int, str] | None = None,
        partial_items: int = 0,
        **kw: Any,
    ):
        super().__init__(responder, **kw)
        self.polls_to_complete = polls_to_complete
        self.item_faults: dict[int, BaseReply] = dict(item_faults or {})
        self.fail_item = fail_item
        self.job_outcomes: dict[int, str] = dict(job_outcomes or {})
        self.partial_items = partial_items
        self._batch_lock = threading.Lock()
        self.batches: dict[str, dict[str, Any]] = {}
        self._polls: dict[str, int] = {}
        self._batch_order: list[str] = []
        self._items: list[dict[str, Any]] = []
        self._api_calls: list[ApiCall] = []

    # ------------------------------------------------------------------ what tests read
    @property
    def submissions(self) -> int:
        with self._batch_lock:
            return len(self._batch_order)

    @property
    def polls(self) -> int:
        with self._batch_lock:
            return sum(self._polls.values())

    @property
    def items(self) -> int:
        with self._batch_lock:
            return len(self._items)

    @property
    def batch_requests(self) -> list[dict[str, Any]]:
        """Every processed batch item, with the id of its job under ``"batch"``."""
        with self._batch_lock:
            return list(self._items)

    @property
    def api_calls(self) -> list[ApiCall]:
        with self._batch_lock:
            return list(self._api_calls)

    # ------------------------------------------------------------------ what a subclass defines
    def _job_finished(self, job: dict[str, Any]) -> bool:
        raise NotImplementedError

    def _job_running(self, job: dict[str, Any]) -> None:
        """Mark ``job`` as running (a poll before it completes)."""
        raise NotImplementedError

    def _job_process(self, job_id: str, job: dict[str, Any], outcome: str | None) -> None:
        """Answer ``job``'s items and put it in its final state (``outcome``: see the knobs)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the book
    def _record_call(self, call: ApiCall) -> None:
        with self._batch_lock:
            self._api_calls.append(call)

    def _add_job(self, job_id: str, job: dict[str, Any]) -> None:
        with self._batch_lock:
            self.batches[job_id] = job
            self._polls[job_id] = 0
            self._batch_order.append(job_id)

    def _poll(self, job_id: str) -> dict[str, Any] | None:
        """One poll of a job: running for the first ``polls_to_complete`` polls, then processed
        (once); ``None`` for an unknown job."""
        with self._batch_lock:
            job = self.batches.get(job_id)
            if job is None:
                return None
            self._polls[job_id] += 1
            polls = self._polls[job_id]
            number = self._batch_order.index(job_id) + 1
        if not self._job_finished(job):
            if polls <= self.polls_to_complete:
                self._job_running(job)
            else:
                self._job_process(job_id, job, self.job_outcomes.get(number))
        return job

    def _take_item(self, item: dict[str, Any]) -> int:
        """Book one processed item; returns its 1-based number across all jobs."""
        with self._batch_lock:
            self._items.append(item)
            return len(self._items)

    def _item_reply(self, body: dict[str, Any], n: int) -> Any:
        """Item ``n``'s reply: its item fault, else the responder's (see ``_reply_for``)."""
        return self._reply_for(body, self.item_faults.get(n))
