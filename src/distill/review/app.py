"""The review app: FastAPI, server-rendered pages, plain HTML forms (POST, then redirect), no JavaScript
framework (one small script adds keyboard shortcuts).

Every save is committed to the store before the response, then exported (``reviews.jsonl`` and
``metrics/review.json``). A correction is validated against the task's JSON schema first: on failure
the page comes back with the validator's message and what was typed, and nothing is saved.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from distill.errors import DistillError
from distill.review import export as exporting
from distill.review.auth import guard
from distill.review.dataset import FLAGS, Dataset, Item, criteria
from distill.review.forms import FIELD_PREFIX, form_fields, parse_form, validation_error
from distill.review.render import render, static_text
from distill.review.store import Review, ReviewStore

log = logging.getLogger("distill.review")

STATUSES = {"": "any", "unreviewed": "needs review", "reviewed": "reviewed", "correct": "correct",
            "incorrect": "incorrect", "corrected": "corrected"}


class ReviewState:
    """The dataset, the store and the export, shared by the app's worker threads."""

    def __init__(self, params_path: str | Path, db_path: str | Path, reviewer: str = "",
                 metrics_path: str | Path = exporting.METRICS_PATH, export_on_save: bool = True):
        self.dataset = Dataset(params_path)
        self.store = ReviewStore(db_path)
        self.reviewer = reviewer
        self.metrics_path = Path(metrics_path)
        self.export_on_save = export_on_save
        self._export_lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._stamp = self._files_stamp()
        exporting.import_file(self.store, self.dataset.reviews_path)  # a teammate's committed reviews

    def _files_stamp(self) -> tuple:
        ds = self.dataset
        paths = [ds.label_dir / "labels.jsonl", ds.label_dir / "invalid.jsonl", ds.eval_dir / "predictions.jsonl"]
        return tuple(p.stat().st_mtime_ns if p.is_file() else 0 for p in paths)

    def fresh(self) -> Dataset:
        """The dataset, reloaded when the pipeline rewrote its files (a relabelled record needs review again)."""
        with self._reload_lock:
            stamp = self._files_stamp()
            if stamp != self._stamp:
                self.dataset.reload()
                self._stamp = stamp
        return self.dataset

    def export(self) -> dict[str, Any]:
        with self._export_lock:
            return exporting.export(self.dataset, self.store, metrics_path=self.metrics_path)

    def summary(self) -> dict[str, Any]:
        return exporting.review_stats(self.dataset, self.store)

    def order(self) -> list[str]:
        """Sampled queue first, then every other record in file order."""
        queued = [rid for rid, _ in self.store.queue() if rid in self.dataset.items]
        rest = [rid for rid in self.dataset.items if rid not in set(queued)]
        return queued + rest

    def status(self, item: Item, review: Review | None) -> str:
        if item.row is None:
            return "no valid answer"
        if review is None or review.is_correct is None:
            return "needs review"
        if review.corrected is not None:
            return "corrected"
        return "correct" if review.is_correct else "incorrect"


def create_app(state: ReviewState, token: str | None = None, allowed_hosts: set[str] | None = None) -> FastAPI:
    app = FastAPI(title="distill review", docs_url=None, redoc_url=None, openapi_url=None)
    app.middleware("http")(guard(token, allowed_hosts))

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        types = {"review.css": "text/css", "review.js": "text/javascript"}
        if name not in types:
            return PlainTextResponse("not found", status_code=404)
        return Response(static_text(name), media_type=types[name])

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/")
    def home() -> RedirectResponse:
        return RedirectResponse("/records", status_code=303)

    @app.get("/records", response_class=HTMLResponse)
    def records(category: str = "", oracle: str = "", flag: str = "", status: str = "", q: str = "",
                queue: str = "") -> HTMLResponse:
        ds = state.fresh()
        reviews = {(r.record_id, r.answer_hash): r for r in state.store.all()}
        queued = {rid for rid, _ in state.store.queue()}
        rows = []
        for rid in state.order():
            item = ds.items[rid]
            review = reviews.get((item.id, item.key)) if item.row else None
            st = state.status(item, review)
            cat = ds.row_category(item.row)
            text = (item.title + "\n" + item.user_text).lower()
            if (category and cat != category or oracle and item.oracle != oracle or flag and flag not in item.flags
                    or queue and rid not in queued or q and q.lower() not in text or not _status_matches(status, st)):
                continue
            rows.append({"id": rid, "title": item.title, "category": cat, "oracle": item.oracle,
                         "attempts": item.attempts, "flags": sorted(item.flags), "status": st})
        strategies = {s for _, s in state.store.queue()}
        return HTMLResponse(render(
            "records.html", rows=rows, categories=ds.categories(), oracles=ds.oracles(), flags=FLAGS,
            statuses=STATUSES, queue_strategy=", ".join(sorted(strategies)), summary=state.summary(),
            f={"category": category, "oracle": oracle, "flag": flag, "status": status, "q": q, "queue": queue}))

    def page(rid: str, *, error: str | None = None, typed: dict[str, Any] | None = None, saved: bool = False,
             draft: Review | None = None, status_code: int = 200) -> HTMLResponse:
        """The record page; ``typed`` and ``draft`` bring back what a refused save held."""
        ds = state.dataset
        item = ds.items.get(rid)
        if item is None:
            return HTMLResponse(render("base.html"), status_code=404)
        review = state.store.get(item.id, item.key) if item.row else None
        shown = draft or review or Review(item.id, item.key or "")
        order = state.order()
        at = order.index(rid)
        answer = typed if typed is not None else (review.corrected if review and review.corrected else item.label)
        others = [{"who": f"{'gold' if o is item.gold else 'oracle'} {o.get('oracle', '')}",
                   "category": ds.row_category(o), "agrees": not ds.disagree(item.label, o["label"])}
                  for o in ([item.gold] if item.gold else []) + item.others] if item.row else []
        predicted = ds.student_category(item)
        if predicted is not None:
            others.append({"who": "student", "category": predicted, "agrees": predicted == ds.row_category(item.row)})
        proposal = state.store.get_repair(item.id, item.key) if item.row else None
        return HTMLResponse(render(
            "record.html", item=item, review=review, shown=shown, category=ds.row_category(item.row), flags=FLAGS,
            answer_json=json.dumps(item.label, indent=2, ensure_ascii=False) if item.row else "",
            fields=form_fields(ds.schema, answer), criteria=criteria(ds.schema),
            others=others, error=error, saved=saved,
            proposal=proposal, proposal_json=json.dumps(proposal["proposed"], indent=2, ensure_ascii=False)
            if proposal else "", history=[h for h in state.store.history(item.id) if h.answer_hash != item.key],
            prev_id=order[at - 1] if at > 0 else None, next_id=order[at + 1] if at + 1 < len(order) else None,
            summary=state.summary()), status_code=status_code)

    @app.post("/records/{rid:path}/review")
    async def save_review(rid: str, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        ds = state.fresh()
        item = ds.items.get(rid)
        if item is None or item.row is None:
            return PlainTextResponse("no such record with an answer", status_code=404)
        if form.get("answer_hash") != item.key:
            return page(rid, error="This record was relabelled since the page was loaded; review its new answer.",
                        status_code=409)
        # no answer fields at all (a client posting only the verdict): the answer is not being corrected
        answer = parse_form(ds.schema, form) if any(k.startswith(FIELD_PREFIX) for k in form) else item.label
        verdict = {"true": True, "false": False}.get(form.get("is_correct", ""))
        names = criteria(ds.schema)
        rated = {n: form[f"crit_{n}"] for n in names if form.get(f"crit_{n}") in ("ok", "wrong")}
        queued = dict(state.store.queue())
        review = Review(record_id=item.id, answer_hash=item.key, is_correct=verdict, criteria=rated,
                        note=form.get("note", "").strip(), reviewer=state.reviewer, oracle=item.oracle,
                        source=queued.get(item.id, "browse"))
        if answer != item.label:
            problem = validation_error(ds.schema, answer)
            if problem:
                return page(rid, error=f"Not saved: the corrected answer does not satisfy the schema: {problem}",
                            typed=answer, draft=review, status_code=422)
            review.corrected = answer
            review.is_correct = False  # a correction says the oracle's answer was wrong
        await run_in_threadpool(_commit, review)
        nxt = _next_id(rid) if form.get("then") == "next" else None
        target = f"/records/{quote(nxt or rid, safe='')}" + ("" if nxt else "?saved=1")
        return RedirectResponse(target, status_code=303)

    def _commit(review: Review) -> None:
        state.store.save(review)  # committed: the review survives a crash from here on
        log.info("review saved: %s (%s)", review.record_id,
                 {True: "correct", False: "incorrect", None: "unreviewed"}[review.is_correct])
        if state.export_on_save:
            try:
                state.export()
            except OSError as e:  # the review is stored; the next save or `distill review export` writes it
                log.warning("review stored, but writing the export failed: %s", e)

    def _next_id(rid: str) -> str | None:
        order = state.order()
        at = order.index(rid)
        return order[at + 1] if at + 1 < len(order) else None

    @app.post("/records/{rid:path}/repair")
    async def ask_repair(rid: str, request: Request) -> Response:
        from distill.review.repair import repair

        form = await request.form()
        ds = state.fresh()
        item = ds.items.get(rid)
        if item is None or item.row is None or form.get("answer_hash") != item.key:
            return page(rid, error="This record has no answer to repair (or was relabelled).", status_code=409)
        instruction = str(form.get("instruction", ""))
        try:
            result = await run_in_threadpool(repair, ds.params_path, ds.spec, item.row, instruction)
        except DistillError as e:
            return page(rid, error=f"Repair failed: {e}", status_code=502)
        state.store.put_repair(item.id, item.key, instruction.strip(), result.answer, result.cost_usd)
        return RedirectResponse(f"/records/{quote(rid, safe='')}", status_code=303)

    @app.post("/records/{rid:path}/repair/{action}")
    async def settle_repair(rid: str, action: str, request: Request) -> Response:
        form = await request.form()
        ds = state.fresh()
        item = ds.items.get(rid)
        proposal = state.store.get_repair(rid, item.key) if item is not None and item.row else None
        if proposal is None or form.get("answer_hash") != item.key or action not in ("accept", "discard"):
            return page(rid, error="No repair proposal for this answer.", status_code=409)
        if action == "accept":
            problem = validation_error(ds.schema, proposal["proposed"])
            if problem:  # validated when it came, but the schema may have changed since
                return page(rid, error=f"Not saved: {problem}", status_code=422)
            old = state.store.get(item.id, item.key)
            queued = dict(state.store.queue())
            note = ((old.note + "\n") if old and old.note else "") + f"repaired: {proposal['instruction']}"
            await run_in_threadpool(_commit, Review(
                record_id=item.id, answer_hash=item.key, is_correct=False, criteria=old.criteria if old else {},
                corrected=proposal["proposed"], note=note, reviewer=state.reviewer, oracle=item.oracle,
                source=queued.get(item.id, "browse")))
        state.store.drop_repair(item.id, item.key)
        return RedirectResponse(f"/records/{quote(rid, safe='')}?saved=1", status_code=303)

    @app.get("/records/{rid:path}", response_class=HTMLResponse)
    def record(rid: str, saved: str = "") -> HTMLResponse:
        state.fresh()
        return page(rid, saved=bool(saved))

    @app.post("/export")
    def export_now() -> RedirectResponse:
        state.export()
        return RedirectResponse("/records", status_code=303)

    @app.get("/api/reviews")
    def api_reviews() -> list[dict[str, Any]]:
        return [r.to_json() for r in state.store.all()]

    @app.get("/analytics", response_class=HTMLResponse)
    def analytics() -> HTMLResponse:
        from distill.analytics import render_html

        return HTMLResponse(render_html(state.fresh(), state.store, standalone=False))

    return app


def _status_matches(wanted: str, status: str) -> bool:
    if not wanted:
        return True
    if wanted == "reviewed":
        return status in ("correct", "incorrect", "corrected")
    if wanted == "unreviewed":
        return status == "needs review"
    if wanted == "incorrect":
        return status in ("incorrect", "corrected")
    return status == wanted
